"""The hand-overs wait for what really stops, not for what the API accepted: MetalLB's speakers
before Cilium's policies appear, Cilium's agents before MetalLB's advertisements come back, and
LB-IPAM's start-up race on Cilium before 1.18.2 blocks the plan.

The tests marked ``guarded`` / ``unguarded`` run twice on the asynchronous lab (virtual time,
realistic timing): once as the engine is (safe), once with the guard of ``migrate.guards`` that
prevents the hazard turned off, where the lab must show the hazard (an IP lost or moved, two
announcers in the lab's announcement record, a rollback that cannot finish)."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pytest
import yaml

from migrate.apply.cilium_leases import HOLDER
from migrate.apply.executor import apply_stage
from migrate.apply.rollback import rollback
from migrate.apply.waits import SilentReporter
from migrate.errors import ClusterError, VerificationError
from migrate.guards import GUARDS, NAMES, disabled
from migrate.plan.api import make_plan
from migrate.plan.model import Plan
from migrate.sources.live import read_live
from migrate.sources.snapshot import read_snapshot
from tests.engine.conftest import (
    GUARDED,
    Cluster,
    ClusterFactory,
    altered_scenario,
    apply_through,
    fast_options,
    unless,
)

SCENARIO = "guide-single-pool"


def _apply_until(cluster: Cluster, plan: Plan, last: str) -> None:
    for stage in plan.stages:
        apply_stage(cluster.kube, plan, stage.name, options=fast_options())
        if stage.name == last:
            return


def test_cilium_does_not_announce_while_a_speaker_still_does(
    cluster_factory: ClusterFactory,
) -> None:
    """A speaker that has not dropped the Services (its ServiceL2Status is still there) keeps
    the cutover from creating Cilium's policies: that would be two announcers (I2)."""
    cluster = cluster_factory(SCENARIO)
    plan = make_plan(read_live(cluster.kube))
    _apply_until(cluster, plan, "ipam-handover")
    assert cluster.store.list("metallb.io", "ServiceL2Status")
    # The speakers miss the deletion of their L2Advertisement (as one that is slow to reload).
    cluster.controllers.set_enabled(cluster.controllers.metallb_speaker, False)
    with pytest.raises(ClusterError, match="MetalLB still announces shop/"):
        apply_stage(cluster.kube, plan, "l2-cutover", options=fast_options())
    assert not cluster.store.list("cilium.io", "CiliumL2AnnouncementPolicy")
    assert not cluster.store.list("metallb.io", "L2Advertisement")
    # Once the speaker lets go, the same command finishes the stage.
    for status in cluster.store.list("metallb.io", "ServiceL2Status"):
        cluster.store.delete("metallb.io", "ServiceL2Status", status["metadata"]["name"],
                             status["metadata"]["namespace"])
    assert apply_stage(cluster.kube, plan, "l2-cutover",
                       options=fast_options()).outcome == "applied"
    assert cluster.store.list("cilium.io", "CiliumL2AnnouncementPolicy")


def test_metallb_returns_only_once_the_rollback_holds_every_lease(
    cluster_factory: ClusterFactory,
) -> None:
    """Rolling back the cutover, the rollback takes each Cilium lease before the policies go,
    and MetalLB's advertisements come back only when it holds them all; an agent that writes
    itself back as holder (ignoring the lease's resourceVersion) stops the rollback there."""
    cluster = cluster_factory(SCENARIO)
    plan = make_plan(read_live(cluster.kube))
    _apply_until(cluster, plan, "l2-cutover")
    holders = {lease["metadata"]["name"]: lease["spec"]["holderIdentity"]
               for lease in cluster.store.list("coordination.k8s.io", "Lease", "kube-system")
               if lease["metadata"]["name"].startswith("cilium-l2announce-")}
    assert holders and all(holders.values())
    cluster.controllers.set_enabled(cluster.controllers.cilium_l2, False)
    stop = threading.Event()

    def take_back() -> None:
        while not stop.wait(0.05):
            for lease in cluster.store.list("coordination.k8s.io", "Lease", "kube-system"):
                name = lease["metadata"]["name"]
                if name in holders and lease["spec"]["holderIdentity"] != holders[name]:
                    lease["spec"]["holderIdentity"] = holders[name]
                    lease["spec"]["renewTime"] = cluster.store.clock.rfc3339_micro()
                    lease["metadata"].pop("resourceVersion", None)
                    cluster.store.update(lease)

    rogue = threading.Thread(target=take_back, daemon=True)
    rogue.start()
    try:
        with pytest.raises(ClusterError, match=r"still held: shop/\S+ \(worker-"):
            rollback(cluster.kube, None, to="ipam-handover", options=fast_options())
        assert not cluster.store.list("metallb.io", "L2Advertisement")
        # The policies stay while an agent may still lead: deleting them is what makes the
        # holder release, and a lagging agent take over.
        assert cluster.store.list("cilium.io", "CiliumL2AnnouncementPolicy")
    finally:
        stop.set()
        rogue.join()
    cluster.controllers.set_enabled(cluster.controllers.cilium_l2, True)
    result = rollback(cluster.kube, None, to="ipam-handover", options=fast_options())
    assert result.undone == ["l2-cutover"]
    assert cluster.store.list("metallb.io", "L2Advertisement")
    assert not cluster.store.list("cilium.io", "CiliumL2AnnouncementPolicy")
    left = [lease["metadata"]["name"]
            for lease in cluster.store.list("coordination.k8s.io", "Lease", "kube-system")
            if lease["spec"].get("holderIdentity") == HOLDER]
    assert left == [], "the rollback lets go of the leases it held"


