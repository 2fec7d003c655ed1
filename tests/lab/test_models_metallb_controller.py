"""MetalLB controller model: allocation, re-adoption, clearing, webhook [M2][M6][M8][M10]."""

from __future__ import annotations

from typing import Any

import pytest

from migrate.lab.models import Controllers
from migrate.lab.store import ApiError, Store
from tests.lab.models_support import (
    ips,
    load,
    metallb_pool,
    new_store,
    scale,
    service,
    start,
    writes_by,
)

ONLY_METALLB = {"cilium_lbipam": False, "cilium_l2": False}


def test_allocates_lowest_free_address_and_records_the_pool() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    store.create(service("taken", ips=("192.0.2.0",)))
    store.create(service("web"))
    lab.run_until_idle()
    # [M2] every address of a CIDR is allocatable, lowest free first (.0 is taken)
    assert ips(store, "web") == ["192.0.2.1"]
    web = store.get("", "Service", "web", "apps")
    assert web["metadata"]["annotations"]["metallb.io/ip-allocated-from-pool"] == "pool-a"
    assert ("apps/web", (), ("192.0.2.1",)) in writes_by(store, "metallb-controller")


def test_new_prefix_annotation_wins_over_the_legacy_one() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    store.create(service("web", annotations={
        "metallb.universe.tf/loadBalancerIPs": "192.0.2.9",
        "metallb.io/loadBalancerIPs": "192.0.2.7"}))
    store.create(service("legacy", annotations={"metallb.universe.tf/loadBalancerIPs":
                                                "192.0.2.8"}))
    lab.run_until_idle()
    assert ips(store, "web") == ["192.0.2.7"]
    assert ips(store, "legacy") == ["192.0.2.8"]


def test_spec_load_balancer_ip_and_the_conflicting_pair() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    store.create(service("pinned", loadBalancerIP="192.0.2.11"))
    store.create(service("both", loadBalancerIP="192.0.2.12",
                         annotations={"metallb.io/loadBalancerIPs": "192.0.2.13"}))
    lab.run_until_idle()
    assert ips(store, "pinned") == ["192.0.2.11"]
    assert ips(store, "both") == []  # [M6] both set is an error: nothing changes
    reasons = [e[2] for e in lab.metallb_controller.events if e[1] == "apps/both"]
    assert "LoadBalancerFailed" in reasons


def test_auto_assign_false_pool_only_serves_explicit_requests() -> None:
    store = new_store("cluster", "metallb")
    store.create(metallb_pool("manual", "198.51.100.0/30", autoAssign=False))
    lab = start(store, **ONLY_METALLB)
    store.create(service("auto"))
    store.create(service("chosen", annotations={"metallb.io/address-pool": "manual"}))
    lab.run_until_idle()
    assert ips(store, "auto") == ["192.0.2.0"]
    assert ips(store, "chosen") == ["198.51.100.0"]


def test_service_allocation_namespaces_and_priority() -> None:
    store = new_store("cluster", "metallb")
    store.create(metallb_pool("apps-low", "198.51.100.0/30",
                              serviceAllocation={"priority": 20, "namespaces": ["apps"]}))
    store.create(metallb_pool("apps-high", "203.0.113.0/30",
                              serviceAllocation={"priority": 10, "namespaces": ["apps"]}))
    lab = start(store, **ONLY_METALLB)
    store.create(service("web"))
    store.create(service("other", namespace="default"))
    lab.run_until_idle()
    assert ips(store, "web") == ["203.0.113.0"]  # lower priority number first
    assert ips(store, "other", "default") == ["192.0.2.0"]  # not matched: fallback pool


def test_sharing_needs_same_key_and_distinct_ports() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    shared = {"metallb.io/allow-shared-ip": "k", "metallb.io/loadBalancerIPs": "192.0.2.4"}
    store.create(service("http", ports=(80,), annotations=shared))
    store.create(service("dns", ports=(53,), annotations=shared))
    store.create(service("clash", ports=(80,), annotations=shared))
    store.create(service("nokey", annotations={"metallb.io/loadBalancerIPs": "192.0.2.4"}))
    lab.run_until_idle()
    assert ips(store, "http") == ips(store, "dns") == ["192.0.2.4"]
    assert ips(store, "clash") == []  # port 80/TCP used by both
    assert ips(store, "nokey") == []


def test_avoid_buggy_ips_skips_dot_zero() -> None:
    store = new_store("cluster")
    load(store, "metallb")
    pool = store.get("metallb.io", "IPAddressPool", "pool-a", "metallb-system")
    pool["spec"]["avoidBuggyIPs"] = True
    store.update(pool)
    lab = start(store, **ONLY_METALLB)
    store.create(service("web"))
    lab.run_until_idle()
    assert ips(store, "web") == ["192.0.2.1"]


