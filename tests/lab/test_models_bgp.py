"""The lab's BGP: MetalLB's speakers and Cilium's BGP control plane peering with the upstream
router, and what the router learns (virtual time, the bgp-kinds scenario)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from migrate.lab.models import Controllers, build_controllers
from migrate.lab.store import Clock, Store
from migrate.sources.snapshot import read_snapshot
from migrate.translate.translator import translate
from tests.conftest import TESTDATA

SCENARIO = TESTDATA / "clusters" / "bgp-kinds"
Obj = dict[str, Any]
ROUTER = "10.99.0.254"
HANDOVER = "lbmigrate.io/bgp-speaker"


def lab(*, seed: int = 1, edit: Any = None, timing: str = "realistic") -> tuple[Store,
                                                                                Controllers]:
    """The bgp-kinds scenario on virtual time (``edit(store)`` runs before the models start)."""
    store, skipped = Store.from_snapshot([SCENARIO], Clock.manual())
    assert not skipped
    if edit is not None:
        edit(store)
    controllers = build_controllers(store, timing=timing, seed=seed)
    controllers.advance(30)
    return store, controllers


def update(store: Store, group: str, kind: str, name: str, namespace: str | None,
           change: Any) -> None:
    obj = store.get(group, kind, name, namespace)
    change(obj)
    obj["metadata"].pop("resourceVersion", None)
    store.update(obj)


def label_node(store: Store, node: str, value: str | None) -> None:
    def change(obj: Obj) -> None:
        labels = obj["metadata"].setdefault("labels", {})
        if value is None:
            labels.pop(HANDOVER, None)
        else:
            labels[HANDOVER] = value
    update(store, "", "Node", node, None, change)


def park_peers(store: Store) -> None:
    """bgp-prepare's edit: the router's BGPPeer requires the hand-over label absent."""
    update(store, "metallb.io", "BGPPeer", "router", "metallb-system", lambda o: o["spec"].update(
        nodeSelectors=[{"matchExpressions": [{"key": HANDOVER, "operator": "DoesNotExist"}]}]))


def pin_pool_labels(store: Store) -> None:
    """The pool label the pin stage writes, which the CiliumBGPAdvertisement selects."""
    for name in ("public", "api"):
        update(store, "", "Service", name, "web", lambda o: o["metadata"].setdefault(
            "labels", {}).update({"lbmigrate.io/pool": "routed"}))


def create_cilium_bgp(store: Store) -> None:
    """The translation's Cilium BGP objects (they select no node yet), and the pool labels."""
    pin_pool_labels(store)
    bgp = translate(read_snapshot([str(SCENARIO)]), cilium="1.18").bgp
    assert bgp is not None
    for obj in bgp.objects():
        store.create(copy.deepcopy(obj))


def states(controllers: Controllers) -> set[tuple[str, str, str]]:
    return {(s.node, s.stack, s.state) for s in controllers.bgp_sessions()}


def test_metallb_speakers_peer_and_advertise_as_metallb_does() -> None:
    store, controllers = lab()
    assert states(controllers) == {(n, "metallb", "established")
                                   for n in ("cp-1", "worker-1", "worker-2")}
    sessions = {s.node: s for s in controllers.bgp_sessions()}
    worker = sessions["worker-1"]
    assert (worker.peer_address, worker.peer_asn, worker.local_asn, worker.peer_port) == (
        ROUTER, 64513, 64512, 179)
    assert worker.source_address == "10.77.0.21"
    assert worker.password_secret == "metallb-system/router-password"
    assert not worker.password_inline
    # FRR mode leaves FRR's timers in place when the peer sets none.
    assert (worker.hold_time, worker.keepalive_time) == (180.0, 60.0)
    routes = {r.prefix: r for r in worker.advertised}
    assert routes["203.0.113.1/32"].communities == ("64512:100",)  # the alias "campus"
    assert routes["203.0.113.1/32"].services == ("web/public",)
    # externalTrafficPolicy Local: only the nodes with a local endpoint advertise it.
    assert "203.0.113.2/32" not in {r.prefix for r in sessions["cp-1"].advertised}
    hops = controllers.bgp_announcements()
    assert hops["203.0.113.1/32"].metallb_nodes == ("cp-1", "worker-1", "worker-2")
    assert hops["203.0.113.2/32"].metallb_nodes == ("worker-1", "worker-2")
    assert controllers.bgp_routers()[0].address == ROUTER
    # MetalLB 0.14.9 writes no ServiceBGPStatus (0.15.0 added it).
    assert store.list("metallb.io", "ServiceBGPStatus") == []


def test_the_one_time_bgppeer_edit_keeps_frr_sessions_and_a_node_label_parks_one_node() -> None:
    store, controllers = lab()
    before = len(controllers.bgp_record.changes)
    park_peers(store)
    controllers.advance(20)
    # FRR's configuration is unchanged: no session reset, no route change.
    assert len(controllers.bgp_record.changes) == before
    assert {s for s in states(controllers) if s[2] != "established"} == set()
    label_node(store, "worker-1", "none")
    controllers.advance(20)
    assert states(controllers) == {("cp-1", "metallb", "established"),
                                   ("worker-2", "metallb", "established")}
    hops = controllers.bgp_announcements()
    assert hops["203.0.113.1/32"].metallb_nodes == ("cp-1", "worker-2")
    assert controllers.bgp_record.no_next_hop() == []