class _DiesDeletingPolicies(SilentReporter):
    """A rollback whose connection dies once it has taken the leases, at the first policy
    deletion."""

    def event(self, message: str) -> None:
        super().event(message)
        if message.startswith("delete CiliumL2AnnouncementPolicy"):
            raise ClusterError("connection to the API server lost")


def _leases(cluster: Cluster) -> dict[str, str]:
    return {lease["metadata"]["name"]: lease["spec"].get("holderIdentity") or ""
            for lease in cluster.store.list("coordination.k8s.io", "Lease", "kube-system")
            if lease["metadata"]["name"].startswith("cilium-l2announce-")}


def test_a_cutover_after_an_interrupted_rollback_drops_the_leases_it_held(
    cluster_factory: ClusterFactory,
) -> None:
    """A rollback that dies holding Cilium's leases leaves Cilium silent, as a rollback wants;
    applying the cutover again deletes those leases first, else Cilium could not announce
    until they expire (an hour)."""
    cluster = cluster_factory(SCENARIO)
    plan = make_plan(read_live(cluster.kube))
    _apply_until(cluster, plan, "l2-cutover")
    with pytest.raises(ClusterError, match="connection to the API server lost"):
        rollback(cluster.kube, plan, to="ipam-handover", options=fast_options(),
                 reporter=_DiesDeletingPolicies())
    assert set(_leases(cluster).values()) == {HOLDER}
    assert not cluster.store.list("metallb.io", "L2Advertisement")
    reporter = SilentReporter()
    assert apply_stage(cluster.kube, plan, "l2-cutover", options=fast_options(),
                       reporter=reporter).outcome == "applied"
    assert any("left held by an interrupted rollback" in m for m in reporter.messages)
    nodes = {node["metadata"]["name"] for node in cluster.store.list("", "Node")}
    holders = _leases(cluster)
    assert holders and set(holders.values()) <= nodes
    assert {a.service for a in cluster.controllers.cilium_l2.announcements()} == set(
        plan.context["announced"])


def _with_pending_service(tmp_path: Path, operator_image: str) -> Path:
    pending = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "new-app", "namespace": "shop"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 8080, "protocol": "TCP"}],
                 "selector": {"app": "new"}},
    }
    return altered_scenario(tmp_path / "cluster", SCENARIO, {
        "cilium.yaml": [("v1.18.4", operator_image)],
        "pending.yaml": [("", yaml.safe_dump(pending))]})


@pytest.mark.parametrize(("version", "severity"), [
    ("v1.17.9", "ERROR"), ("v1.18.1", "ERROR"), ("v1.18.2", None), ("v1.19.8", None)])
def test_a_pending_service_blocks_the_handover_before_cilium_1_18_2(
    tmp_path: Path, version: str, severity: str | None,
) -> None:
    plan = make_plan(read_snapshot([_with_pending_service(tmp_path, version)]))
    found = [f for f in plan.findings if f.code == "lbipam-startup-race"]
    if severity is None:
        assert not found
        return
    assert [f.severity.value for f in found] == [severity]
    assert "shop/new-app (pending (no IP))" in found[0].message
    assert "cilium/cilium#43131" in found[0].message
    assert plan.blocked


