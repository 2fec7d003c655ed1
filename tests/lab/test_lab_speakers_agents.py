"""Speakers and agents as upstream runs them: a speaker parses the whole MetalLB configuration,
BGP kinds included, and keeps its last valid one; it owns its ServiceL2Status objects; a Cilium
agent answers only on its devices while still taking leases; leases are renewed and retried at
the retry period."""

from __future__ import annotations

from typing import Any

import pytest

from migrate.lab.models import Controllers
from migrate.lab.models._common import Cache, Event
from migrate.lab.models.interfaces import INTERFACES_ANNOTATION, agent_devices, parse_interfaces
from migrate.lab.models.metallb_config import parse_config
from migrate.lab.store import Store
from tests.lab.models_support import (
    daemonset,
    ips,
    l2_advertisement,
    l2_policy,
    new_store,
    patch_metadata,
    pods,
    service,
    start,
    start_realistic,
)

SPEAKER_LABELS = {"app": "metallb", "component": "speaker"}
METALLB = "metallb.io"


def bgp(kind: str, name: str, spec: dict[str, Any], version: str = "v1beta1") -> dict[str, Any]:
    return {"apiVersion": f"{METALLB}/{version}", "kind": kind,
            "metadata": {"name": name, "namespace": "metallb-system"}, "spec": spec}


PEER = {"myASN": 64512, "peerASN": 64513, "peerAddress": "10.0.0.1"}


# --------------------------------------------------------------------------- configuration


def config_error(*objects: dict[str, Any], bgp_type: str = "native") -> str:
    """What a speaker's parse says of the fixtures' config plus ``objects`` (put in its view
    as given: some would not pass the CRDs' schemas, the parser refuses them too)."""
    store = new_store("cluster", "metallb")
    view = Cache()
    view.load(store)
    for index, obj in enumerate(objects):
        obj["metadata"]["resourceVersion"] = str(10_000 + index)
        view.apply(Event("ADDED", obj, None))
    config, error = parse_config(view, "metallb-system", version=(0, 14, 9), bgp_type=bgp_type)
    assert (config is None) == bool(error)
    return error


@pytest.mark.parametrize(("objects", "bgp_type", "why"), [
    ([bgp("BGPPeer", "p", {**PEER, "myASN": 0}, "v1beta2")], "native", "missing local ASN"),
    ([bgp("BGPPeer", "p", {**PEER, "dynamicASN": "external"}, "v1beta2")], "frr",
     "both peer ASN and dynamicASN"),
    ([bgp("BGPPeer", "p", {**PEER, "peerAddress": "router"}, "v1beta2")], "native",
     "invalid BGPPeer address"),
    ([bgp("BGPPeer", "p", {**PEER, "holdTime": "1s"}, "v1beta2")], "native",
     "must be 0 or >=3s"),
    ([bgp("BGPPeer", "p", {**PEER, "bfdProfile": "missing"}, "v1beta2")], "frr",
     "non existing bfd profile"),
    ([bgp("BFDProfile", "fast", {"receiveInterval": 5})], "frr", "10-60000 range"),
    ([bgp("BFDProfile", "fast", {"receiveInterval": 300})], "native",
     "bfd profiles section set"),
    ([bgp("BGPAdvertisement", "a", {"aggregationLength": 33})], "native",
     "invalid aggregation length 33"),
    ([bgp("BGPAdvertisement", "a", {"aggregationLength": 24, "ipAddressPools": ["pool-a"]})],
     "native", "more specific than the aggregation length"),
    ([bgp("BGPAdvertisement", "a", {"communities": ["65536:1"]})], "native",
     "invalid community"),
    ([bgp("BGPAdvertisement", "a", {"communities": ["large:1:2:3"]})], "native",
     "only supports legacy communities"),
    ([bgp("Community", "c", {"communities": [{"name": "x", "value": "1:70000"}]})], "native",
     "parsing community"),
    ([bgp("BGPPeer", "p", PEER, "v1beta2"),
      bgp("BGPPeer", "q", {**PEER, "myASN": 64999, "peerAddress": "10.0.0.2"}, "v1beta2")],
     "frr", "all myAsn must be equal"),
])
def test_the_whole_configuration_is_validated_bgp_kinds_included(
        objects: list[dict[str, Any]], bgp_type: str, why: str) -> None:
    assert why in config_error(*objects, bgp_type=bgp_type)


