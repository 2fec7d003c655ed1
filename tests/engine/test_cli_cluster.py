"""The commands as an operator runs them, as processes, against `python -m migrate.lab serve`."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TESTDATA

GUIDE = TESTDATA / "clusters" / "guide-single-pool"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "migrate.cli", *args], capture_output=True,
                          text=True, check=False, stdin=subprocess.DEVNULL, timeout=120)


@pytest.fixture
def served(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A lab serving the guide's cluster (models running, instant timing: the engine's waits
    predate the asynchronous lab; another snapshot through indirect parametrization); yields
    its kubeconfig path."""
    kubeconfig = tmp_path / "kubeconfig"
    snapshot = getattr(request, "param", GUIDE)
    process = subprocess.Popen(
        [sys.executable, "-m", "migrate.lab", "serve", "--snapshot", str(snapshot), "--port",
         "0", "--kubeconfig-out", str(kubeconfig), "--timing", "instant"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        assert "serving" in process.stdout.readline()
        yield str(kubeconfig)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_plan_apply_status_rollback(served: str, tmp_path: Path) -> None:
    plan_file = str(tmp_path / "plan.yaml")
    shown = run("plan", "--kubeconfig", served, "--out", plan_file)
    assert shown.returncode == 0, shown.stderr
    for name in ("Stage 1: pin", "Stage 3: ipam-handover", "Stage 5: decommission"):
        assert name in shown.stdout
    assert '+ metadata.annotations["lbipam.cilium.io/ips"]: 192.168.105.128' in shown.stdout
    assert "~ spec.replicas: 1 → 0" in shown.stdout

    detailed = run("plan", "--kubeconfig", served, "--detailed-exitcode", "-o", "json")
    assert detailed.returncode == 5  # changes pending
    data = json.loads(detailed.stdout)
    assert [s["name"] for s in data["stages"]] == [
        "preflight", "pin", "freeze-metallb", "ipam-handover", "l2-cutover", "decommission"]
    assert "findings" in data

    unconfirmed = run("apply", "--plan", plan_file, "--stage", "pin", "--kubeconfig", served)
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr

    early = run("apply", "--plan", plan_file, "--stage", "3", "--yes", "--kubeconfig", served)
    assert early.returncode == 3 and "earlier stage" in early.stderr

    dry = run("apply", "--plan", plan_file, "--stage", "pin", "--dry-run", "--kubeconfig",
              served)
    assert dry.returncode == 0 and "Dry run" in dry.stdout

    applied = run("apply", "--plan", plan_file, "--stage", "pin", "--yes", "--kubeconfig",
                  served)
    assert applied.returncode == 0, applied.stderr
    assert "applied" in applied.stdout and "kept its IPs" in applied.stdout
    again = run("apply", "--plan", plan_file, "--stage", "pin", "--yes", "--kubeconfig", served)
    assert again.returncode == 0 and "already applied" in again.stdout

    status = run("status", "--kubeconfig", served)
    assert status.returncode == 0
    assert "pin" in status.stdout and "applied" in status.stdout and "Lock: free" in status.stdout

    preview = run("rollback", "--plan", plan_file, "--dry-run", "--kubeconfig", served)
    assert preview.returncode == 0 and "would undo pin" in preview.stdout
    undone = run("rollback", "--plan", plan_file, "--yes", "--kubeconfig", served)
    assert undone.returncode == 0, undone.stderr
    assert "Rolled back pin" in undone.stdout
    assert "No migration recorded" in run("status", "--kubeconfig", served).stdout


def test_plan_from_files_with_an_error_finding_is_blocked(tmp_path: Path) -> None:
    result = run("plan", "--from", str(TESTDATA / "convert" / "lb-class" / "input.yaml"))
    assert result.returncode == 3
    assert "apply will refuse it" in result.stdout


def test_plan_from_the_bundled_example(tmp_path: Path) -> None:
    result = run("plan", "--from", str(GUIDE), "--out", str(tmp_path / "p.json"))
    assert result.returncode == 0, result.stderr
    saved = json.loads((tmp_path / "p.json").read_text())
    assert saved["kind"] == "MigrationPlan" and saved["expectedIPs"]["shop/web"] == [
        "192.168.105.128"]


@pytest.mark.parametrize("served", [TESTDATA / "clusters" / "several-pools-shared"],
                         indirect=True)
def test_a_canary_as_an_operator_runs_it(served: str, tmp_path: Path) -> None:
    """`migrate` (the executable's module) end to end: plan --canary, the stages up to the
    canary, status, rollback of the canary alone, then the rest; verify at each end."""
    def migrate(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "migrate", *args, "--kubeconfig", served],
                              capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL, timeout=120)

    plan_file = str(tmp_path / "plan.yaml")
    shown = migrate("plan", "--canary", "dns", "--out", plan_file)
    assert shown.returncode == 0, shown.stderr
    assert "Stage 4: l2-canary" in shown.stdout and "Stage 6: decommission" in shown.stdout
    for stage in ("pin", "freeze-metallb", "ipam-handover", "l2-canary"):
        applied = migrate("apply", "--plan", plan_file, "--stage", stage, "--yes")
        assert applied.returncode == 0, (stage, applied.stderr)
    early = migrate("apply", "--plan", plan_file, "--stage", "decommission", "--yes")
    assert early.returncode == 3 and "earlier stage" in early.stderr
    status = migrate("status")
    assert "l2-canary" in status.stdout, status.stdout
    checked = migrate("verify", "--plan", plan_file, "-o", "json")
    assert checked.returncode == 0, checked.stdout
    assert {c["name"] for c in json.loads(checked.stdout)["api"]} >= {
        "lease", "metallb-advertisements", "one-announcer"}

    undone = migrate("rollback", "--to", "ipam-handover", "--yes")
    assert undone.returncode == 0, undone.stderr
    assert "Rolled back l2-canary" in undone.stdout
    for stage in ("l2-canary", "l2-cutover", "decommission"):
        applied = migrate("apply", "--plan", plan_file, "--stage", stage, "--yes")
        assert applied.returncode == 0, (stage, applied.stderr)
    finished = migrate("verify", "--plan", plan_file, "-o", "json")
    assert finished.returncode == 0, finished.stdout
    checks = json.loads(finished.stdout)["api"]
    assert any(c["name"] == "one-holder-per-ip" and c["status"] == "ok" for c in checks)