# -- each guard against its hazard, on the asynchronous lab ----------------------------------

def emptied(cluster: Cluster, plan: Plan) -> set[str]:
    """The Services some status write left without their IPs (I1 broken on the way)."""
    return {f"{w.namespace}/{w.name}" for w in cluster.ip_changes(plan.expected_ips)
            if not w.after}


@GUARDED
def test_the_pools_wait_until_the_old_operator_has_exited(
        virtual_cluster_factory: ClusterFactory, guarded: bool) -> None:
    """Scaled to 0, Cilium's operator leaves its pod Terminating, and its leader runs LB-IPAM
    until the process exits. Pools created in that window reach it one at a time: the first
    starts LB-IPAM with that pool alone, which strips the IPs of the other pools' Services."""
    cluster = virtual_cluster_factory("several-pools-shared", seed=1)
    plan = make_plan(read_live(cluster.kube))
    with unless(guarded, "terminating_pods"):
        apply_through(cluster, plan, "ipam-handover")
    if guarded:
        cluster.assert_ips_kept(plan.expected_ips)
    else:
        # The Services of the pools created after the first lose their IPs (and get them
        # back when the new operator starts: only the lab's write record shows it).
        assert {"apps/grafana", "apps/loki", "apps/argocd"} <= emptied(cluster, plan)


@GUARDED
def test_the_rollback_deletes_the_pools_once_the_old_operator_has_exited(
        virtual_cluster_factory: ClusterFactory, guarded: bool) -> None:
    """Rolling ipam-handover back stops the operator before deleting the pools; a Terminating
    leader that still runs sees them go and strips the IPs of their Services."""
    cluster = virtual_cluster_factory(SCENARIO, seed=1)
    plan = make_plan(read_live(cluster.kube))
    apply_through(cluster, plan, "ipam-handover")
    with unless(guarded, "terminating_pods"):
        if guarded:
            rollback(cluster.kube, plan, to="freeze-metallb", options=cluster.options())
            cluster.assert_ips_kept(plan.expected_ips)
            return
        with pytest.raises(VerificationError, match="shop/web has no IP"):
            rollback(cluster.kube, plan, to="freeze-metallb", options=cluster.options())
    assert emptied(cluster, plan) == set(plan.expected_ips)


@GUARDED
def test_cilium_announces_only_once_the_parked_speakers_have_exited(
        virtual_cluster_factory: ClusterFactory, guarded: bool) -> None:
    """A legacy configuration has no L2Advertisement to delete: the cutover parks MetalLB's
    speakers on no node. Their pods are Terminating at once, and each answers ARP until its
    process exits, within the grace period."""
    cluster = virtual_cluster_factory("legacy-configmap", seed=1)
    plan = make_plan(read_live(cluster.kube))
    apply_through(cluster, plan, "ipam-handover")
    with unless(guarded, "terminating_pods"):
        apply_through(cluster, plan, "l2-cutover")
    cluster.assert_ips_kept(plan.expected_ips)
    overlaps = cluster.controllers.record.overlaps()
    if guarded:
        assert overlaps == []
    else:
        assert {span.ip for span in overlaps} == {ip for ips in plan.expected_ips.values()
                                                  for ip in ips}


def _metallb(version: str) -> dict[str, list[tuple[str, str]]]:
    return {"metallb-install.yaml": [("v0.14.9", version)]}


HAZARD_SEEDS = range(5)
"""Where a hazard depends on which process happens to react first, the unguarded run tries
these seeds and must see it on one at least (it shows on most)."""


@GUARDED
@pytest.mark.parametrize("version", ["v0.14.9", "v0.14.5"])
def test_cilium_announces_only_once_metallb_stopped(
        virtual_cluster_factory: ClusterFactory, tmp_path: Path, guarded: bool,
        version: str) -> None:
    """Deleting the L2Advertisements returns before any speaker reloads; Cilium's policies
    created at once would put two announcers on the wire. From MetalLB 0.14.6 the cutover waits
    until the ServiceL2Status objects are gone; before, for the bounded time the plan states."""
    scenario = altered_scenario(tmp_path / "cluster", SCENARIO, _metallb(version))

    def overlaps(seed: int) -> int:
        cluster = virtual_cluster_factory(scenario, seed=seed)
        plan = make_plan(read_live(cluster.kube))
        assert plan.context["metallbReleaseSettle"] == (0.0 if version == "v0.14.9" else 5.0)
        with unless(guarded, "metallb_released"):
            apply_through(cluster, plan, "l2-cutover")
        cluster.assert_ips_kept(plan.expected_ips)
        return len(cluster.controllers.record.overlaps())

    if guarded:
        assert overlaps(0) == 0
    else:
        assert any(overlaps(seed) for seed in HAZARD_SEEDS), "two announcers at the cutover"


