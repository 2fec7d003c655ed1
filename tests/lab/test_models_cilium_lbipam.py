"""Cilium LB-IPAM model: dormancy, stripOrImportIngresses, start-up order, conditions,
conflicts, pool deletion [C1][C1.1]–[C1.5]."""

from __future__ import annotations

from migrate.lab.models import Controllers
from migrate.lab.store import Store
from tests.lab.models_support import (
    cilium_pool,
    condition,
    ips,
    new_store,
    patch_metadata,
    scale,
    service,
    start,
    writes_by,
)

ONLY_LBIPAM = {"metallb_controller": False, "metallb_speakers": False, "cilium_l2": False}
MANAGER = "cilium-operator-lb-ipam"
SATISFIED = "cilium.io/IPAMRequestSatisfied"


def two_services_lab() -> tuple[Store, Controllers]:
    """Services holding MetalLB-assigned IPs from two different ranges."""
    store = new_store("cluster", "cilium")
    store.create(service("a", ips=("192.0.2.5",)))
    store.create(service("b", ips=("198.51.100.7",)))
    return store, start(store, **ONLY_LBIPAM)


def test_dormant_until_the_first_pool() -> None:
    store, lab = two_services_lab()
    store.create(service("c"))
    lab.run_until_idle()
    assert ips(store, "c") == []
    assert condition(store.get("", "Service", "c", "apps"), SATISFIED) is None
    assert writes_by(store, MANAGER) == []


def test_first_pool_strips_a_service_whose_own_pool_does_not_exist_yet() -> None:
    store, lab = two_services_lab()
    store.create(cilium_pool("wide", "192.0.2.0/24"))
    lab.run_until_idle()
    store.create(cilium_pool("b-pool", "198.51.100.0/24"))
    lab.run_until_idle()
    assert ips(store, "a") == ["192.0.2.5"]  # imported
    # [C1.4] b's IP was in no pool when the first pool arrived: stripped and re-addressed
    assert ips(store, "b") != ["198.51.100.7"]
    assert ("apps/b", ("198.51.100.7",), tuple(ips(store, "b"))) in writes_by(store, MANAGER)


def test_pools_created_back_to_back_are_still_processed_one_event_at_a_time() -> None:
    store, lab = two_services_lab()
    store.create(cilium_pool("wide", "192.0.2.0/24"))
    store.create(cilium_pool("b-pool", "198.51.100.0/24"))
    lab.run_until_idle()
    assert ips(store, "b") != ["198.51.100.7"]


def test_pools_created_while_the_operator_is_down_are_all_loaded_first() -> None:
    store, lab = two_services_lab()
    scale(store, "kube-system", "cilium-operator", 0)
    store.create(cilium_pool("wide", "192.0.2.0/24"))
    store.create(cilium_pool("b-pool", "198.51.100.0/24"))
    lab.run_until_idle()
    assert writes_by(store, MANAGER) == []  # writes only with replicas
    scale(store, "kube-system", "cilium-operator", 1)
    lab.run_until_idle()
    assert ips(store, "a") == ["192.0.2.5"]
    assert ips(store, "b") == ["198.51.100.7"]
    assert writes_by(store, MANAGER) == []  # nothing stripped, nothing moved
    assert lab.cilium_lbipam.allocations() == {"apps/a": ["192.0.2.5"],
                                               "apps/b": ["198.51.100.7"]}


def test_allocation_writes_the_satisfied_condition_and_pool_counts() -> None:
    store, lab = two_services_lab()
    store.create(cilium_pool("wide", "192.0.2.0/24"))
    store.create(service("new"))
    lab.run_until_idle()
    (new_ip,) = ips(store, "new")
    assert new_ip.startswith("192.0.2.") and new_ip != "192.0.2.5"
    cond = condition(store.get("", "Service", "new", "apps"), SATISFIED)
    assert cond is not None and (cond["status"], cond["reason"]) == ("True", "satisfied")
    pool = store.get("cilium.io", "CiliumLoadBalancerIPPool", "wide")
    # a and new (b was stripped and re-addressed from this pool too)
    assert condition(pool, "cilium.io/IPsUsed")["message"] == "3"
    assert condition(pool, "cilium.io/IPsTotal")["message"] == "256"
    assert condition(pool, "cilium.io/IPsAvailable")["message"] == "253"
    assert condition(pool, "cilium.io/PoolConflict")["status"] == "False"


