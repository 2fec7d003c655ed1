"""``--chaos N``: N more runs, each with one seeded fault (API 500, 409, timeout, dropped
connection, SIGKILL of the apply then resume or rollback); every run must keep I1 and roll
back exactly. The same seed gives the same report."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from migrate.apply.executor import apply_stage
from migrate.errors import ClusterError
from migrate.lab.faults import RequestInfo
from migrate.plan.api import make_plan
from migrate.rehearse import RehearseOptions, rehearse
from migrate.rehearse.chaos import KINDS, FaultPoint, RequestFaults, fault_point, run_seed
from migrate.rehearse.twin import start_twin
from migrate.sources.live import read_live
from tests.helpers import run_cli
from tests.rehearse.conftest import CLUSTERS, Progress

SCENARIO = CLUSTERS / "guide-single-pool"


def test_twenty_chaos_runs_all_survive() -> None:
    progress = Progress()
    report = rehearse(RehearseOptions(chaos=20, seed=7), progress,
                      from_paths=[str(SCENARIO)])
    assert len(report.chaos) == 20
    failed = [run.to_json() for run in report.chaos if not run.survived]
    assert not failed, failed
    assert report.verdict.status == "safe"
    assert "20 of 20 chaos runs survived" in report.verdict.summary
    kinds = Counter(run.fault.split(" (")[0].split(",")[0] for run in report.chaos)
    assert {"API 500", "API 409", "SIGKILL", "dropped connection"} <= set(kinds), kinds
    # Every fault hit a request, during an operation, and the operator's recovery is named.
    for run in report.chaos:
        assert run.request and run.at >= 1, run.to_json()
    kills = [run for run in report.chaos if run.fault.startswith("SIGKILL")]
    assert kills and all("freed the dead run's lock" in run.recovery for run in kills)
    assert sum(1 for e in progress.events if e.startswith("chaos run ")) == 20


def test_the_same_seed_gives_the_same_report() -> None:
    first = run_cli("rehearse", "--from", str(SCENARIO), "--chaos", "4", "--seed", "42",
                    "-o", "json")
    second = run_cli("rehearse", "--from", str(SCENARIO), "--chaos", "4", "--seed", "42",
                     "-o", "json")
    assert first.exit_code == second.exit_code == 0, first.stderr
    assert first.stdout == second.stdout
    other = run_cli("rehearse", "--from", str(SCENARIO), "--chaos", "4", "--seed", "43",
                    "-o", "json")
    seeds = [r["seed"] for r in json.loads(first.stdout)["chaos"]["results"]]
    assert seeds != [r["seed"] for r in json.loads(other.stdout)["chaos"]["results"]]


def test_a_chaos_seed_replays_its_run() -> None:
    full = rehearse(RehearseOptions(chaos=4, seed=5), Progress(), from_paths=[str(SCENARIO)])
    chosen = full.chaos[2]
    replay = rehearse(RehearseOptions(chaos_seeds=(chosen.seed,), seed=5), Progress(),
                      from_paths=[str(SCENARIO)])
    assert len(replay.chaos) == 1
    again = replay.chaos[0].to_json()
    assert {**again, "index": chosen.index} == chosen.to_json()
    assert "--seed 5 --chaos-seed {seed}" in full.chaos_replay


def test_fault_points_are_seeded_and_cover_every_kind() -> None:
    assert fault_point(123, 100, 30) == fault_point(123, 100, 30)
    points = [fault_point(run_seed(1, i), 100, 30) for i in range(200)]
    assert {p.kind for p in points} == set(KINDS)
    for point in points:
        assert 1 <= point.at <= (30 if point.kind in ("conflict", "timeout") else 100)


def _info(verb: str, resource: str = "services", name: str | None = "web") -> RequestInfo:
    return RequestInfo(verb=verb, resource=resource, subresource=None, name=name,
                       namespace="shop")


def test_a_write_fault_waits_for_the_nth_write_and_lock_renewals_do_not_count() -> None:
    faults = RequestFaults(FaultPoint("conflict", 2))
    assert faults.decide(_info("get")) is None
    assert faults.decide(_info("patch")) is None
    assert faults.decide(_info("patch", "leases", "lbmigrate-lock")) is None  # not counted
    assert faults.decide(_info("list")) is None
    fault = faults.decide(_info("patch"))
    assert fault is not None and fault.status == 409 and not fault.after
    assert faults.decide(_info("patch")) is None, "one fault per run"
    assert (faults.counted, faults.counted_writes) == (5, 3)


def test_a_killed_client_never_reaches_the_twin_again(tmp_path: Path) -> None:
    """After the kill point nothing the client sends reaches the store: its lock stays held,
    as a SIGKILLed process leaves it."""
    with start_twin(SCENARIO) as twin:
        plan = make_plan(read_live(twin.kube))
        faults = RequestFaults(FaultPoint("kill-resume", 6))
        client = twin.client("doomed", faults=faults)
        with pytest.raises(ClusterError):
            apply_stage(client.kube, plan, "pin", options=client.options())
        assert faults.killed and faults.fired is not None
        served = client.request_count
        lock = twin.store.get("coordination.k8s.io", "Lease", "lbmigrate-lock", "kube-system")
        assert lock["spec"]["holderIdentity"], "the dead run still holds the lock"
        managers = {entry.get("manager") for svc in twin.store.list("", "Service")
                    for entry in svc["metadata"].get("managedFields") or []}
        assert "lbmigrate" not in managers, "no pin reached the cluster"
        with pytest.raises(ClusterError):
            client.kube.list("v1", "Service")
        assert client.request_count > served  # it tried; the door dropped every request
        assert twin.store.get("coordination.k8s.io", "Lease", "lbmigrate-lock",
                              "kube-system")["spec"] == lock["spec"]
