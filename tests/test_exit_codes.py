"""Exit codes: each outcome a script branches on has its own code, documented in --help and
in the README's table."""

from __future__ import annotations

import re

from migrate import entry
from tests.conftest import REPO, TESTDATA
from tests.helpers import run_cli

GUIDE = str(TESTDATA / "clusters" / "guide-single-pool")


def test_changes_pending_is_not_a_usage_error() -> None:
    pending = run_cli("plan", "--from", GUIDE, "--detailed-exitcode", "-o", "json")
    typo = run_cli("plan", "--from", GUIDE, "--detailed-exitcod")
    assert pending.exit_code == entry.EXIT_CHANGES_PENDING == 5, pending.stderr
    assert typo.exit_code == entry.EXIT_USAGE == 2
    assert "No such option" in typo.stderr


def test_without_detailed_exitcode_a_plan_with_changes_succeeds() -> None:
    assert run_cli("plan", "--from", GUIDE, "-o", "json").exit_code == entry.EXIT_OK


def _codes() -> dict[str, int]:
    return {name: value for name, value in vars(entry).items()
            if name.startswith("EXIT_") and isinstance(value, int)}


def test_every_exit_code_is_distinct() -> None:
    codes = _codes()
    assert len(set(codes.values())) == len(codes), codes


def test_the_readme_table_and_help_give_every_code_once() -> None:
    readme = (REPO / "README.md").read_text()
    table = readme.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    documented = [int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.M)]
    assert sorted(documented) == sorted(_codes().values())
    assert re.search(r"^\| 5 \| .*changes are pending", table, flags=re.M)
    shown = " ".join(run_cli("--help").stdout.split())
    for code in _codes().values():
        assert f" {code} " in shown
    assert "5 changes pending (plan --detailed-exitcode)" in shown
    plan_help = " ".join(run_cli("plan", "--help").stdout.split())
    assert "5 when changes are pending" in plan_help
