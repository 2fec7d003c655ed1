"""MetalLB speaker model: sha256 election, eligibility, stop on L2Advertisement deletion,
ServiceL2Status objects [M3][M5][M8]."""

from __future__ import annotations

import hashlib

from tests.lab.models_support import (
    l2_advertisement,
    new_store,
    patch_metadata,
    scale,
    service,
    start,
)

ONLY_METALLB = {"cilium_lbipam": False, "cilium_l2": False}
ADDRESSES = [f"192.0.2.{i}" for i in range(12)]


def sha256_leader(nodes: list[str], ip: str) -> str:
    """The reference rule [M8] 4, written independently of the model."""
    return sorted(nodes, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).hexdigest())[0]


def test_each_ip_is_announced_by_the_sha256_leader() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    for i, ip in enumerate(ADDRESSES):
        store.create(service(f"s{i}", ips=(ip,)))
    lab.run_until_idle()
    view = lab.announcements()
    assert set(view) == set(ADDRESSES)
    nodes = ["node-a", "node-b", "node-c"]
    for ip in ADDRESSES:
        assert view[ip].metallb_node == sha256_leader(nodes, ip)
        assert view[ip].cilium_node is None
    assert len({view[ip].metallb_node for ip in ADDRESSES}) > 1  # the hash spreads them


def test_node_selectors_and_exclusions_narrow_the_candidates() -> None:
    store = new_store("cluster", "metallb")
    store.delete("metallb.io", "L2Advertisement", "l2-all", "metallb-system")
    store.create(l2_advertisement("east", nodeSelectors=[{"matchLabels": {"zone": "east"}}],
                                  interfaces=["eth1"]))
    lab = start(store, **ONLY_METALLB)
    for i, ip in enumerate(ADDRESSES):
        store.create(service(f"s{i}", ips=(ip,)))
    lab.run_until_idle()
    view = lab.announcements()
    for ip in ADDRESSES:
        assert view[ip].metallb_node == sha256_leader(["node-a", "node-b"], ip)
        assert view[ip].metallb_interfaces == ("eth1",)
    # node-a excluded by label: node-b is the only candidate left
    patch_metadata(store, "", "Node", "node-a", None,
                   labels={"node.kubernetes.io/exclude-from-external-load-balancers": ""})
    node_b = store.get("", "Node", "node-b")
    node_b["status"] = {"conditions": [{"type": "NetworkUnavailable", "status": "False"}]}
    store.update(node_b, subresource="status")
    lab.run_until_idle()
    assert {a.metallb_node for a in lab.announcements().values()} == {"node-b"}
    node_b = store.get("", "Node", "node-b")
    node_b["status"] = {"conditions": [{"type": "NetworkUnavailable", "status": "True"}]}
    store.update(node_b, subresource="status")
    lab.run_until_idle()
    assert lab.announcements() == {}


