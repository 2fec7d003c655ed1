"""Golden tests: every scenario under testdata/convert gives its reviewed output.

A scenario that translates has ``expected.yaml`` (stdout) and ``findings.yaml`` (exit code and
findings); an invalid one (``invalid-*``) has ``error.txt``, the one-line error on stderr, with
the repository's path written as ``<repo>``. Set MIGRATE_UPDATE_GOLDEN=1 to rewrite the
expected files, then review the diff by eye.
"""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pytest
import yaml

from tests.conftest import TESTDATA
from tests.helpers import run_cli

SCENARIOS = sorted(p for p in (TESTDATA / "convert").iterdir() if (p / "input.yaml").exists())
UPDATE = os.environ.get("MIGRATE_UPDATE_GOLDEN") == "1"


def _args(case: Path) -> list[str]:
    extra = case / "args"
    return shlex.split(extra.read_text()) if extra.exists() else []


@pytest.mark.parametrize("case", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_convert_matches_golden(case: Path) -> None:
    yaml_run = run_cli("convert", "-f", str(case / "input.yaml"), *_args(case))
    if case.name.startswith("invalid-"):
        assert yaml_run.exit_code == 1
        assert yaml_run.stdout == ""
        error = yaml_run.stderr.replace(str(TESTDATA.parent), "<repo>")
        if UPDATE:
            (case / "error.txt").write_text(error)
        assert error == (case / "error.txt").read_text()
        return
    json_run = run_cli("convert", "-f", str(case / "input.yaml"), "-o", "json", *_args(case))
    findings = json.loads(json_run.stdout)["findings"]
    for finding in findings:
        finding.pop("source", None)
    report = {"exit_code": yaml_run.exit_code, "findings": findings}
    expected_out = case / "expected.yaml"
    expected_report = case / "findings.yaml"
    if UPDATE:
        expected_out.write_text(yaml_run.stdout)
        expected_report.write_text(yaml.safe_dump(report, sort_keys=False, width=100))
    assert yaml_run.stdout == expected_out.read_text()
    assert report == yaml.safe_load(expected_report.read_text())
    assert json_run.exit_code == yaml_run.exit_code
    assert "Traceback" not in yaml_run.stderr


def test_there_are_enough_scenarios() -> None:
    assert len([c for c in SCENARIOS if not c.name.startswith("invalid-")]) >= 12