def test_no_matching_pool_leaves_the_service_empty_with_a_reason() -> None:
    store, lab = two_services_lab()
    store.create(cilium_pool("only-web", "192.0.2.0/24",
                             selector={"matchLabels": {"tier": "web"}}))
    lab.run_until_idle()
    for name in ("a", "b"):
        assert ips(store, name) == []
        cond = condition(store.get("", "Service", name, "apps"), SATISFIED)
        assert cond is not None and (cond["status"], cond["reason"]) == ("False", "no_pool")
    # labelling a matches the selector: it gets an IP again (not necessarily its old one)
    patch_metadata(store, "", "Service", "a", "apps", labels={"tier": "web"})
    lab.run_until_idle()
    assert ips(store, "a")


def test_pseudo_labels_select_by_namespace_and_name() -> None:
    store, lab = two_services_lab()
    store.create(cilium_pool("a-only", "192.0.2.0/24", selector={
        "matchLabels": {"io.kubernetes.service.namespace": "apps",
                        "io.kubernetes.service.name": "a"}}))
    lab.run_until_idle()
    assert ips(store, "a") == ["192.0.2.5"]
    assert ips(store, "b") == []


def test_requested_ips_are_imported_or_allocated() -> None:
    store = new_store("cluster", "cilium")
    store.create(service("pinned", ips=("192.0.2.5",),
                         annotations={"lbipam.cilium.io/ips": "192.0.2.5"}))
    store.create(service("wants", annotations={"io.cilium/lb-ipam-ips": "192.0.2.9"}))
    store.create(service("wrong", ips=("192.0.2.6",),
                         annotations={"lbipam.cilium.io/ips": "192.0.2.7"}))
    store.create(service("outside", annotations={"lbipam.cilium.io/ips": "203.0.113.1"}))
    lab = start(store, **ONLY_LBIPAM)
    store.create(cilium_pool("wide", "192.0.2.0/24"))
    lab.run_until_idle()
    assert ips(store, "pinned") == ["192.0.2.5"]
    assert ips(store, "wants") == ["192.0.2.9"]
    assert ips(store, "wrong") == ["192.0.2.7"]  # unrequested ingress stripped
    cond = condition(store.get("", "Service", "outside", "apps"), SATISFIED)
    assert cond is not None and cond["reason"] == "no_pool" and "203.0.113.1" in cond["message"]


def test_allow_first_last_ips() -> None:
    store = new_store("cluster", "cilium")
    store.create(service("net", ips=("192.0.2.0",)))
    store.create(service("host", ips=("198.51.100.9",)))
    lab = start(store, **ONLY_LBIPAM)
    store.create(cilium_pool("no-first-last", "192.0.2.0/24", "198.51.100.9/32",
                             allowFirstLastIPs="No"))
    lab.run_until_idle()
    # "No" reserves .0/.255 of the /24 (the imported .0 is stripped); ignored for a /32
    assert ips(store, "net") == ["192.0.2.1"]
    assert ips(store, "host") == ["198.51.100.9"]
    store2 = new_store("cluster", "cilium")
    store2.create(service("net", ips=("192.0.2.0",)))
    lab2 = start(store2, **ONLY_LBIPAM)
    store2.create(cilium_pool("default", "192.0.2.0/24"))  # unset = "Yes" since 1.16
    lab2.run_until_idle()
    assert ips(store2, "net") == ["192.0.2.0"]


def test_disabled_pool_does_not_protect_foreign_ips() -> None:
    store, lab = two_services_lab()
    store.create(cilium_pool("off", "192.0.2.0/24", disabled=True))
    lab.run_until_idle()
    assert ips(store, "a") == []
    cond = condition(store.get("", "Service", "a", "apps"), SATISFIED)
    assert cond is not None and cond["reason"] == "no_pool"


def test_pool_conflict_marks_the_newer_pool() -> None:
    store, lab = two_services_lab()
    store.create(cilium_pool("older", "192.0.2.0/24"))
    lab.run_until_idle()
    lab.advance(5)
    store.create(cilium_pool("newer", "192.0.2.128/25"))
    lab.run_until_idle()
    newer = condition(store.get("cilium.io", "CiliumLoadBalancerIPPool", "newer"),
                      "cilium.io/PoolConflict")
    older = condition(store.get("cilium.io", "CiliumLoadBalancerIPPool", "older"),
                      "cilium.io/PoolConflict")
    assert newer is not None and (newer["status"], newer["reason"]) == ("True", "cidr_overlap")
    assert "older" in newer["message"]
    assert older is not None and older["status"] == "False"
    store.delete("cilium.io", "CiliumLoadBalancerIPPool", "older")
    lab.run_until_idle()
    newer = condition(store.get("cilium.io", "CiliumLoadBalancerIPPool", "newer"),
                      "cilium.io/PoolConflict")
    assert newer is not None and (newer["status"], newer["reason"]) == ("False", "resolved")


