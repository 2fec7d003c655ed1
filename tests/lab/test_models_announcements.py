"""The announcement view with every model on: the design's stage order keeps every IP and
never has two announcers, and the view shows both when someone makes before breaking."""

from __future__ import annotations

from migrate.lab.models import Controllers, build_controllers
from migrate.lab.models.cilium_l2 import race_order
from migrate.lab.store import Clock, Store
from tests.lab.models_support import (
    cilium_pool,
    ips,
    l2_policy,
    load,
    new_store,
    patch_metadata,
    scale,
    service,
    start,
)

NAMES = ("web", "db", "cache")


def metallb_cluster() -> tuple[Store, Controllers]:
    store = new_store("cluster", "metallb", "metallb-webhook", "cilium", "cilium-agents")
    for name in NAMES:
        store.create(service(name))
    lab = start(store)
    return store, lab


def assert_one_announcer_per_ip(lab: Controllers, expect: set[str]) -> None:
    view = lab.announcements()
    assert set(view) == expect
    for ip, who in view.items():
        assert (who.metallb_node is None) != (who.cilium_node is None), (ip, who)


def test_design_stage_order_keeps_ips_and_one_announcer() -> None:
    store, lab = metallb_cluster()
    before = {n: ips(store, n) for n in NAMES}
    all_ips = {ip for v in before.values() for ip in v}
    assert len(all_ips) == 3
    assert all(w.metallb_node for w in lab.announcements().values())
    # pin: the Cilium request for the current IPs
    for name in NAMES:
        patch_metadata(store, "", "Service", name, "apps",
                       annotations={"lbipam.cilium.io/ips": before[name][0]})
    # freeze-metallb
    scale(store, "metallb-system", "controller", 0)
    lab.run_until_idle()
    # ipam-handover: operator to 0, all pools, operator back
    scale(store, "kube-system", "cilium-operator", 0)
    store.create(cilium_pool("pool-a", "192.0.2.0/28"))
    scale(store, "kube-system", "cilium-operator", 1)
    lab.run_until_idle()
    assert {n: ips(store, n) for n in NAMES} == before
    assert_one_announcer_per_ip(lab, all_ips)
    # l2-cutover: break before make
    store.delete("metallb.io", "L2Advertisement", "l2-all", "metallb-system")
    lab.run_until_idle()
    assert lab.announcements() == {}
    store.create(l2_policy("all"))
    lab.run_until_idle()
    assert_one_announcer_per_ip(lab, all_ips)
    assert all(w.cilium_node for w in lab.announcements().values())
    # decommission: MetalLB's pools go while its controller is frozen
    store.delete("metallb.io", "IPAddressPool", "pool-a", "metallb-system")
    lab.advance(60)
    assert {n: ips(store, n) for n in NAMES} == before
    moved = [w for w in store.status_writes if w.before and w.before != w.after]
    assert moved == []  # I1: no IP ever changed after MetalLB first assigned it


def test_make_before_break_shows_two_announcers() -> None:
    store, lab = metallb_cluster()
    store.create(l2_policy("all"))
    lab.run_until_idle()
    view = lab.announcements()
    assert view and all(w.metallb_node and w.cilium_node for w in view.values())


def test_switched_off_models_do_nothing() -> None:
    store = new_store("cluster", "metallb", "metallb-webhook", "cilium", "cilium-agents")
    store.create(service("web"))
    lab = start(store, metallb_controller=False, cilium_l2=False)
    store.create(l2_policy("all"))
    lab.run_until_idle()
    assert ips(store, "web") == []  # no allocation
    store.create(cilium_pool("unrelated", "203.0.113.0/24"))
    lab.run_until_idle()
    assert ips(store, "web")  # LB-IPAM is on: it allocates from its pool
    assert store.list("coordination.k8s.io", "Lease", "kube-system") == []
    lab.set_enabled(lab.cilium_l2, True)
    assert lab.announcements()[ips(store, "web")[0]].cilium_node == race_order(
        "cilium-l2announce-apps-web", ("node-a", "node-b", "node-c"))[0]