def test_deleting_the_l2advertisement_stops_announcing_but_keeps_ips() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    store.create(service("web"))
    lab.run_until_idle()
    ip = store.get("", "Service", "web", "apps")["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert lab.announcements()[ip].metallb_node is not None
    assert len(store.list("metallb.io", "ServiceL2Status", "metallb-system")) == 1
    store.delete("metallb.io", "L2Advertisement", "l2-all", "metallb-system")
    lab.run_until_idle()
    assert lab.announcements() == {}
    assert store.list("metallb.io", "ServiceL2Status", "metallb-system") == []
    svc = store.get("", "Service", "web", "apps")
    assert svc["status"]["loadBalancer"]["ingress"] == [{"ip": ip}]  # [M8] IPs stay


def test_service_l2_status_names_the_announcing_node() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    store.create(service("web", ips=("192.0.2.3",)))
    lab.run_until_idle()
    (status,) = store.list("metallb.io", "ServiceL2Status", "metallb-system")
    leader = sha256_leader(["node-a", "node-b", "node-c"], "192.0.2.3")
    assert status["metadata"]["name"].startswith("l2-")
    assert status["metadata"]["labels"] == {"metallb.io/node": leader,
                                            "metallb.io/service-name": "web",
                                            "metallb.io/service-namespace": "apps"}
    assert status["status"]["node"] == leader


def test_no_ready_endpoint_means_no_announcement() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    store.create(service("web", ips=("192.0.2.3",)))
    store.create({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                  "metadata": {"name": "web-x", "namespace": "apps",
                               "labels": {"kubernetes.io/service-name": "web"}},
                  "addressType": "IPv4",
                  "endpoints": [{"addresses": ["10.0.0.5"], "conditions": {"ready": False}}]})
    lab.run_until_idle()
    assert lab.announcements() == {}
    eps = store.get("discovery.k8s.io", "EndpointSlice", "web-x", "apps")
    eps["endpoints"][0]["conditions"]["ready"] = True
    store.update(eps)
    lab.run_until_idle()
    assert "192.0.2.3" in lab.announcements()


def test_speaker_daemonset_gone_or_unscheduled_means_nobody_announces() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    store.create(service("web", ips=("192.0.2.3",)))
    lab.run_until_idle()
    assert lab.announcements()
    speaker = store.get("apps", "DaemonSet", "speaker", "metallb-system")
    speaker["spec"]["template"]["spec"]["nodeSelector"] = {"no-such": "label"}
    store.update(speaker)
    lab.run_until_idle()
    assert lab.announcements() == {}
    speaker = store.get("apps", "DaemonSet", "speaker", "metallb-system")
    speaker["spec"]["template"]["spec"] = {}
    store.update(speaker)
    lab.run_until_idle()
    assert lab.announcements()
    store.delete("apps", "DaemonSet", "speaker", "metallb-system")
    lab.run_until_idle()
    assert lab.announcements() == {}


def test_pool_deleted_while_controller_frozen_keeps_the_old_config() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    store.create(service("web", ips=("192.0.2.3",)))
    lab.run_until_idle()
    scale(store, "metallb-system", "controller", 0)
    store.delete("metallb.io", "IPAddressPool", "pool-a", "metallb-system")
    lab.run_until_idle()
    # [M8] "service has no configuration under new config": the speaker keeps announcing
    assert lab.metallb_speaker.stale_config
    assert "192.0.2.3" in lab.announcements()


def test_the_switch_turns_the_speakers_off() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    store.create(service("web", ips=("192.0.2.3",)))
    lab.run_until_idle()
    lab.set_enabled(lab.metallb_speaker, False)
    assert lab.announcements() == {}
    lab.set_enabled(lab.metallb_speaker, True)
    assert "192.0.2.3" in lab.announcements()


def test_external_traffic_policy_local_needs_a_local_endpoint() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    store.create(service("web", ips=("192.0.2.3",), externalTrafficPolicy="Local"))
    store.create({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                  "metadata": {"name": "web-x", "namespace": "apps",
                               "labels": {"kubernetes.io/service-name": "web"}},
                  "addressType": "IPv4",
                  "endpoints": [{"addresses": ["10.0.0.5"], "nodeName": "node-c",
                                 "conditions": {"ready": True}}]})
    lab.run_until_idle()
    assert lab.announcements()["192.0.2.3"].metallb_node == "node-c"


def test_legacy_layer2_pools_are_announced_from_every_node() -> None:
    store = new_store("cluster", "metallb-legacy")
    store.create(service("l2", ips=("192.0.2.7",)))
    store.create(service("bgp", ips=("198.51.100.7",)))
    lab = start(store, **ONLY_METALLB)
    view = lab.announcements()
    # the speaker DaemonSet selects kubernetes.io/os=linux, which every kubelet sets
    assert view["192.0.2.7"].metallb_node == sha256_leader(["node-a", "node-b", "node-c"],
                                                           "192.0.2.7")
    assert "198.51.100.7" not in view  # a bgp pool has no layer-2 announcement