def test_a_valid_bgp_configuration_parses() -> None:
    assert config_error(bgp("BGPPeer", "p", {**PEER, "bfdProfile": "fast"}, "v1beta2"),
                        bgp("BFDProfile", "fast", {"receiveInterval": 300}),
                        bgp("BGPAdvertisement", "a", {"communities": ["64512:100"]}),
                        bgp_type="frr") == ""


def test_a_speaker_keeps_its_last_valid_config_when_a_bgppeer_makes_it_invalid() -> None:
    """metallb config_controller.go: a failed parse keeps the previous configuration."""
    store = new_store("cluster", "metallb")
    lab = start(store, cilium_lbipam=False, cilium_l2=False)
    store.create(service("web", ips=("192.0.2.3",)))
    lab.run_until_idle()
    assert "192.0.2.3" in lab.announcements()
    store.create(bgp("BGPPeer", "broken", {"myASN": 64512, "peerASN": 64512,
                                           "peerAddress": "10.0.0.1", "ebgpMultiHop": True},
                     "v1beta2"))
    lab.run_until_idle()
    assert "ebgp-multihop parameter set for an ibgp peer" in lab.metallb_speaker.config_error
    store.delete(METALLB, "L2Advertisement", "l2-all", "metallb-system")
    lab.run_until_idle()
    assert "192.0.2.3" in lab.announcements()  # still on the configuration before the peer
    store.create(service("new"))
    lab.run_until_idle()
    assert ips(store, "new") == ["192.0.2.0"]  # the controller allocates from its last config
    store.delete(METALLB, "BGPPeer", "broken", "metallb-system")
    lab.run_until_idle()
    assert lab.announcements() == {}  # valid again, without the L2Advertisement


# --------------------------------------------------------------------------- ServiceL2Status


def pod_speaker_lab() -> tuple[Store, Controllers]:
    store = new_store("cluster", "metallb")
    store.delete("apps", "DaemonSet", "speaker", "metallb-system")
    store.create(daemonset("speaker", "metallb-system", SPEAKER_LABELS,
                           image="quay.io/metallb/speaker:v0.16.1"))
    store.create(service("web", ips=("192.0.2.3",)))
    return store, start(store, cilium_lbipam=False, cilium_l2=False)


def test_service_l2_status_is_owned_by_the_announcing_speakers_pod() -> None:
    store, _lab = pod_speaker_lab()
    (status,) = store.list(METALLB, "ServiceL2Status", "metallb-system")
    node = status["status"]["node"]
    (pod,) = [p for p in pods(store, "metallb-system", component="speaker")
              if p["spec"]["nodeName"] == node]
    (owner,) = status["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == (
        "Pod", pod["metadata"]["name"], pod["metadata"]["uid"])


def test_a_deleted_speaker_pod_takes_its_status_objects_with_it() -> None:
    store, lab = pod_speaker_lab()
    (status,) = store.list(METALLB, "ServiceL2Status", "metallb-system")
    (pod,) = [p for p in pods(store, "metallb-system", component="speaker")
              if p["spec"]["nodeName"] == status["status"]["node"]]
    store.delete("", "Pod", pod["metadata"]["name"], "metallb-system")
    lab.run_until_idle()
    remaining = store.list(METALLB, "ServiceL2Status", "metallb-system")
    assert all(s["metadata"]["name"] != status["metadata"]["name"] for s in remaining)
    # another speaker took over and wrote its own
    assert [s["status"]["node"] for s in remaining] == [
        lab.announcements()["192.0.2.3"].metallb_node]


@pytest.mark.parametrize("seed", range(4))
def test_a_speakers_service_l2_status_goes_only_once_it_stopped_answering(seed: int) -> None:
    """speaker/layer2_controller.go DeleteBalancer: the responder lets go of the IP first
    (internal/layer2/announcer.go), then onStatusChange deletes the ServiceL2Status, so the
    status being gone means the wire is quiet (what the cutover waits for)."""
    store = new_store("cluster", "metallb")
    store.create(service("web", ips=("192.0.2.3",)))
    lab = start_realistic(store, seed=seed, metallb_controller=False, cilium_lbipam=False,
                          cilium_l2=False)
    lab.advance(15)
    assert store.list(METALLB, "ServiceL2Status", "metallb-system")
    assert "192.0.2.3" in lab.announcements()
    store.delete(METALLB, "L2Advertisement", "l2-all", "metallb-system")
    for _ in range(500):
        lab.advance(0.005)
        if not store.list(METALLB, "ServiceL2Status", "metallb-system"):
            break
    assert not store.list(METALLB, "ServiceL2Status", "metallb-system")
    assert "192.0.2.3" not in lab.announcements()