def test_real_clock_runs_due_timers_without_moving_time() -> None:
    store = Store(Clock.real())
    load(store, "cluster", "cilium", "cilium-agents")
    store.create(service("web", ips=("192.0.2.3",)))
    store.create(l2_policy("all"))
    lab = build_controllers(store, metallb_controller=False, metallb_speakers=False)
    lab.advance(0.2)  # what `serve` does every tick
    lab_lease = store.get("coordination.k8s.io", "Lease", "cilium-l2announce-apps-web",
                          "kube-system")
    assert lab_lease["spec"]["holderIdentity"] == race_order(
        "cilium-l2announce-apps-web", ("node-a", "node-b", "node-c"))[0]
    lab.close()


def test_both_ipams_running_fight_over_the_status_and_the_run_is_bounded() -> None:
    store = new_store("cluster", "metallb", "cilium")
    store.create(service("web"))
    lab = start(store, metallb_speakers=False, cilium_l2=False)
    store.create(cilium_pool("other", "203.0.113.0/24"))  # MetalLB's controller still runs
    lab.run_until_idle(max_events=2_000)
    assert lab.saturated  # [C1.4] the tug-of-war never settles
    managers = {w.manager for w in store.status_writes if w.before != w.after}
    assert {"metallb-controller", "cilium-operator-lb-ipam"} <= managers


def set_failure_policy(store: Store, policy: str) -> None:
    config = store.get("admissionregistration.k8s.io", "ValidatingWebhookConfiguration",
                       "metallb-webhook-configuration")
    for webhook in config["webhooks"]:
        webhook["failurePolicy"] = policy
    store.update(config)


def test_design_rollback_order_keeps_ips_and_one_announcer() -> None:
    store, lab = metallb_cluster()
    before = {n: ips(store, n) for n in NAMES}
    all_ips = {ip for v in before.values() for ip in v}
    # forward, as in the design: pin, freeze, handover, cutover, decommission
    for name in NAMES:
        patch_metadata(store, "", "Service", name, "apps",
                       annotations={"lbipam.cilium.io/ips": before[name][0]})
    scale(store, "metallb-system", "controller", 0)
    scale(store, "kube-system", "cilium-operator", 0)
    store.create(cilium_pool("pool-a", "192.0.2.0/28"))
    scale(store, "kube-system", "cilium-operator", 1)
    lab.run_until_idle()
    l2adv = store.get("metallb.io", "L2Advertisement", "l2-all", "metallb-system")
    pool = store.get("metallb.io", "IPAddressPool", "pool-a", "metallb-system")
    store.delete("metallb.io", "L2Advertisement", "l2-all", "metallb-system")
    store.create(l2_policy("all"))
    store.delete("metallb.io", "IPAddressPool", "pool-a", "metallb-system")
    lab.advance(30)
    assert_one_announcer_per_ip(lab, all_ips)
    # undo decommission: the frozen controller's webhook is bypassed for the writes
    set_failure_policy(store, "Ignore")
    pool["metadata"] = {"name": "pool-a", "namespace": "metallb-system"}
    store.create(pool)
    set_failure_policy(store, "Fail")
    # undo l2-cutover: break before make again
    store.delete("cilium.io", "CiliumL2AnnouncementPolicy", "all")
    lab.run_until_idle()
    assert lab.announcements() == {}
    set_failure_policy(store, "Ignore")
    l2adv["metadata"] = {"name": "l2-all", "namespace": "metallb-system"}
    store.create(l2adv)
    set_failure_policy(store, "Fail")
    lab.advance(30)
    assert_one_announcer_per_ip(lab, all_ips)
    # undo ipam-handover: operator to 0, pools away, operator back (dormant: touches nothing)
    scale(store, "kube-system", "cilium-operator", 0)
    store.delete("cilium.io", "CiliumLoadBalancerIPPool", "pool-a")
    scale(store, "kube-system", "cilium-operator", 1)
    # undo freeze-metallb: the controller re-adopts the IPs it finds, its pools exist again
    scale(store, "metallb-system", "controller", 1)
    lab.advance(30)
    assert {n: ips(store, n) for n in NAMES} == before
    assert all(w.metallb_node for w in lab.announcements().values())
    assert [w for w in store.status_writes if w.before and w.before != w.after] == []