def test_native_speakers_reset_their_sessions_when_the_bgppeer_changes() -> None:
    def native(store: Store) -> None:
        update(store, "apps", "DaemonSet", "speaker", "metallb-system",
               lambda o: o["spec"]["template"]["spec"]["containers"][0].pop("env"))
        store.delete("metallb.io", "BFDProfile", "fast", "metallb-system")  # native refuses BFD

    store, controllers = lab(edit=native)
    assert {s.state for s in controllers.bgp_sessions()} == {"established"}
    park_peers(store)
    controllers.advance(20)
    withdrawn = [c for c in controllers.bgp_record.changes
                 if c.prefix == "203.0.113.1/32" and len(c.nodes) < 3 and c.time > 30]
    assert withdrawn, "a native speaker aborts and redials a changed peer"
    assert {s.state for s in controllers.bgp_sessions()} == {"established"}


def test_cilium_peers_from_a_labelled_node_and_reports_its_sessions() -> None:
    store, controllers = lab()
    park_peers(store)
    create_cilium_bgp(store)
    controllers.advance(10)
    assert store.list("cilium.io", "CiliumBGPNodeConfig") == []  # no node labelled yet
    label_node(store, "worker-1", "none")
    controllers.advance(15)
    label_node(store, "worker-1", "cilium")
    controllers.advance(20)
    # The agent copied the Node's label to its CiliumNode, which the operator selects.
    assert store.get("cilium.io", "CiliumNode", "worker-1")["metadata"]["labels"][HANDOVER] == \
        "cilium"
    node_config = store.get("cilium.io", "CiliumBGPNodeConfig", "worker-1")
    owner = node_config["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"]) == (
        "CiliumBGPClusterConfig", "lbmigrate-bgp", True)
    peer = node_config["status"]["bgpInstances"][0]["peers"][0]
    assert peer["peeringState"] == "established"
    assert peer["routeCount"] == [{"afi": "ipv4", "safi": "unicast", "advertised": 2,
                                   "received": 0}]
    session = next(s for s in controllers.bgp_sessions() if s.stack == "cilium")
    assert session.password_secret == "kube-system/router-password"
    assert {r.prefix: r.communities for r in session.advertised} == {
        "203.0.113.1/32": ("64512:100",), "203.0.113.2/32": ("64512:100",)}
    assert controllers.bgp_announcements()["203.0.113.2/32"].cilium_nodes == ("worker-1",)
    assert controllers.bgp_record.collisions == []
    label_node(store, "worker-1", "none")
    controllers.advance(20)
    assert store.try_get("cilium.io", "CiliumBGPNodeConfig", "worker-1") is None
    assert not [s for s in controllers.bgp_sessions() if s.stack == "cilium"]


def test_two_speakers_from_one_node_address_collide_at_the_router() -> None:
    store, controllers = lab()
    create_cilium_bgp(store)
    label_node(store, "worker-2", "cilium")  # MetalLB's BGPPeer does not avoid the label
    controllers.advance(20)
    collision = controllers.bgp_record.collisions[0]
    assert (collision.router, collision.source_address, collision.node, collision.held_by,
            collision.refused) == (ROUTER, "10.77.0.22", "worker-2", "metallb", "cilium")
    assert ("worker-2", "cilium", "active") in states(controllers)
    refused = next(s for s in controllers.bgp_sessions() if s.stack == "cilium")
    assert refused.advertised == () and {r.prefix for r in refused.routes} == {
        "203.0.113.1/32", "203.0.113.2/32"}  # what it would send, once up
    status = store.get("cilium.io", "CiliumBGPNodeConfig", "worker-2")["status"]
    assert status["bgpInstances"][0]["peers"][0]["peeringState"] == "active"


def test_a_cilium_peer_without_its_password_secret_never_comes_up() -> None:
    store, controllers = lab(edit=lambda s: s.delete("", "Secret", "router-password",
                                                      "kube-system"))
    park_peers(store)
    create_cilium_bgp(store)
    label_node(store, "cp-1", "none")
    controllers.advance(15)
    label_node(store, "cp-1", "cilium")
    controllers.advance(30)
    session = next(s for s in controllers.bgp_sessions() if s.stack == "cilium")
    assert session.state == "active" and not session.advertised
    assert "MD5" in controllers.runtime.bgp.error_of(("cp-1", "cilium", session.instance,
                                                       "router"))
    # The other nodes still route the prefix.
    assert controllers.bgp_record.no_next_hop() == []