def test_deleting_pools_while_running_clears_their_ips() -> None:
    store, lab = two_services_lab()
    scale(store, "kube-system", "cilium-operator", 0)
    store.create(cilium_pool("a-pool", "192.0.2.0/24",
                             selector={"matchLabels": {"io.kubernetes.service.name": "a"}}))
    store.create(cilium_pool("b-pool", "198.51.100.0/24"))
    scale(store, "kube-system", "cilium-operator", 1)
    lab.run_until_idle()
    assert ips(store, "b") == ["198.51.100.7"]
    store.delete("cilium.io", "CiliumLoadBalancerIPPool", "b-pool")
    lab.run_until_idle()
    assert ips(store, "b") == []  # [C1.4] no other pool matches: left without IP
    store.delete("cilium.io", "CiliumLoadBalancerIPPool", "a-pool")
    lab.run_until_idle()
    assert ips(store, "a") == []
    assert lab.cilium_lbipam.dormant


def test_deleting_pools_while_stopped_keeps_every_ip() -> None:
    store, lab = two_services_lab()
    store.create(cilium_pool("a-pool", "192.0.2.0/24"))
    store.create(cilium_pool("b-pool", "198.51.100.0/24"))
    scale(store, "kube-system", "cilium-operator", 0)
    store.create(service("c", ips=("192.0.2.77",)))
    lab.run_until_idle()
    before = {n: ips(store, n) for n in ("a", "b", "c")}
    store.delete("cilium.io", "CiliumLoadBalancerIPPool", "a-pool")
    store.delete("cilium.io", "CiliumLoadBalancerIPPool", "b-pool")
    scale(store, "kube-system", "cilium-operator", 1)
    lab.run_until_idle()
    assert {n: ips(store, n) for n in ("a", "b", "c")} == before  # dormant: touches nothing


def test_sharing_key_shares_an_address_between_compatible_services() -> None:
    store = new_store("cluster", "cilium")
    lab = start(store, **ONLY_LBIPAM)
    store.create(cilium_pool("wide", "192.0.2.0/24"))
    key = {"lbipam.cilium.io/sharing-key": "k"}
    store.create(service("http", ports=(80,), annotations=key))
    store.create(service("https", ports=(443,), annotations=key))
    store.create(service("clash", ports=(80,), annotations=key))
    lab.run_until_idle()
    assert ips(store, "http") == ips(store, "https")
    assert ips(store, "clash") and ips(store, "clash") != ips(store, "http")


def test_responsibility_rules() -> None:
    store = new_store("cluster", "cilium")
    config = store.get("", "ConfigMap", "cilium-config", "kube-system")
    config["data"]["default-lb-service-ipam"] = "none"
    store.update(config)
    store.create(service("classless"))
    store.create(service("l2", lb_class="io.cilium/l2-announcer"))
    store.create(service("other", lb_class="example.com/lb"))
    lab = start(store, **ONLY_LBIPAM)
    store.create(cilium_pool("wide", "192.0.2.0/24"))
    lab.run_until_idle()
    assert ips(store, "classless") == []  # [C1.1] 2. default IPAM is not lbipam
    assert ips(store, "l2")  # 3. its class is accepted when L2 announcements are on
    assert ips(store, "other") == []


def test_shrinking_a_pool_renumbers_only_the_services_outside_it() -> None:
    store, lab = two_services_lab()
    store.create(cilium_pool("wide", "192.0.2.0/24", "198.51.100.0/24"))
    lab.run_until_idle()
    assert ips(store, "b") == ["198.51.100.7"]
    pool = store.get("cilium.io", "CiliumLoadBalancerIPPool", "wide")
    pool["spec"]["blocks"] = [{"cidr": "192.0.2.0/24"}]
    store.update(pool)
    lab.run_until_idle()
    assert ips(store, "a") == ["192.0.2.5"]
    assert ips(store, "b") != ["198.51.100.7"] and ips(store, "b")[0].startswith("192.0.2.")


def test_a_service_that_stops_being_lbipams_is_emptied() -> None:
    store, lab = two_services_lab()
    store.create(cilium_pool("wide", "192.0.2.0/24"))
    store.create(service("new"))
    lab.run_until_idle()
    assert ips(store, "new")
    svc = store.get("", "Service", "new", "apps")
    svc["spec"]["type"] = "ClusterIP"
    store.update(svc)
    lab.run_until_idle()
    svc = store.get("", "Service", "new", "apps")
    assert ips(store, "new") == []
    assert condition(svc, SATISFIED) is None  # [C1.4] condition removed for the next owner