def test_a_speaker_whose_node_lacks_the_named_interface_announces_nothing() -> None:
    """speaker/layer2_controller.go SetBalancer: "the specified interfaces used to announce LB
    IP don't exist": no announcement, no ServiceL2Status."""
    store = new_store("cluster", "metallb")
    store.delete(METALLB, "L2Advertisement", "l2-all", "metallb-system")
    store.create(l2_advertisement("eth1-on-b", interfaces=["eth1"], nodeSelectors=[
        {"matchLabels": {"kubernetes.io/hostname": "node-b"}}]))
    patch_metadata(store, "", "Node", "node-b", None,
                   annotations={INTERFACES_ANNOTATION: "eth0=192.0.2.250/24"})
    lab = start(store, cilium_lbipam=False, cilium_l2=False)
    store.create(service("web", ips=("192.0.2.3",)))
    lab.run_until_idle()
    assert lab.announcements() == {}
    assert any(e[2] == "announceFailed" for e in lab.metallb_speaker.events)
    assert store.list(METALLB, "ServiceL2Status", "metallb-system") == []
    patch_metadata(store, "", "Node", "node-b", None,
                   annotations={INTERFACES_ANNOTATION: "eth0=192.0.2.250/24,eth1"})
    lab.run_until_idle()
    # a MetalLB ARP responder needs no address on its interface (layer2/announcer.go)
    view = lab.announcements()["192.0.2.3"]
    assert (view.metallb_nodes, view.metallb_interfaces) == (("node-b",), ("eth1",))
    (status,) = store.list(METALLB, "ServiceL2Status", "metallb-system")
    assert status["status"]["interfaces"] == [{"name": "eth1"}]


# --------------------------------------------------------------------------- devices


def agent_lab(interfaces: dict[str, str], policy: dict[str, Any],
              config: dict[str, str] | None = None) -> tuple[Store, Controllers]:
    store = new_store("cluster", "cilium", "cilium-agents")
    if config:
        cilium_config = store.get("", "ConfigMap", "cilium-config", "kube-system")
        cilium_config["data"].update(config)
        store.update(cilium_config)
    for node, text in interfaces.items():
        patch_metadata(store, "", "Node", node, None, annotations={INTERFACES_ANNOTATION: text})
    store.create(service("web", ips=("192.0.2.3",)))
    store.create(l2_policy("policy", nodeSelector={
        "matchLabels": {"kubernetes.io/hostname": "node-a"}}, **policy))
    return store, start(store, metallb_controller=False, metallb_speakers=False,
                        cilium_lbipam=False)


def holder(store: Store) -> str:
    lease = store.get("coordination.k8s.io", "Lease", "cilium-l2announce-apps-web", "kube-system")
    return str(lease["spec"]["holderIdentity"])


def test_an_agent_whose_devices_miss_the_policys_interface_takes_the_lease_and_answers_nothing(
) -> None:
    """l2announcer.go: the election runs whatever the devices; desiredEntries are empty."""
    store, lab = agent_lab({"node-a": "eth0=192.0.2.200/24"}, {"interfaces": ["^ens20$"]})
    assert holder(store) == "node-a"
    assert lab.announcements() == {}
    assert lab.record.changes == []


def test_the_matching_device_must_carry_an_address() -> None:
    """cilium/cilium#41641, #31691: no address on the announcing interface, no answer."""
    store, lab = agent_lab({"node-a": "eth0=192.0.2.200/24,ens20"}, {"interfaces": ["^ens20$"]})
    assert holder(store) == "node-a" and lab.announcements() == {}
    patch_metadata(store, "", "Node", "node-a", None,
                   annotations={INTERFACES_ANNOTATION: "eth0=192.0.2.200/24,ens20=10.0.0.1/24"})
    lab.run_until_idle()
    view = lab.announcements()["192.0.2.3"]
    assert (view.cilium_nodes, view.cilium_interfaces) == (("node-a",), ("ens20",))


