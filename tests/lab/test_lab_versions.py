"""The models follow the version bands of the images the snapshot runs (reference/real-clusters.md
§4): each test runs the same cluster on both sides of a band and shows the difference."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from migrate.lab.store import Clock, Store
from migrate.lab.versions import image_version
from tests.lab.models_support import (
    cilium_pool,
    daemonset,
    deployment,
    ips,
    new_store,
    service,
    start,
)

CONTROLLER_LABELS = {"app": "metallb", "component": "controller"}
SPEAKER_LABELS = {"app": "metallb", "component": "speaker"}
OPERATOR_LABELS = {"io.cilium/app": "operator", "name": "cilium-operator"}
NO_CILIUM = {"cilium_lbipam": False, "cilium_l2": False}
ONLY_LBIPAM = {"metallb_controller": False, "metallb_speakers": False, "cilium_l2": False}


def test_image_tags() -> None:
    assert image_version("quay.io/metallb/controller:v0.14.9") == (0, 14, 9)
    assert image_version("quay.io/cilium/cilium:v1.18.4@sha256:abc") == (1, 18, 4)
    assert image_version("registry:5000/cilium/operator-generic:1.19.8-rc1") == (1, 19, 8)
    assert image_version("registry:5000/cilium/cilium") is None  # the port is no tag
    assert image_version("quay.io/metallb/speaker:latest") is None


def metallb_store(version: str, *speaker_args: str) -> Store:
    store = new_store("cluster", "metallb")
    store.delete("apps", "Deployment", "controller", "metallb-system")
    store.delete("apps", "DaemonSet", "speaker", "metallb-system")
    store.create(deployment("controller", "metallb-system", CONTROLLER_LABELS,
                            image=f"quay.io/metallb/controller:v{version}"))
    store.create(daemonset("speaker", "metallb-system", SPEAKER_LABELS, args=speaker_args,
                           image=f"quay.io/metallb/speaker:v{version}"))
    return store


# --------------------------------------------------------------------------- MetalLB


@pytest.mark.parametrize(("version", "holder_keeps"), [("0.13.12", False), ("0.14.0", True)])
def test_a_metallb_restart_before_0_14_gives_a_held_ip_to_a_pending_service(
        version: str, holder_keeps: bool) -> None:
    """Before commit 667ab7e93 (v0.14.0) reprocessAll took the Services in informer order."""
    store = metallb_store(version)
    store.create(service("a-pending"))
    store.create(service("b-holder", ips=("192.0.2.0",)))
    start(store, **NO_CILIUM)
    if holder_keeps:
        assert (ips(store, "b-holder"), ips(store, "a-pending")) == (["192.0.2.0"], ["192.0.2.1"])
    else:
        assert (ips(store, "a-pending"), ips(store, "b-holder")) == (["192.0.2.0"], ["192.0.2.1"])


@pytest.mark.parametrize(("version", "holder_keeps"), [("0.13.12", False), ("0.14.0", True)])
def test_before_0_14_a_pinned_holder_loses_its_ip_to_a_pending_service(
        version: str, holder_keeps: bool) -> None:
    """The same restart with the holder pinned (MetalLB's loadBalancerIPs, as the pin stage
    writes it): before 0.14 the pending Service takes the pinned IP first, and the holder's
    request then fails."""
    store = metallb_store(version)
    store.create(service("a-pending"))
    store.create(service("b-pinned", ips=("192.0.2.0",),
                         annotations={"metallb.universe.tf/loadBalancerIPs": "192.0.2.0"}))
    lab = start(store, **NO_CILIUM)
    if holder_keeps:
        assert ips(store, "b-pinned") == ["192.0.2.0"]
    else:
        assert (ips(store, "a-pending"), ips(store, "b-pinned")) == (["192.0.2.0"], [])
        assert any(e[1] == "apps/b-pinned" and e[2] == "AllocationFailed"
                   for e in lab.metallb_controller.events)


@pytest.mark.parametrize(("version", "wanted", "pool_key"), [
    ("0.14.8", "192.0.2.0", "metallb.universe.tf/ip-allocated-from-pool"),
    ("0.14.9", "192.0.2.7", "metallb.io/ip-allocated-from-pool"),
    ("0.16.1", "192.0.2.7", "metallb.io/ip-allocated-from-pool"),
])
def test_the_metallb_io_prefix_is_read_from_0_14_9(version: str, wanted: str,
                                                   pool_key: str) -> None:
    """controller/service.go: AnnotationPrefix metallb.universe.tf through v0.14.8 (PR #2495)."""
    store = metallb_store(version)
    store.create(service("web", annotations={"metallb.io/loadBalancerIPs": "192.0.2.7"}))
    store.create(service("old", annotations={"metallb.universe.tf/loadBalancerIPs":
                                             "192.0.2.9"}))
    lab = start(store, **NO_CILIUM)
    assert ips(store, "web") == [wanted]
    assert ips(store, "old") == ["192.0.2.9"]  # the old prefix is read in every band
    annotations = store.get("", "Service", "web", "apps")["metadata"]["annotations"]
    assert annotations[pool_key] == "pool-a"
    deprecated = [e for e in lab.metallb_controller.events if e[2] == "deprecatedAnnotation"]
    assert bool(deprecated) == (version != "0.14.8")


def test_from_0_14_9_the_new_key_wins_even_when_empty() -> None:
    """valueForAnnotation: a present metallb.io/ key wins, whatever its value."""
    store = metallb_store("0.14.9")
    store.create(service("web", annotations={"metallb.io/address-pool": "",
                                             "metallb.universe.tf/address-pool": "nope"}))
    start(store, **NO_CILIUM)
    assert ips(store, "web") == ["192.0.2.0"]  # no pool asked: any pool


@pytest.mark.parametrize(("version", "args", "written"), [
    ("0.14.3", (), False),
    ("0.14.5", (), False),
    ("0.14.5", ("--enable-l2-service-status",), True),
    ("0.14.4", ("--enable-l2-service-status=true",), True),
    ("0.14.6", (), True),
])
def test_service_l2_status_is_written_from_0_14_6(version: str, args: tuple[str, ...],
                                                  written: bool) -> None:
    """speaker/main.go: the experimental flag in v0.14.4/0.14.5, always on from v0.14.6."""
    store = metallb_store(version, *args)
    store.create(service("web", ips=("192.0.2.3",)))
    lab = start(store, **NO_CILIUM)
    assert "192.0.2.3" in lab.announcements()
    assert bool(store.list("metallb.io", "ServiceL2Status", "metallb-system")) == written


# --------------------------------------------------------------------------- Cilium


def lbipam_store(version: str, *pools: dict[str, Any]) -> Store:
    store = new_store("cluster", "cilium")
    store.delete("apps", "Deployment", "cilium-operator", "kube-system")
    store.create(deployment("cilium-operator", "kube-system", OPERATOR_LABELS,
                            image=f"quay.io/cilium/operator-generic:v{version}"))
    for pool in pools:
        store.create(pool)
    return store


@pytest.mark.parametrize(("version", "lost"), [("1.18.1", True), ("1.18.2", False)])
def test_lbipam_start_up_before_1_18_2_hands_a_held_ip_to_a_pending_service(
        version: str, lost: bool) -> None:
    """cilium/cilium#43131 (fix #41147, #41122): each Service handled as delivered."""
    store = lbipam_store(version, cilium_pool("any", "192.0.2.0/24"))
    store.create(service("a-new"))
    store.create(service("b-held", ips=("192.0.2.0",),
                         annotations={"lbipam.cilium.io/ips": "192.0.2.0"}))
    start(store, **ONLY_LBIPAM)
    if lost:
        assert ips(store, "a-new") == ["192.0.2.0"] and ips(store, "b-held") == []
        status = store.get("", "Service", "b-held", "apps")["status"]
        (cond,) = status["conditions"]
        assert (cond["status"], cond["reason"]) == ("False", "already_allocated")
    else:
        assert (ips(store, "b-held"), ips(store, "a-new")) == (["192.0.2.0"], ["192.0.2.1"])


@pytest.mark.parametrize(("version", "renumbered"), [("1.17.4", True), ("1.18.2", False)])
def test_widening_a_pool_renumbers_services_on_1_17(version: str, renumbered: bool) -> None:
    """cilium/cilium#40358 (fix #41122): a widened pool's unsatisfied Services went first."""
    store = lbipam_store(version, cilium_pool("small", "192.0.2.0/30"))
    for index in range(4):
        store.create(service(f"s{index}", ips=(f"192.0.2.{index}",)))
    store.create(service("z-pending"))  # after the holders: no start-up steal
    lab = start(store, **ONLY_LBIPAM)
    assert ips(store, "z-pending") == []  # the pool is full
    pool = store.get("cilium.io", "CiliumLoadBalancerIPPool", "small")
    pool["spec"]["blocks"] = [{"cidr": "192.0.2.0/29"}]
    store.update(pool)
    lab.run_until_idle()
    kept = [ips(store, f"s{i}") == [f"192.0.2.{i}"] for i in range(4)]
    assert all(kept) != renumbered
    assert ips(store, "z-pending")


@pytest.mark.parametrize(("version", "stolen"), [("1.19.8", True), ("1.20.0", False)])
def test_shrinking_a_pool_reassigns_a_still_valid_ip_before_1_20(version: str,
                                                                 stolen: bool) -> None:
    """cilium/cilium#41458 (fix #45543): one pass per Service after the range changed."""
    pool = cilium_pool("range", "192.0.2.0/32")
    pool["spec"]["blocks"] = [{"start": "192.0.2.9", "stop": "192.0.2.50"}]
    store = lbipam_store(version, pool)
    store.create(service("a-moved", ips=("192.0.2.45",)))
    store.create(service("b-kept", ips=("192.0.2.9",)))
    lab = start(store, **ONLY_LBIPAM)
    current = store.get("cilium.io", "CiliumLoadBalancerIPPool", "range")
    current["spec"]["blocks"] = [{"start": "192.0.2.9", "stop": "192.0.2.39"},
                                 {"start": "192.0.2.49", "stop": "192.0.2.50"}]
    store.update(current)
    lab.run_until_idle()
    if stolen:
        assert (ips(store, "a-moved"), ips(store, "b-kept")) == (["192.0.2.9"], ["192.0.2.10"])
    else:
        assert (ips(store, "b-kept"), ips(store, "a-moved")) == (["192.0.2.9"], ["192.0.2.10"])


@pytest.mark.parametrize(("version", "moved"), [("1.19.5", True), ("1.19.7", False),
                                                ("1.18.4", False)])
def test_a_restart_drops_a_sharing_key_ip_on_1_19_4_to_1_19_6(version: str,
                                                              moved: bool) -> None:
    """cilium/cilium#46262: one key holding two IPs (a port clash); the import of the second
    one was stripped and the Service joined the key's first IP."""
    key = {"lbipam.cilium.io/sharing-key": "k"}
    store = lbipam_store(version, cilium_pool("any", "192.0.2.0/24"))
    store.create(service("x1", ips=("192.0.2.1",), annotations=key, ports=(80,)))
    store.create(service("x2", ips=("192.0.2.2",), annotations=key, ports=(80,)))
    store.create(service("y", ips=("192.0.2.2",), annotations=key, ports=(443,)))
    start(store, **ONLY_LBIPAM)
    assert ips(store, "x1") == ["192.0.2.1"] and ips(store, "x2") == ["192.0.2.2"]
    assert ips(store, "y") == (["192.0.2.1"] if moved else ["192.0.2.2"])


def cilium_snapshot(tmp_path: Any, version: str) -> Store:
    docs = [{"apiVersion": "apps/v1", "kind": "DaemonSet",
             "metadata": {"name": "cilium", "namespace": "kube-system",
                          "labels": {"k8s-app": "cilium"}},
             "spec": {"selector": {"matchLabels": {"k8s-app": "cilium"}},
                      "template": {"metadata": {"labels": {"k8s-app": "cilium"}},
                                   "spec": {"containers": [{
                                       "name": "cilium-agent",
                                       "image": f"quay.io/cilium/cilium:v{version}"}]}}}}]
    path = tmp_path / f"cilium-{version}.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    store, skipped = Store.from_snapshot([path], Clock.manual())
    assert not skipped
    return store


@pytest.mark.parametrize(("version", "served", "deprecated", "peering_policy"), [
    ("1.17.4", ["v2alpha1"], False, True),
    ("1.18.4", ["v2", "v2alpha1"], False, True),
    ("1.19.8", ["v2", "v2alpha1"], True, False),
    ("1.20.2", ["v2", "v2alpha1"], True, False),
])
def test_the_lab_serves_the_cilium_api_versions_of_the_snapshots_release(
        tmp_path: Any, version: str, served: list[str], deprecated: bool,
        peering_policy: bool) -> None:
    """Pools cilium.io/v2 from 1.18 (PR #39090), v2alpha1 deprecated from 1.19 (#39134);
    L2 announcement policies v2alpha1 only."""
    store = cilium_snapshot(tmp_path, version)
    pools = store.resource_type("cilium.io", "CiliumLoadBalancerIPPool")
    assert sorted(pools.versions) == served
    crd = store.get("apiextensions.k8s.io", "CustomResourceDefinition",
                    "ciliumloadbalancerippools.cilium.io")
    alpha = next(v for v in crd["spec"]["versions"] if v["name"] == "v2alpha1")
    assert bool(alpha.get("deprecated")) == deprecated
    assert store.resource_type("cilium.io", "CiliumL2AnnouncementPolicy").versions == [
        "v2alpha1"]
    kinds = {t.kind for t in store.resource_types()}
    assert ("CiliumBGPPeeringPolicy" in kinds) == peering_policy
