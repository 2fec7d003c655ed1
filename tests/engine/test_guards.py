"""What apply refuses: a held lock, a stale plan, an ERROR finding, stages out of order; and
what it tolerates: re-applying a done stage, a server dry run."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from migrate.apply.executor import apply_stage
from migrate.apply.lock import MigrationLock
from migrate.errors import BlockedError
from migrate.model.findings import Finding, Severity
from migrate.plan.api import load_plan, make_plan, save_plan
from migrate.sources.live import read_live
from tests.engine.conftest import ClusterFactory, fast_options


def test_a_second_apply_is_refused_and_names_the_holder(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    other = MigrationLock(cluster.kube, "kube-system", identity="alice@laptop (pid 42)")
    other.acquire()
    try:
        with pytest.raises(BlockedError, match="alice@laptop"):
            apply_stage(cluster.kube, plan, "pin", options=fast_options())
    finally:
        other.release()
    assert apply_stage(cluster.kube, plan, "pin", options=fast_options()).outcome == "applied"


def test_a_service_changed_after_planning_makes_the_plan_stale(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    service = cluster.store.get("", "Service", "api", "shop")
    service["metadata"].setdefault("labels", {})["team"] = "payments"
    service["metadata"].pop("resourceVersion")
    cluster.store.update(service)
    with pytest.raises(BlockedError, match=r"stale(.|\n)*Service shop/api changed"):
        apply_stage(cluster.kube, plan, "pin", options=fast_options())
    assert "lbipam.cilium.io/ips" not in cluster.store.get(
        "", "Service", "web", "shop")["metadata"].get("annotations", {})


def test_a_new_loadbalancer_service_makes_the_plan_stale(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    cluster.store.create({"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": "late", "namespace": "shop"},
                          "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    with pytest.raises(BlockedError, match="shop/late appeared after planning"):
        apply_stage(cluster.kube, plan, "pin", options=fast_options())


def test_an_error_finding_blocks_apply(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    plan.findings.append(Finding(Severity.ERROR, "test", "Service shop/web", None, "broken"))
    with pytest.raises(BlockedError, match="ERROR findings"):
        apply_stage(cluster.kube, plan, "pin", options=fast_options())
    assert cluster.store.try_get("", "ConfigMap", "lbmigrate-state", "kube-system") is None


def test_stages_run_in_order_and_a_done_stage_is_a_no_op(
    cluster_factory: ClusterFactory, tmp_path: Path,
) -> None:
    cluster = cluster_factory("guide-single-pool")
    save_plan(make_plan(read_live(cluster.kube)), tmp_path / "plan.yaml")
    plan = load_plan(tmp_path / "plan.yaml")
    with pytest.raises(BlockedError, match="earlier stage"):
        apply_stage(cluster.kube, plan, "freeze-metallb", options=fast_options())
    assert apply_stage(cluster.kube, plan, "1", options=fast_options()).outcome == "applied"
    seen = len(cluster.server.requests)
    again = apply_stage(cluster.kube, plan, "pin", options=fast_options())
    assert again.outcome == "already-applied" and again.writes == 0
    writes = [(m, p) for m, p in list(cluster.server.requests)[seen:]
              if m != "GET" and "/leases/" not in p and not p.endswith("/leases")]
    assert writes == []


def test_dry_run_changes_nothing(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    before = copy.deepcopy(cluster.store.list("", "Service"))
    result = apply_stage(cluster.kube, plan, "pin", options=fast_options(dry_run=True))
    assert result.outcome == "dry-run" and result.writes == 3
    assert cluster.store.list("", "Service") == before
    assert cluster.store.try_get("", "ConfigMap", "lbmigrate-state", "kube-system") is None


def test_state_records_who_and_backups_before_writes(cluster_factory: ClusterFactory) -> None:
    from migrate.apply.state import StateStore

    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    apply_stage(cluster.kube, plan, "pin", options=fast_options())
    state = StateStore(cluster.kube, "kube-system").load()
    record = state.record("pin")
    assert record is not None and record.status == "applied" and "@" in record.started_by
    backup = StateStore(cluster.kube, "kube-system").read_backup(record.backup_parts)
    saved = {item["target"]["name"]: item["object"] for item in backup["objects"]}
    assert "lbipam.cilium.io/ips" not in (saved["web"]["metadata"].get("annotations") or {})


def test_large_backups_are_split_across_configmaps(cluster_factory: ClusterFactory) -> None:
    import os

    from migrate.apply.state import StateStore

    cluster = cluster_factory("guide-single-pool")
    store = StateStore(cluster.kube, "kube-system")
    payload = {"stage": "pin", "objects": [
        {"target": {"apiVersion": "v1", "kind": "ConfigMap", "name": f"big-{i}"},
         "object": {"data": {"blob": os.urandom(300_000).hex()}}} for i in range(4)]}
    parts = store.write_backup("pin", payload)
    assert len(parts) > 1
    assert store.read_backup(parts) == payload


def test_two_concurrent_applies_one_is_refused(cluster_factory: ClusterFactory) -> None:
    import threading

    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    # Slow down the backup write so that both runs overlap for sure.
    from migrate.lab.faults import FaultRule

    cluster.server.faults.add(FaultRule(verb="create", resource="configmaps", delay=0.5))
    outcomes: list[str] = []

    def run() -> None:
        try:
            outcomes.append(apply_stage(cluster.kube, plan, "pin",
                                        options=fast_options()).outcome)
        except BlockedError as error:
            outcomes.append(f"refused: {error}")

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(o.split(":")[0] for o in outcomes) == ["applied", "refused"], outcomes
    assert any("holds the lock" in o or "same moment" in o for o in outcomes)


@pytest.mark.parametrize("verb", ["create", "update"])
def test_a_lock_write_whose_answer_was_lost_still_takes_the_lock(
        cluster_factory: ClusterFactory, verb: str) -> None:
    """The API server times out the lock write after storing it (504), the client retries:
    the create finds the Lease, the update gets 409 for its stale resourceVersion. Either
    way the lock is this run's, and the stage runs (refusing it left the lock held, by no
    running process, until it expired)."""
    from migrate.lab.faults import FaultRule

    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    if verb == "update":  # a Lease left by an earlier run, freed: the next run updates it
        assert apply_stage(cluster.kube, plan, "preflight",
                           options=fast_options()).outcome == "applied"
    rule = cluster.server.faults.add(FaultRule(verb=verb, resource="leases",
                                               name=None if verb == "create" else
                                               "lbmigrate-lock", nth=1, status=504,
                                               after=True))
    assert apply_stage(cluster.kube, plan, "pin", options=fast_options()).outcome == "applied"
    assert rule.fired == 1
    lease = cluster.store.get("coordination.k8s.io", "Lease", "lbmigrate-lock", "kube-system")
    assert not lease["spec"].get("holderIdentity"), "released at the end of the stage"


def _steal_lock(cluster: object, holder: str) -> None:
    store = cluster.store  # type: ignore[attr-defined]
    lease = store.get("coordination.k8s.io", "Lease", "lbmigrate-lock", "kube-system")
    lease["spec"]["holderIdentity"] = holder
    lease["metadata"].pop("resourceVersion")
    store.update(lease)


def test_a_lost_lock_stops_apply_before_the_next_write(cluster_factory: ClusterFactory) -> None:
    import threading
    import time

    from migrate.lab.faults import FaultRule

    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    # Each Service patch takes 0.6 s; the lock (1 s, renewed every 1/3 s) is taken by another
    # run after the first patch.
    cluster.server.faults.add(FaultRule(verb="patch", resource="services", delay=0.6))
    stealer = threading.Timer(0.9, _steal_lock, args=(cluster, "bob@desk (pid 7) run abc"))
    stealer.start()
    started = time.monotonic()
    try:
        with pytest.raises(BlockedError, match="lost the migration lock"):
            apply_stage(cluster.kube, plan, "pin",
                        options=fast_options(concurrency=1, lock_duration=1))
    finally:
        stealer.cancel()
        cluster.server.faults.clear()
    assert time.monotonic() - started < 10
    pinned = [s for s in cluster.store.list("", "Service")
              if "lbipam.cilium.io/ips" in (s["metadata"].get("annotations") or {})]
    assert 0 < len(pinned) < 3, "stopped between writes, after the lock was lost"
    lease = cluster.store.get("coordination.k8s.io", "Lease", "lbmigrate-lock", "kube-system")
    assert lease["spec"]["holderIdentity"] == "bob@desk (pid 7) run abc", "not taken back"