def test_cilium_config_devices_restrict_the_agent() -> None:
    store, lab = agent_lab({"node-a": "eth0=192.0.2.200/24,ens20=10.0.0.1/24"}, {},
                           config={"devices": "eth0"})
    assert lab.announcements()["192.0.2.3"].cilium_nodes == ("node-a",)
    policy = store.get("cilium.io", "CiliumL2AnnouncementPolicy", "policy")
    policy["spec"]["interfaces"] = ["ens"]  # a regexp match anywhere in the name
    store.update(policy)
    lab.run_until_idle()
    assert holder(store) == "node-a" and lab.announcements() == {}


def test_devices_of_an_agent() -> None:
    node = {"metadata": {"annotations": {
        INTERFACES_ANNOTATION: "lo=127.0.0.1/8,eth0=10.0.0.5/24,lxc12ab=fe80::1/64,eth1"}}}
    assert sorted(agent_devices(node, {}).names) == ["eth0"]  # detected: addressed, not lxc
    assert agent_devices(node, {"devices": "eth+"}).names == {"eth0": True, "eth1": False}
    assert agent_devices(None, {}).anything
    assert parse_interfaces("ens18=10.77.0.11/24,ens20, ,=x")["ens20"].addresses == ()


# --------------------------------------------------------------------------- leases


def lease_load(timing: str, retry: str, services: int = 5, window: float = 60.0) -> Any:
    store = new_store("cluster", "cilium", "cilium-agents")
    config = store.get("", "ConfigMap", "cilium-config", "kube-system")
    config["data"]["l2-announcements-retry-period"] = retry
    store.update(config)
    for index in range(services):
        store.create(service(f"s{index}", ips=(f"192.0.2.{index}",)))
    store.create(l2_policy("all"))
    switches = {"metallb_controller": False, "metallb_speakers": False, "cilium_lbipam": False}
    lab = (start_realistic(store, seed=9, **switches) if timing == "realistic"
           else start(store, **switches))
    lab.advance(10)
    since = lab.now()
    lab.advance(window)
    counts = {verb: lab.requests.count(verb=verb, resource="leases", since=since,
                                       until=since + window)
              for verb in ("GET", "UPDATE")}
    return counts


def test_lease_renewals_and_retries_follow_the_retry_period() -> None:
    """client-go leaderelection: the holder renews every RetryPeriod (one UPDATE), every
    other candidate GETs every RetryPeriod × (1 + 1.2 × rand)."""
    instant = lease_load("instant", "2s")
    assert instant == {"UPDATE": 5 * 30, "GET": 2 * 5 * 30}
    realistic = lease_load("realistic", "2s")
    assert realistic["UPDATE"] == pytest.approx(5 * 30, abs=5)
    assert realistic["GET"] == pytest.approx(2 * 5 * 60 / 3.2, rel=0.2)
    faster = lease_load("realistic", "1s")
    assert faster["UPDATE"] == pytest.approx(2 * realistic["UPDATE"], rel=0.1)


def agents_on_a_daemonset(seed: int) -> tuple[Store, Controllers]:
    store = new_store("cluster", "cilium")
    store.create(daemonset("cilium", "kube-system", {"k8s-app": "cilium"}, grace=10,
                           image="quay.io/cilium/cilium:v1.18.4"))
    store.create(service("web", ips=("192.0.2.3",)))
    store.create(l2_policy("all"))
    lab = start_realistic(store, seed=seed, metallb_controller=False, metallb_speakers=False,
                          cilium_lbipam=False)
    lab.advance(10)
    return store, lab


def test_a_graceful_agent_exit_releases_its_lease_a_killed_one_does_not() -> None:
    """ReleaseOnCancel: an agent that shuts down gives the lease up (empty holder, 1 s)."""
    store, lab = agents_on_a_daemonset(seed=2)
    assert holder(store) in ("node-a", "node-b", "node-c")
    daemon = store.get("apps", "DaemonSet", "cilium", "kube-system")
    daemon["spec"]["template"]["spec"]["nodeSelector"] = {"zone": "nowhere"}
    store.update(daemon)
    lab.advance(15)  # every agent exits within its 10 s grace period
    lease = store.get("coordination.k8s.io", "Lease", "cilium-l2announce-apps-web",
                      "kube-system")
    assert lease["spec"]["holderIdentity"] == "" and lease["spec"]["leaseDurationSeconds"] == 1
    assert lab.announcements() == {}

    store, lab = agents_on_a_daemonset(seed=2)
    first = holder(store)
    lab.set_enabled(lab.cilium_l2, False)  # killed: nothing written
    lab.advance(30)
    assert holder(store) == first