@pytest.mark.parametrize("graceful_restart", [False, True])
def test_a_killed_speaker_keeps_its_routes_only_with_graceful_restart(
        graceful_restart: bool) -> None:
    def restart(store: Store) -> None:
        update(store, "metallb.io", "BGPPeer", "router", "metallb-system",
               lambda o: o["spec"].update(enableGracefulRestart=graceful_restart))

    _, controllers = lab(edit=restart)
    speaker = next(p for p in controllers.metallb_speaker.running() if p.node == "cp-1")
    speaker.stop(graceful=False)
    controllers.advance(1)
    hops = controllers.bgp_announcements()["203.0.113.1/32"]
    assert ("cp-1" in hops.metallb_nodes) is graceful_restart
    assert hops.stale_nodes == (("cp-1",) if graceful_restart else ())
    controllers.advance(130)  # past FRR's restart time (120 s)
    assert "cp-1" not in controllers.bgp_announcements()["203.0.113.1/32"].metallb_nodes


def test_aggregation_is_metallb_s_and_cilium_s_except_for_local_services() -> None:
    def aggregate(store: Store) -> None:
        update(store, "metallb.io", "BGPAdvertisement", "routed", "metallb-system",
               lambda o: o["spec"].update(aggregationLength=28))

    store, controllers = lab(edit=aggregate)
    hops = controllers.bgp_announcements()
    assert set(hops) == {"203.0.113.0/28"}  # MetalLB aggregates every Service, Local too
    bgp = translate(read_snapshot([str(SCENARIO)]), cilium="1.18").bgp
    assert bgp is not None
    park_peers(store)
    pin_pool_labels(store)
    for obj in bgp.objects():
        obj = copy.deepcopy(obj)
        if obj["kind"] == "CiliumBGPAdvertisement":
            obj["spec"]["advertisements"][0]["service"]["aggregationLengthIPv4"] = 28
        store.create(obj)
    label_node(store, "worker-1", "none")
    controllers.advance(15)
    label_node(store, "worker-1", "cilium")
    controllers.advance(20)
    cilium = next(s for s in controllers.bgp_sessions() if s.stack == "cilium")
    assert {r.prefix for r in cilium.advertised} == {"203.0.113.0/28", "203.0.113.2/32"}


def test_metallb_0_15_writes_a_service_bgp_status_per_node_and_removes_it_when_parked() -> None:
    def newer(store: Store) -> None:
        for kind, name in (("DaemonSet", "speaker"), ("Deployment", "controller")):
            update(store, "apps", kind, name, "metallb-system",
                   lambda o, n=name: o["spec"]["template"]["spec"]["containers"][0].update(
                       image=f"quay.io/metallb/{n}:v0.15.2"))

    store, controllers = lab(edit=newer)
    statuses = store.list("metallb.io", "ServiceBGPStatus")
    by_node = sorted((s["status"]["node"], s["status"]["serviceName"], tuple(s["status"]["peers"]))
                     for s in statuses)
    assert by_node == [("cp-1", "public", ("router",)), ("worker-1", "api", ("router",)),
                       ("worker-1", "public", ("router",)), ("worker-2", "api", ("router",)),
                       ("worker-2", "public", ("router",))]
    owner = statuses[0]["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Pod"
    park_peers(store)
    label_node(store, "worker-2", "none")
    controllers.advance(10)
    assert "worker-2" not in {s["status"]["node"] for s in store.list("metallb.io",
                                                                      "ServiceBGPStatus")}


def test_two_cluster_configs_selecting_one_node_conflict() -> None:
    store, controllers = lab()
    create_cilium_bgp(store)
    other = copy.deepcopy(store.get("cilium.io", "CiliumBGPClusterConfig", "lbmigrate-bgp"))
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation"):
        other["metadata"].pop(key, None)
    other["metadata"]["name"] = "another"
    controllers.advance(1)
    store.create(other)
    label_node(store, "worker-1", "cilium")
    controllers.advance(20)
    conditions = {c["type"]: c for c in store.get("cilium.io", "CiliumBGPClusterConfig",
                                                  "another")["status"]["conditions"]}
    assert conditions["cilium.io/ConflictingClusterConfig"]["status"] == "True"
    owner = store.get("cilium.io", "CiliumBGPNodeConfig", "worker-1")["metadata"][
        "ownerReferences"][0]["name"]
    assert owner == "lbmigrate-bgp"


def test_the_bgp_view_is_the_same_for_the_same_seed() -> None:
    def run(seed: int) -> list[tuple[float, str, tuple[str, ...]]]:
        store, controllers = lab(seed=seed)
        park_peers(store)
        create_cilium_bgp(store)
        for node in ("cp-1", "worker-1"):
            label_node(store, node, "none")
            controllers.advance(12)
            label_node(store, node, "cilium")
            controllers.advance(15)
        return [(round(c.time, 6), c.prefix, c.cilium) for c in controllers.bgp_record.changes]

    assert run(4) == run(4)
    assert run(4) != run(5)


def test_instant_timing_peers_at_once(tmp_path: Path) -> None:
    _, controllers = lab(timing="instant")
    assert {s.state for s in controllers.bgp_sessions()} == {"established"}
