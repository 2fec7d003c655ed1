"""Cilium L2 announcer model: one lease per Service, renewal on the clock, failover when the
holder's agent pod goes, release when no longer selected [C2]."""

from __future__ import annotations

import threading
from typing import Any

from migrate.lab.models import Controllers
from migrate.lab.models.cilium_l2 import race_order
from migrate.lab.store import Store
from tests.lab.models_support import (
    l2_policy,
    new_store,
    patch_metadata,
    service,
    start,
)

ONLY_L2 = {"metallb_controller": False, "metallb_speakers": False, "cilium_lbipam": False}
LEASE = "cilium-l2announce-apps-web"
AGENT_POD = {"node-a": "cilium-aaaaa", "node-b": "cilium-bbbbb", "node-c": "cilium-ccccc"}
# Who wins the lease first, and next once the first is gone (first come, first served).
FIRST, SECOND, _ = race_order(LEASE, ("node-a", "node-b", "node-c"))
FIRST_EAST, SECOND_EAST = race_order(LEASE, ("node-a", "node-b"))  # the nodes with zone=east


def lease(store: Store, name: str = LEASE) -> Any:
    """The Service's lease as stored (None when absent)."""
    return store.try_get("coordination.k8s.io", "Lease", name, "kube-system")


def l2_lab(**policy_spec: Any) -> tuple[Store, Controllers]:
    store = new_store("cluster", "cilium", "cilium-agents")
    store.create(service("web", ips=("192.0.2.3",), labels={"l2": "yes"}))
    store.create(l2_policy("policy", **policy_spec))
    return store, start(store, **ONLY_L2)


def test_one_lease_per_service_held_by_an_eligible_node() -> None:
    store, lab = l2_lab(nodeSelector={"matchLabels": {"zone": "west"}})
    held = lease(store)
    assert held is not None and held["spec"]["holderIdentity"] == "node-c"
    assert held["spec"]["leaseDurationSeconds"] == 15
    view = lab.announcements()["192.0.2.3"]
    assert (view.cilium_node, view.metallb_node) == ("node-c", None)


def test_holder_renews_on_the_clock() -> None:
    store, lab = l2_lab()
    first = lease(store)["spec"]["renewTime"]
    lab.advance(60)
    held = lease(store)
    assert held["spec"]["renewTime"] > first
    assert held["spec"]["holderIdentity"] == FIRST
    assert held["spec"]["leaseTransitions"] == 0


def test_deleting_the_holders_agent_pod_moves_the_lease_after_it_expires() -> None:
    store, lab = l2_lab()
    assert lease(store)["spec"]["holderIdentity"] == FIRST
    store.delete("", "Pod", AGENT_POD[FIRST], "kube-system")
    lab.advance(5)
    assert lease(store)["spec"]["holderIdentity"] == FIRST  # not expired yet
    assert "192.0.2.3" not in lab.announcements()  # its agent is gone: nobody answers
    lab.advance(20)
    held = lease(store)
    assert held["spec"]["holderIdentity"] == SECOND
    assert held["spec"]["leaseTransitions"] == 1
    assert lab.announcements()["192.0.2.3"].cilium_node == SECOND


def test_service_no_longer_selected_releases_then_garbage_collects_its_lease() -> None:
    store, lab = l2_lab(serviceSelector={"matchLabels": {"l2": "yes"}})
    assert lease(store) is not None
    patch_metadata(store, "", "Service", "web", "apps", labels={"l2": "no"})
    lab.run_until_idle()
    assert lease(store)["spec"]["holderIdentity"] == ""
    assert lab.announcements() == {}
    lab.advance(61)
    assert lease(store) is None


def test_policy_without_load_balancer_ips_announces_nothing() -> None:
    store, lab = l2_lab(loadBalancerIPs=False)
    assert lease(store) is None
    assert lab.announcements() == {}


def test_feature_off_in_cilium_config_means_no_leases() -> None:
    store = new_store("cluster", "cilium", "cilium-agents")
    config = store.get("", "ConfigMap", "cilium-config", "kube-system")
    del config["data"]["enable-l2-announcements"]
    store.update(config)
    store.create(service("web", ips=("192.0.2.3",)))
    store.create(l2_policy("policy"))
    start(store, **ONLY_L2)
    assert lease(store) is None


def test_lease_timings_come_from_cilium_config() -> None:
    store = new_store("cluster", "cilium", "cilium-agents")
    config = store.get("", "ConfigMap", "cilium-config", "kube-system")
    config["data"]["l2-announcements-lease-duration"] = "30s"
    store.update(config)
    store.create(service("web", ips=("192.0.2.3",)))
    store.create(l2_policy("policy", interfaces=["^eth0$"]))
    lab = start(store, **ONLY_L2)
    assert lease(store)["spec"]["leaseDurationSeconds"] == 30
    assert lab.announcements()["192.0.2.3"].cilium_interfaces == ("^eth0$",)
    store.delete("", "Pod", AGENT_POD[FIRST], "kube-system")
    lab.advance(20)
    assert lease(store)["spec"]["holderIdentity"] == FIRST  # 30 s not over yet
    lab.advance(20)
    assert lease(store)["spec"]["holderIdentity"] == SECOND


def test_holder_leaving_the_policys_node_selector_hands_the_lease_over() -> None:
    store, lab = l2_lab(nodeSelector={"matchLabels": {"zone": "east"}})
    assert lease(store)["spec"]["holderIdentity"] == FIRST_EAST
    patch_metadata(store, "", "Node", FIRST_EAST, None, labels={"zone": "south"})
    lab.run_until_idle()
    assert lease(store)["spec"]["holderIdentity"] == ""  # released at once
    lab.advance(2)
    assert lease(store)["spec"]["holderIdentity"] == SECOND_EAST
    assert lab.announcements()["192.0.2.3"].cilium_node == SECOND_EAST


def test_writes_from_another_thread_are_queued_for_the_models() -> None:
    store, lab = l2_lab()
    writer = threading.Thread(
        target=lambda: store.create(service("api", ips=("192.0.2.4",))))
    writer.start()
    writer.join()
    assert lab.pending() > 0
    lab.run_until_idle()
    assert lease(store, "cilium-l2announce-apps-api") is not None


def test_services_sharing_an_ip_elect_their_holders_apart() -> None:
    """cilium/cilium#48419: one election per Service, so two nodes can answer for one IP."""
    store = new_store("cluster", "cilium", "cilium-agents")
    nodes = ("node-a", "node-b", "node-c")
    names = [f"dns-{n}" for n in range(12)]
    for name in names:
        store.create(service(name, ips=("192.0.2.53",)))
    store.create(l2_policy("policy"))
    lab = start(store, **ONLY_L2)
    holders = {name: lease(store, f"cilium-l2announce-apps-{name}")["spec"]["holderIdentity"]
               for name in names}
    assert holders == {name: race_order(f"cilium-l2announce-apps-{name}", nodes)[0]
                       for name in names}
    assert len(set(holders.values())) > 1
    assert set(lab.announcements()["192.0.2.53"].cilium_nodes) == set(holders.values())
