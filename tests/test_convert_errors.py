"""Invalid input is refused with a message naming the file, the object and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import TESTDATA
from tests.helpers import run_cli

CASES: dict[str, list[str]] = yaml.safe_load((TESTDATA / "invalid-cases.yaml").read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_invalid_input_is_refused_clearly(name: str) -> None:
    result = run_cli("convert", "-f", str(TESTDATA / "convert" / name / "input.yaml"))
    assert result.exit_code == 1
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    for fragment in CASES[name]:
        assert fragment in result.stderr, f"{fragment!r} missing from: {result.stderr}"


def test_every_invalid_scenario_has_a_case() -> None:
    folders = {p.name for p in (TESTDATA / "convert").glob("invalid-*")}
    assert folders == set(CASES)


def test_nothing_metallb_related_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {}\n"
    )
    result = run_cli("convert", "-f", str(tmp_path))
    assert result.exit_code == 1
    assert "nothing MetalLB-related" in result.stderr


def test_missing_path_is_named(tmp_path: Path) -> None:
    result = run_cli("convert", "-f", str(tmp_path / "nope.yaml"))
    assert result.exit_code == 1
    assert "nope.yaml" in result.stderr and "no such file" in result.stderr


def test_debug_shows_the_traceback() -> None:
    result = run_cli("--debug", "convert", "-f",
                     str(TESTDATA / "convert" / "invalid-bare-ip" / "input.yaml"))
    assert result.exit_code == 1
    assert "Traceback" in result.stderr


def test_unsupported_cilium_version_is_refused() -> None:
    case = TESTDATA / "convert" / "single-pool" / "input.yaml"
    result = run_cli("convert", "-f", str(case), "--cilium-version", "1.14")
    assert result.exit_code == 1
    assert "--cilium-version" in result.stderr and "1.15" in result.stderr