def test_ipv6_ingress_is_stripped_unless_ipv6_is_enabled() -> None:
    store = new_store("cluster", "cilium")
    dual = {"ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack"}
    store.create(service("dual", ips=("192.0.2.5", "2001:db8::5"), **dual))
    lab = start(store, **ONLY_LBIPAM)
    store.create(cilium_pool("dual", "192.0.2.0/24", "2001:db8::/64"))
    lab.run_until_idle()
    assert ips(store, "dual") == ["192.0.2.5"]  # enable-ipv6 absent = false
    store2 = new_store("cluster", "cilium")
    config = store2.get("", "ConfigMap", "cilium-config", "kube-system")
    config["data"]["enable-ipv6"] = "true"
    store2.update(config)
    store2.create(service("dual", ips=("192.0.2.5", "2001:db8::5"), **dual))
    lab2 = start(store2, **ONLY_LBIPAM)
    store2.create(cilium_pool("dual", "192.0.2.0/24", "2001:db8::/64"))
    lab2.run_until_idle()
    assert ips(store2, "dual") == ["192.0.2.5", "2001:db8::5"]


def test_requested_ip_conditions_name_the_reason() -> None:
    store = new_store("cluster", "cilium")
    lab = start(store, **ONLY_LBIPAM)
    store.create(cilium_pool("web-only", "192.0.2.0/24",
                             selector={"matchLabels": {"tier": "web"}}))
    store.create(service("holder", labels={"tier": "web"},
                         annotations={"lbipam.cilium.io/ips": "192.0.2.9"}))
    store.create(service("second", labels={"tier": "web"},
                         annotations={"lbipam.cilium.io/ips": "192.0.2.9"}))
    store.create(service("unselected", annotations={"lbipam.cilium.io/ips": "192.0.2.10"}))
    lab.run_until_idle()
    assert ips(store, "holder") == ["192.0.2.9"]
    reasons = {name: condition(store.get("", "Service", name, "apps"), SATISFIED)
               for name in ("second", "unselected")}
    assert reasons["second"] is not None and reasons["second"]["reason"] == "already_allocated"
    assert reasons["unselected"] is not None
    assert reasons["unselected"]["reason"] == "pool_selector_mismatch"
    assert ips(store, "second") == [] and ips(store, "unselected") == []


def test_sharing_across_namespaces_needs_consent_on_both_sides() -> None:
    store = new_store("cluster", "cilium")
    lab = start(store, **ONLY_LBIPAM)
    store.create(cilium_pool("wide", "192.0.2.0/24"))
    key = {"lbipam.cilium.io/sharing-key": "k", "lbipam.cilium.io/ips": "192.0.2.9"}
    store.create(service("first", ports=(80,), annotations=key))
    store.create(service("other-ns", namespace="default", ports=(443,), annotations=key))
    lab.run_until_idle()
    cond = condition(store.get("", "Service", "other-ns", "default"), SATISFIED)
    assert cond is not None and cond["reason"] == "already_allocated_incompatible_service"
    for name, namespace, allowed in (("first", "apps", "default"), ("other-ns", "default", "*")):
        patch_metadata(store, "", "Service", name, namespace, annotations={
            "lbipam.cilium.io/sharing-cross-namespace": allowed})
    lab.run_until_idle()
    assert ips(store, "other-ns", "default") == ips(store, "first") == ["192.0.2.9"]


def test_tcp_and_udp_on_one_port_share_only_with_protocol_differentiation() -> None:
    def shared_dns(proto_diff: str | None) -> list[list[str]]:
        store = new_store("cluster", "cilium")
        if proto_diff is not None:
            config = store.get("", "ConfigMap", "cilium-config", "kube-system")
            config["data"]["bpf-lb-proto-diff"] = proto_diff
            store.update(config)
        key = {"lbipam.cilium.io/sharing-key": "dns", "lbipam.cilium.io/ips": "192.0.2.53"}
        for proto in ("TCP", "UDP"):
            body = service(f"dns-{proto.lower()}", ips=("192.0.2.53",), annotations=key)
            body["spec"]["ports"] = [{"name": "dns", "port": 53, "protocol": proto}]
            store.create(body)
        lab = start(store, **ONLY_LBIPAM)
        store.create(cilium_pool("wide", "192.0.2.0/24"))
        lab.run_until_idle()
        return [ips(store, "dns-tcp"), ips(store, "dns-udp")]

    assert shared_dns(None) == [["192.0.2.53"], ["192.0.2.53"]]  # [C1.2] number and protocol
    assert shared_dns("false") == [["192.0.2.53"], []]  # port number alone clashes
