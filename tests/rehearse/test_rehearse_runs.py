"""``migrate rehearse`` on a twin: safe on every bundled cluster, and on clusters that are not
safe it names what fails first, with the object and the remedy (virtual time: no wall time is
spent in the engine's waits)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import migrate.rehearse
from migrate.plan import build
from migrate.plan.api import make_plan
from migrate.plan.model import Stage
from migrate.rehearse import RehearseOptions, rehearse
from migrate.rehearse.model import RehearsalReport
from migrate.sources.snapshot import read_snapshot
from tests.helpers import run_cli
from tests.rehearse.conftest import CLUSTERS, SCENARIOS, Altered, Progress


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_bundled_cluster_rehearses_safe(scenario: str) -> None:
    progress = Progress()
    report = rehearse(RehearseOptions(), progress, from_paths=[str(CLUSTERS / scenario)])
    assert report.verdict.status == "safe", report.verdict.to_json()
    assert not report.fidelity
    phases = [(row.phase, row.stage) for row in report.stages]
    names = [row.stage for row in report.stages if row.phase == "apply"]
    planned = [s.name for s in make_plan(read_snapshot([str(CLUSTERS / scenario)])).stages]
    assert names[:-1] == planned and names[-1] == "verify"
    assert {"pin", "freeze-metallb", "ipam-handover", "l2-cutover", "decommission"} <= set(names)
    assert ("rollback", "rollback") in phases and phases[-1] == ("re-apply", "verify")
    for row in report.stages:
        assert row.outcome in ("applied", "passed", "rolled back"), row.to_json()
        assert "failed" not in row.checks.values(), row.to_json()
    rollback = next(row for row in report.stages if row.phase == "rollback")
    assert rollback.checks["I3"] == "ok"
    for row in report.stages:
        if row.phase in ("apply", "re-apply") and row.stage not in ("preflight", "verify"):
            assert row.checks["I4"] == "ok" and row.requests > 0, row.to_json()
    # Every IP MetalLB announced is handed over to Cilium, with one announcer throughout.
    assert report.cutover
    for item in report.cutover:
        assert item.answers[0].metallb and not item.answers[0].cilium, item.to_json()
        assert item.answers[-1].cilium and not item.answers[-1].metallb, item.to_json()
        assert item.silence is not None and not item.two_announcers
    # Progress over stages and waits.
    cutover = planned.index("l2-cutover")
    assert any(f"apply: stage {cutover} (l2-cutover)" in e for e in progress.events)
    assert any("has a lease held by an eligible node" in d for d, _, _ in progress.progress_seen)


def test_the_canary_is_rehearsed_as_planned() -> None:
    report = rehearse(RehearseOptions(canary="dns"), Progress(),
                      from_paths=[str(CLUSTERS / "several-pools-shared")])
    assert report.verdict.status == "safe", report.verdict.to_json()
    assert [r.stage for r in report.stages if r.phase == "apply"][4:6] == [
        "l2-canary", "l2-cutover"]
    shared = next(item for item in report.cutover if len(item.services) == 2)
    assert shared.silence is not None and shared.doubled == 0.0


def _make_before_break(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test switch that reverts the engine's break before make at l2-cutover: Cilium's
    policies are created before MetalLB's L2Advertisements go."""
    original = build._Builder.cutover

    def reordered(self: build._Builder) -> Stage:
        stage = original(self)
        creates = [a for a in stage.actions if a.verb == "create"]
        stage.actions = creates + [a for a in stage.actions if a.verb != "create"]
        return stage

    monkeypatch.setattr(build._Builder, "cutover", reordered)