@GUARDED
def test_metallb_announces_again_only_once_cilium_stopped(
        virtual_cluster_factory: ClusterFactory, guarded: bool) -> None:
    """Rolling the cutover back deletes Cilium's policies; each agent lets go of its leases
    (and then of its datapath entries) on its own. MetalLB's advertisements recreated at once
    would be a second announcer."""

    def overlaps(seed: int) -> int:
        cluster = virtual_cluster_factory(SCENARIO, seed=seed)
        plan = make_plan(read_live(cluster.kube))
        apply_through(cluster, plan, "l2-cutover")
        assert cluster.controllers.record.overlaps() == []
        with unless(guarded, "cilium_released"):
            rollback(cluster.kube, plan, to="ipam-handover", options=cluster.options())
        cluster.settle(5)
        cluster.assert_ips_kept(plan.expected_ips)
        return len(cluster.controllers.record.overlaps())

    if guarded:
        assert overlaps(0) == 0
    else:
        assert any(overlaps(seed) for seed in HAZARD_SEEDS), "two announcers on the way back"


@GUARDED
def test_the_rollback_waits_for_the_operator_as_ready_as_it_was(
        virtual_cluster_factory: ClusterFactory, tmp_path: Path, guarded: bool) -> None:
    """Cilium's operator wants 2 replicas and runs 1 (one node fits it): a rollback that waits
    for 2 ready never ends."""
    operator = 'image: "quay.io/cilium/operator-generic:v1.18.4"}]\n'
    scenario = altered_scenario(tmp_path / "cluster", SCENARIO, {"cilium.yaml": [(
        operator, operator + "status: {replicas: 2, readyReplicas: 1, availableReplicas: 1,"
        " unavailableReplicas: 1}\n")]})
    cluster = virtual_cluster_factory(scenario, seed=1)
    plan = make_plan(read_live(cluster.kube))
    apply_through(cluster, plan, "ipam-handover")
    with unless(guarded, "recorded_readiness"):
        if guarded:
            assert rollback(cluster.kube, plan, options=cluster.options()).undone
        else:
            with pytest.raises(ClusterError, match="cilium-operator is as ready as before the"
                               " migration: 1/2 ready"):
                rollback(cluster.kube, plan, options=cluster.options())
    operator = cluster.store.get("apps", "Deployment", "cilium-operator", "kube-system")
    assert operator["status"]["readyReplicas"] == 1
    cluster.assert_ips_kept(plan.expected_ips)


def _pending(name: str, annotations: dict[str, str] | None = None) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "shop", "annotations": annotations or {}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 8080, "protocol": "TCP"}],
                     "selector": {"app": "new"}}}


@GUARDED
def test_the_startup_race_before_cilium_1_18_2_blocks_a_plan_that_would_lose_an_ip(
        virtual_cluster_factory: ClusterFactory, tmp_path: Path, guarded: bool) -> None:
    """A pending Service (it asks MetalLB for a pool that does not exist) is matched by the
    selector-less pool: LB-IPAM 1.18.1 starts with every pool and hands it, by AllocAny, the
    IP of shop/web, which it has not seen yet (informer order: shop/new-app before shop/web)."""
    scenario = altered_scenario(tmp_path / "cluster", SCENARIO,
                                {"cilium.yaml": [("v1.18.4", "v1.18.1")]})
    cluster = virtual_cluster_factory(scenario, seed=1)
    cluster.kube.create(_pending("new-app", {"metallb.io/address-pool": "no-such-pool"}))
    cluster.settle(5)
    with unless(guarded, "startup_race"):
        plan = make_plan(read_live(cluster.kube))
    if guarded:
        assert plan.blocked
        race = next(f for f in plan.findings if f.code == "lbipam-startup-race")
        assert "shop/new-app (pending (no IP))" in race.message
        return
    assert not plan.blocked
    with pytest.raises(VerificationError, match="shop/web has no IP"):
        apply_through(cluster, plan, "ipam-handover")
    assert "shop/web" in emptied(cluster, plan)
    assert cluster.store.get("", "Service", "new-app", "shop")["status"]["loadBalancer"] == {
        "ingress": [{"ip": "192.168.105.128"}]}