def test_restart_readopts_status_ips_before_allocating() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    scale(store, "metallb-system", "controller", 0)
    lab.run_until_idle()
    # while stopped: a new Service gets nothing [M8]; two others carry IPs in status
    store.create(service("new"))
    store.create(service("old-1", ips=("192.0.2.0",)))
    store.create(service("old-2", ips=("192.0.2.1",)))
    lab.run_until_idle()
    assert ips(store, "new") == []
    scale(store, "metallb-system", "controller", 1)
    lab.run_until_idle()
    # [M6] already-assigned Services are re-adopted first: the new one cannot take their IPs
    assert ips(store, "old-1") == ["192.0.2.0"]
    assert ips(store, "old-2") == ["192.0.2.1"]
    assert ips(store, "new") == ["192.0.2.2"]


def test_controller_started_with_no_pools_clears_every_ip() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    store.create(service("web"))
    store.create(service("db"))
    lab.run_until_idle()
    assert ips(store, "web") and ips(store, "db")
    scale(store, "metallb-system", "controller", 0)
    store.delete("metallb.io", "IPAddressPool", "pool-a", "metallb-system")
    lab.run_until_idle()
    assert ips(store, "web") and ips(store, "db")  # frozen: nothing touched
    scale(store, "metallb-system", "controller", 1)
    lab.run_until_idle()
    assert ips(store, "web") == [] and ips(store, "db") == []  # [M2] the trap
    web = store.get("", "Service", "web", "apps")
    assert "metallb.io/ip-allocated-from-pool" not in web["metadata"].get("annotations", {})


def test_pool_edit_renumbers_a_service_whose_ip_left_every_pool() -> None:
    store = new_store("cluster", "metallb")
    store.create(metallb_pool("pool-b", "198.51.100.0/30"))
    lab = start(store, **ONLY_METALLB)
    store.create(service("web", annotations={"metallb.io/address-pool": "pool-b"}))
    lab.run_until_idle()
    assert ips(store, "web") == ["198.51.100.0"]
    pool = store.get("metallb.io", "IPAddressPool", "pool-b", "metallb-system")
    pool["spec"]["addresses"] = ["198.51.100.8/30"]
    store.update(pool)
    lab.run_until_idle()
    assert ips(store, "web") == ["198.51.100.8"]  # [M2] v0.14+: cleared and reallocated


def test_class_services_are_ignored() -> None:
    store = new_store("cluster", "metallb")
    lab = start(store, **ONLY_METALLB)
    store.create(service("cilium-owned", lb_class="io.cilium/l2-announcer"))
    lab.run_until_idle()
    assert ips(store, "cilium-owned") == []


# --------------------------------------------------------------------------- webhook


@pytest.fixture()
def webhook_lab() -> tuple[Store, Controllers]:
    store = new_store("cluster", "metallb", "metallb-webhook")
    lab = start(store, **ONLY_METALLB)
    return store, lab


def test_webhook_rejects_writes_while_the_controller_is_down(
    webhook_lab: tuple[Store, Controllers],
) -> None:
    store, lab = webhook_lab
    scale(store, "metallb-system", "controller", 0)
    lab.run_until_idle()  # the pod is Terminating: the webhook Service has no endpoint left
    with pytest.raises(ApiError) as created:
        store.create(metallb_pool("pool-b", "198.51.100.0/24"))
    assert created.value.status == 500
    assert "failed calling webhook" in created.value.message
    assert "connection refused" in created.value.message
    pool = store.get("metallb.io", "IPAddressPool", "pool-a", "metallb-system")
    pool["spec"]["addresses"] = ["192.0.2.0/27"]
    with pytest.raises(ApiError):
        store.update(pool)
    # deletes are not intercepted
    store.delete("metallb.io", "L2Advertisement", "l2-all", "metallb-system")
    assert store.try_get("metallb.io", "L2Advertisement", "l2-all", "metallb-system") is None


def test_ignore_failure_policy_bypasses_the_down_webhook(
    webhook_lab: tuple[Store, Controllers],
) -> None:
    store, lab = webhook_lab
    scale(store, "metallb-system", "controller", 0)
    lab.run_until_idle()
    config = store.get("admissionregistration.k8s.io", "ValidatingWebhookConfiguration",
                       "metallb-webhook-configuration")
    for webhook in config["webhooks"]:
        webhook["failurePolicy"] = "Ignore"
    store.update(config)
    store.create(metallb_pool("pool-b", "198.51.100.0/24"))
    assert store.try_get("metallb.io", "IPAddressPool", "pool-b", "metallb-system")


def test_no_webhook_configuration_means_no_interception() -> None:
    store = new_store("cluster", "metallb")
    start(store, **ONLY_METALLB)
    scale(store, "metallb-system", "controller", 0)
    store.create(metallb_pool("pool-b", "198.51.100.0/24"))


