"""Golden errors for broken plan files and kubeconfigs (testdata/errors, see its README): each is
refused with the reviewed lines, exit 1, before anything reaches a cluster."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrate.plan.api import make_plan, save_plan
from migrate.plan.model import content_digest
from migrate.sources.snapshot import read_snapshot
from tests.conftest import TESTDATA
from tests.helpers import run_cli

CASES = sorted(p for p in (TESTDATA / "errors").iterdir() if (p / "case.yaml").exists())
UPDATE = os.environ.get("MIGRATE_UPDATE_GOLDEN") == "1"


def _broken_plan(case: dict[str, Any], path: Path) -> None:
    save_plan(make_plan(read_snapshot([TESTDATA / "clusters" / "guide-single-pool"])), path)
    text = path.read_text()
    if "truncate" in case:
        path.write_text(text[:int(len(text) * case["truncate"])])
    elif "replace" in case:
        old, new = case["replace"]
        assert old in text, f"{old!r} is not in the plan"
        path.write_text(text.replace(old, new, 1))
    else:
        data = yaml.safe_load(text)
        for change in case.get("set", []):
            target = data
            for part in change["path"][:-1]:
                target = target[part]
            target[change["path"][-1]] = change["value"]
        if "drop" in case:
            target = data
            for part in case["drop"][:-1]:
                target = target[part]
            del target[case["drop"][-1]]
        if case.get("resign"):  # digest made again: only the structure can stop it
            data["digest"] = content_digest({k: v for k, v in data.items() if k != "digest"})
        path.write_text(yaml.safe_dump(data, sort_keys=False))


@pytest.mark.parametrize("folder", CASES, ids=[p.name for p in CASES])
def test_broken_input_is_refused_with_the_golden_error(folder: Path, tmp_path: Path) -> None:
    case = yaml.safe_load((folder / "case.yaml").read_text())
    plan = tmp_path / "plan.yaml"
    if any("{plan}" in arg for arg in case["args"]):
        _broken_plan(case, plan)
    args = [arg.replace("{plan}", str(plan)).replace("{case}", str(folder))
            for arg in case["args"]]
    if "--kubeconfig" not in args:  # nothing may need a cluster: point at none
        args += ["--kubeconfig", str(tmp_path / "no-cluster")]
    result = run_cli(*args)
    assert result.exit_code == 1
    assert result.stdout == ""
    error = result.stderr.replace(str(plan), "<plan>").replace(str(folder), "<case>")
    if UPDATE:
        (folder / "error.txt").write_text(error)
    assert error == (folder / "error.txt").read_text()
