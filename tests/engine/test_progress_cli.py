"""apply and rollback as a script sees them (stderr not a terminal): each step a line, each
wait plain lines naming what is awaited with its count and time; --quiet only the outcome."""

from __future__ import annotations

import re
from pathlib import Path

from migrate.plan.api import make_plan, save_plan
from migrate.sources.live import read_live
from tests.engine.conftest import ClusterFactory
from tests.helpers import run_cli


def test_apply_and_rollback_report_their_waits_in_plain_lines(
        cluster_factory: ClusterFactory, tmp_path: Path) -> None:
    cluster = cluster_factory("guide-single-pool")
    plan_file = str(tmp_path / "plan.yaml")
    save_plan(make_plan(read_live(cluster.kube)), plan_file)
    target = ("--plan", plan_file, "--yes", "--kubeconfig", str(cluster.kubeconfig))

    pinned = run_cli("apply", "--stage", "pin", "--quiet", *target)
    assert pinned.exit_code == 0, pinned.stderr
    assert pinned.stderr == ""
    assert pinned.stdout.startswith("Stage pin applied")

    frozen = run_cli("apply", "--stage", "freeze-metallb", *target)
    assert frozen.exit_code == 0, frozen.stderr
    lines = frozen.stderr.splitlines()
    assert lines[0] == "Stage 2: freeze-metallb"
    assert any(line.startswith("  scale Deployment metallb-system/") for line in lines)
    waits = [line for line in lines if line.startswith("  wait: ")]
    assert waits, frozen.stderr
    assert re.fullmatch(r"  wait: MetalLB.s controller has no pods: [01]/1", waits[0])
    assert re.fullmatch(r"  wait: .+: 1/1, done in \d+\.\ds", waits[-1])
    assert "\x1b" not in frozen.stderr

    quiet = run_cli("rollback", "--quiet", *target)
    assert quiet.exit_code == 0, quiet.stderr
    assert quiet.stderr == ""
    assert quiet.stdout == "Rolled back freeze-metallb, pin; every Service kept its IPs.\n"