def test_make_before_break_is_two_announcers_in_the_twin(monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    _make_before_break(monkeypatch)
    result = run_cli("rehearse", "--from", str(CLUSTERS / "guide-single-pool"), "-o", "json")
    assert result.exit_code == 4, result.stderr
    document = json.loads(result.stdout)
    first = document["verdict"]["first"]
    assert document["verdict"]["status"] == "unsafe"
    assert first["check"] == "I2" and first["where"] == "apply l2-cutover"
    assert first["object"].startswith("IP 192.168.105.")
    assert "MetalLB on" in first["detail"] and "and Cilium on" in first["detail"]
    assert "break before make" in first["remedy"]
    cutover = next(r for r in document["stages"] if r["stage"] == "l2-cutover")
    assert cutover["invariants"]["I2"] == "failed"
    assert any(ip["twoAnnouncers"] and any(a["metallb"] and a["cilium"] for a in ip["answers"])
               for ip in document["cutover"])
    assert ("Error: not safe: I2 (one announcer) failed in the twin at apply l2-cutover"
            in result.stderr)


def test_a_failure_in_a_twin_that_fell_behind_its_clock_is_inconclusive(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same failure, seen by a twin whose models ran behind the real clock (as at a small
    ``--time-scale`` with many Services): exit 4 still, but the verdict says its lag may be the
    cause, and what to do."""
    _make_before_break(monkeypatch)

    def fell_behind(report: RehearsalReport, twin: object, options: object) -> None:
        report.behind = 3.2
        report.fidelity.append("the twin's models ran up to 3.20s behind the real clock")

    monkeypatch.setattr(migrate.rehearse, "check_kept_up", fell_behind)
    result = run_cli("rehearse", "--from", str(CLUSTERS / "guide-single-pool"), "-o", "json")
    assert result.exit_code == 4, result.stderr
    document = json.loads(result.stdout)
    assert document["verdict"]["status"] == "inconclusive"
    assert document["verdict"]["first"]["check"] == "I2"
    assert document["behindSeconds"] == 3.2
    assert ("Error: inconclusive: the twin ran up to 3.2s behind its clock, and I2 (one"
            " announcer) failed at apply l2-cutover" in result.stderr)
    assert "rehearse on virtual time (without --time-scale)" in result.stderr


def test_no_cilium_agent_where_the_policy_announces_names_the_lease_wait(
        altered: Altered) -> None:
    """The Cilium agents run on the control plane only, while MetalLB (and so the translated
    policy) announces from the workers: nobody takes the leases, the cutover cannot finish."""

    def agents_on_cp_only(folder: Path) -> None:
        path = folder / "cilium.yaml"
        documents = path.read_text().split("\n---\n")
        kept = [d for d in documents if "nodeName: worker-" not in d]
        path.write_text("\n---\n".join(kept).replace(
            "    spec:\n      containers: [{name: cilium-agent,",
            "    spec:\n      nodeSelector: {node-role.kubernetes.io/control-plane: \"\"}\n"
            "      containers: [{name: cilium-agent,"))

    folder = altered("guide-single-pool", agents_on_cp_only)
    progress = Progress()
    report = rehearse(RehearseOptions(chaos=3), progress, from_paths=[str(folder)])
    assert report.verdict.status == "unsafe"
    first = report.verdict.first
    assert first is not None and first.where == "apply l2-cutover"
    assert first.subject == "Service shop/api"
    assert "lease held by an eligible node" in first.detail
    assert "Cilium agent runs on the nodes the policy selects" in first.remedy
    cutover = next(r for r in report.stages if r.stage == "l2-cutover")
    assert cutover.outcome == "failed" and cutover.twin_seconds >= 120  # virtual seconds
    # What a user would do next works in the twin: the rollback gives everything back.
    rollback = next(r for r in report.stages if r.phase == "rollback")
    assert rollback.checks["I3"] == "ok" and rollback.checks["I1"] == "ok"
    assert not [r for r in report.stages if r.phase == "re-apply"]
    assert report.chaos == [] and "chaos runs were skipped" in report.assumptions[-1]


def test_an_error_finding_blocks_with_exit_3(altered: Altered) -> None:
    folder = altered("guide-single-pool", lambda f: (f / "cilium.yaml").write_text(
        (f / "cilium.yaml").read_text().replace('enable-l2-announcements: "true"',
                                                'enable-l2-announcements: "false"')))
    result = run_cli("rehearse", "--from", str(folder))
    assert result.exit_code == 3, result.stderr
    assert "blocked by 1 ERROR finding(s)" in result.stdout
    assert "ConfigMap kube-system/cilium-config" in result.stdout
    assert "enable-l2-announcements" in result.stdout
    assert "Error: blocked by 1 ERROR finding(s)" in result.stderr


def test_the_table_and_progress_of_the_cli() -> None:
    result = run_cli("rehearse", "--from", str(CLUSTERS / "bgp-kinds"))
    assert result.exit_code == 0, result.stderr
    assert "Verdict: safe to run" in result.stdout
    for stage in ("pin", "freeze-metallb", "ipam-handover", "l2-cutover", "decommission"):
        assert stage in result.stdout
    assert "Cutover per IP" in result.stdout
    handover = [s.name for s in make_plan(read_snapshot([str(CLUSTERS / "bgp-kinds")])).stages
                ].index("ipam-handover")
    assert f"apply: stage {handover} (ipam-handover)" in result.stderr
    assert "LB-IPAM has taken over every pinned IP" in result.stderr  # a wait's progress
    assert "rollback: every applied stage, newest first" in result.stderr


def test_from_and_a_cluster_are_exclusive() -> None:
    result = run_cli("rehearse", "--from", str(CLUSTERS / "bgp-kinds"), "--context", "x")
    assert result.exit_code == 2
    assert "not both" in result.stderr


def test_a_real_clock_at_a_time_scale() -> None:
    """``--time-scale``: the twin on a real clock, the models in their own thread, the
    engine's polls scaled; the same verdict."""
    report = rehearse(RehearseOptions(time_scale=0.02), Progress(),
                      from_paths=[str(CLUSTERS / "guide-single-pool")])
    assert report.time == "real (time scale 0.02)"
    assert report.verdict.status == "safe", report.verdict.to_json()
    handover = next(r for r in report.stages if r.stage == "ipam-handover")
    assert handover.twin_seconds > 0  # wall seconds this time