@GUARDED
def test_the_metallb_pin_uses_the_prefix_its_controller_reads(
        virtual_cluster_factory: ClusterFactory, tmp_path: Path, guarded: bool) -> None:
    """MetalLB 0.14.5 reads only metallb.universe.tf/ annotations. A Service that lost its IP
    while MetalLB was stopped gets it back from the pin when the rollback wakes MetalLB; a pin
    under metallb.io/ is ignored, and MetalLB gives the first free address instead."""
    cluster = virtual_cluster_factory(
        altered_scenario(tmp_path / "cluster", SCENARIO, _metallb("v0.14.5")), seed=1)
    with unless(guarded, "pin_prefix"):
        plan = make_plan(read_live(cluster.kube))
    apply_through(cluster, plan, "freeze-metallb")
    api = cluster.store.get("", "Service", "api", "shop")
    assert ("metallb.universe.tf/loadBalancerIPs" in api["metadata"]["annotations"]) == guarded
    api["status"] = {"loadBalancer": {}}
    cluster.store.update(api, subresource="status", manager="someone")
    if guarded:
        rollback(cluster.kube, plan, to="pin", options=cluster.options())
        ips = ["192.168.105.130"]
    else:
        with pytest.raises(VerificationError, match=re.escape(
                "shop/api has 192.168.105.129 instead of 192.168.105.130")):
            rollback(cluster.kube, plan, to="pin", options=cluster.options())
        ips = ["192.168.105.129"]
    assert cluster.store.get("", "Service", "api", "shop")["status"]["loadBalancer"] == {
        "ingress": [{"ip": ip} for ip in ips]}


@GUARDED
def test_before_metallb_0_14_a_rollback_with_a_pending_service_is_a_finding(
        virtual_cluster_factory: ClusterFactory, tmp_path: Path, guarded: bool) -> None:
    """MetalLB 0.13.12, its pool full: shop/new-app waits for an address. Rolling back
    freeze-metallb restarts the controller, which handles the Services in informer order and
    gives new-app the IP of shop/web before it sees web. The plan says so, names new-app and
    what to do; doing it keeps the IP."""
    scenario = altered_scenario(tmp_path / "cluster", SCENARIO, {
        **_metallb("v0.13.12"),
        "metallb-config.yaml": [("192.168.105.128/27", "192.168.105.128-192.168.105.130")],
        "services.yaml": [("192.168.105.150", "192.168.105.129")],
    })
    cluster = virtual_cluster_factory(scenario, seed=1)
    cluster.kube.create(_pending("new-app"))
    cluster.settle(5)
    with unless(guarded, "metallb_restart_finding"):
        plan = make_plan(read_live(cluster.kube))
    found = [f for f in plan.findings if f.code == "freeze-metallb-rollback"]
    apply_through(cluster, plan, "freeze-metallb")
    if guarded:
        assert [f.severity.value for f in found] == ["WARNING"]
        assert "Services pending now: shop/new-app" in found[0].message
        assert "make them ClusterIP" in found[0].message
        cluster.kube.patch("v1", "Service", "new-app", {"spec": {"type": "ClusterIP"}},
                           namespace="shop")
        rollback(cluster.kube, plan, options=cluster.options())
        cluster.assert_ips_kept(plan.expected_ips)
        return
    assert found == []
    with pytest.raises(VerificationError, match="shop/web has no IP"):
        rollback(cluster.kube, plan, options=cluster.options())
    assert "shop/web" in emptied(cluster, plan)


def test_every_guard_has_a_hazard_test() -> None:
    """Each guard of migrate/guards.py is turned off by some test of tests/engine (or, for a
    guard of the wire, tests/verify), which shows what happens without it; an unknown name is
    refused."""
    folders = (Path(__file__).parent, Path(__file__).parents[1] / "verify")
    tests = "".join(path.read_text() for folder in folders for path in folder.glob("test_*.py"))
    untested = [name for name in NAMES if f'unless(guarded, "{name}")' not in tests]
    assert untested == []
    with pytest.raises(ValueError, match="no such guard: nope"), disabled("nope"):
        pass
    assert all(getattr(GUARDS, name) for name in NAMES)