@pytest.mark.parametrize(("body", "why"), [
    (metallb_pool("overlap", "192.0.2.8/29"), "overlaps"),
    (metallb_pool("bare", "198.51.100.1"), "invalid CIDR"),
    (metallb_pool("reversed", "198.51.100.9-198.51.100.1"), "invalid IP range"),
    ({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
      "metadata": {"name": "dup", "namespace": "metallb-system"},
      "spec": {"ipAddressPools": ["pool-a", "pool-a"]}}, "duplicate"),
    ({**metallb_pool("elsewhere", "198.51.100.0/24"),
      "metadata": {"name": "elsewhere", "namespace": "apps"}}, "must be created in"),
])
def test_running_webhook_validates_the_config(
    webhook_lab: tuple[Store, Controllers], body: dict[str, Any], why: str
) -> None:
    store, _ = webhook_lab
    with pytest.raises(ApiError) as denied:
        store.create(body)
    assert denied.value.status == 403
    assert "denied the request" in denied.value.message and why in denied.value.message


def test_dual_stack_services_get_one_address_per_family() -> None:
    store = new_store("cluster", "metallb")
    store.create(metallb_pool("dual", "198.51.100.0/30", "2001:db8::/126",
                              autoAssign=False))
    lab = start(store, **ONLY_METALLB)
    dual = {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "RequireDualStack"}
    store.create(service("both", annotations={"metallb.io/address-pool": "dual"}, **dual))
    store.create(service("v4-pool-only", annotations={"metallb.io/address-pool": "pool-a"},
                         **dual))
    store.create(service("prefer", annotations={"metallb.io/address-pool": "pool-a"},
                         ipFamilies=["IPv4", "IPv6"], ipFamilyPolicy="PreferDualStack"))
    lab.run_until_idle()
    assert ips(store, "both") == ["198.51.100.0", "2001:db8::"]
    assert ips(store, "v4-pool-only") == []  # [M6] RequireDualStack needs both families
    assert ips(store, "prefer") == ["192.0.2.0"]  # takes what the pool has


def test_namespace_selectors_of_service_allocation() -> None:
    store = new_store("cluster", "metallb")
    store.create(metallb_pool("web-teams", "198.51.100.0/30", serviceAllocation={
        "namespaceSelectors": [{"matchLabels": {"team": "web"}}]}))
    lab = start(store, **ONLY_METALLB)
    store.create(service("in-web-ns"))  # namespace apps carries team=web
    store.create(service("elsewhere", namespace="default"))
    lab.run_until_idle()
    assert ips(store, "in-web-ns") == ["198.51.100.0"]
    assert ips(store, "elsewhere", "default") == ["192.0.2.0"]


def test_deleting_one_pool_while_running_moves_its_services() -> None:
    store = new_store("cluster", "metallb")
    store.create(metallb_pool("pool-b", "198.51.100.0/30", autoAssign=False))
    lab = start(store, **ONLY_METALLB)
    store.create(service("web", ips=("198.51.100.2",)))
    lab.run_until_idle()
    assert ips(store, "web") == ["198.51.100.2"]  # adopted from status
    store.delete("metallb.io", "IPAddressPool", "pool-b", "metallb-system")
    lab.run_until_idle()
    assert ips(store, "web") == ["192.0.2.0"]  # [M2] cleared and reallocated elsewhere


def test_legacy_configmap_is_the_configuration_before_0_13() -> None:
    store = new_store("cluster", "metallb-legacy")
    store.create(service("old", ips=("192.0.2.7",)))
    lab = start(store, **ONLY_METALLB)
    store.create(service("new", annotations={"metallb.universe.tf/address-pool": "default"}))
    lab.run_until_idle()
    assert lab.metallb_controller.legacy
    assert ips(store, "old") == ["192.0.2.7"]  # re-adopted from the ConfigMap's pool
    assert ips(store, "new") == ["192.0.2.0"]


def test_before_0_14_a_config_orphaning_an_ip_is_refused_as_stale() -> None:
    store = new_store("cluster", "metallb-legacy")
    store.create(service("old", ips=("192.0.2.7",)))
    lab = start(store, **ONLY_METALLB)
    config = store.get("", "ConfigMap", "config", "metallb-system")
    config["data"]["config"] = "address-pools:\n- {name: other, protocol: layer2, " \
        "addresses: [203.0.113.0/28]}\n"
    store.update(config)
    lab.run_until_idle()
    assert ips(store, "old") == ["192.0.2.7"]  # [M2] pre-0.14: stale config, IP kept
    assert any(e[2] == "ConfigStale" for e in lab.metallb_controller.events)


def test_lb_class_flag_switches_which_services_are_handled() -> None:
    store = new_store("cluster", "metallb")
    controller = store.get("apps", "Deployment", "controller", "metallb-system")
    controller["spec"]["template"] = {"spec": {"containers": [
        {"name": "controller", "image": "quay.io/metallb/controller:v0.14.9",
         "args": ["--lb-class=metallb"]}]}}
    store.update(controller)
    lab = start(store, **ONLY_METALLB)
    store.create(service("classless"))
    store.create(service("classed", lb_class="metallb"))
    lab.run_until_idle()
    assert ips(store, "classless") == []  # [M6] flag set: only that class
    assert ips(store, "classed") == ["192.0.2.0"]
