"""Cilium L2 announcer model: one lease per Service, renewal on the clock, failover when the
holder's agent pod goes, release when no longer selected [C2]."""

from __future__ import annotations

import threading
from typing import Any

from migrate.lab.models import Controllers
from migrate.lab.store import Store
from tests.lab.models_support import (
    l2_policy,
    new_store,
    patch_metadata,
    service,
    start,
)

ONLY_L2 = {"metallb_controller": False, "metallb_speakers": False, "cilium_lbipam": False}


def lease(store: Store, name: str = "cilium-l2announce-apps-web") -> Any:
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
    assert held["spec"]["holderIdentity"] == "node-a"
    assert held["spec"]["leaseTransitions"] == 0


def test_deleting_the_holders_agent_pod_moves_the_lease_after_it_expires() -> None:
    store, lab = l2_lab()
    assert lease(store)["spec"]["holderIdentity"] == "node-a"
    store.delete("", "Pod", "cilium-aaaaa", "kube-system")
    lab.advance(5)
    assert lease(store)["spec"]["holderIdentity"] == "node-a"  # not expired yet
    assert "192.0.2.3" not in lab.announcements()  # its agent is gone: nobody answers
    lab.advance(20)
    held = lease(store)
    assert held["spec"]["holderIdentity"] == "node-b"
    assert held["spec"]["leaseTransitions"] == 1
    assert lab.announcements()["192.0.2.3"].cilium_node == "node-b"


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
    store.delete("", "Pod", "cilium-aaaaa", "kube-system")
    lab.advance(20)
    assert lease(store)["spec"]["holderIdentity"] == "node-a"  # 30 s not over yet
    lab.advance(20)
    assert lease(store)["spec"]["holderIdentity"] == "node-b"


def test_holder_leaving_the_policys_node_selector_hands_the_lease_over() -> None:
    store, lab = l2_lab(nodeSelector={"matchLabels": {"zone": "east"}})
    assert lease(store)["spec"]["holderIdentity"] == "node-a"
    patch_metadata(store, "", "Node", "node-a", None, labels={"zone": "south"})
    lab.run_until_idle()
    assert lease(store)["spec"]["holderIdentity"] == ""  # released at once
    lab.advance(2)
    assert lease(store)["spec"]["holderIdentity"] == "node-b"
    assert lab.announcements()["192.0.2.3"].cilium_node == "node-b"


def test_writes_from_another_thread_are_queued_for_the_models() -> None:
    store, lab = l2_lab()
    writer = threading.Thread(
        target=lambda: store.create(service("api", ips=("192.0.2.4",))))
    writer.start()
    writer.join()
    assert lab.pending() > 0
    lab.run_until_idle()
    assert lease(store, "cilium-l2announce-apps-api") is not None
