"""Apply every stage in order against the emulated cluster, for every cluster scenario."""

from __future__ import annotations

import pytest

from migrate.apply.executor import apply_stage
from migrate.plan.api import make_plan
from migrate.sources.live import read_live
from tests.engine.conftest import SCENARIOS, ClusterFactory, fast_options


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_stage_in_order_keeps_every_ip(cluster_factory: ClusterFactory,
                                             scenario: str) -> None:
    cluster = cluster_factory(scenario)
    plan = make_plan(read_live(cluster.kube))
    assert not plan.blocked, plan.findings
    before = {k: list(v) for k, v in plan.expected_ips.items()}
    assert before
    for stage in plan.stages:
        result = apply_stage(cluster.kube, plan, stage.name, options=fast_options())
        assert result.outcome == "applied", stage.name
        cluster.settle(0.1)
    cluster.assert_ips_kept(before)
    services = {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s
                for s in cluster.store.list("", "Service")}
    # end state: Cilium pools present and healthy, MetalLB advertisements gone, controller at 0
    pools = cluster.store.list("cilium.io", "CiliumLoadBalancerIPPool")
    assert {p["metadata"]["name"] for p in pools} == {
        a.target.name for a in plan.stage("ipam-handover").actions if a.verb == "create"}
    for pool in pools:  # healthy: no conflict, and LB-IPAM took over its pinned IPs
        conditions = {c["type"]: c for c in pool["status"]["conditions"]}
        assert conditions["cilium.io/PoolConflict"]["status"] == "False"
        used = int(conditions["cilium.io/IPsUsed"]["message"])
        assert used >= plan.context["poolIPs"].get(pool["metadata"]["name"], 0)
    assert {p["metadata"]["name"] for p in
            cluster.store.list("cilium.io", "CiliumL2AnnouncementPolicy")} == {
        a.target.name for a in plan.stage("l2-cutover").actions if a.verb == "create"}
    assert not cluster.store.list("metallb.io", "L2Advertisement")
    # BGP handed over: MetalLB's BGP objects go too; else its BGP pools stay with it.
    bgp_pools = {name for ad in cluster.store.list("metallb.io", "BGPAdvertisement")
                 for name in ad["spec"].get("ipAddressPools", [])}
    if "bgp" in plan.context:
        assert not bgp_pools and not cluster.store.list("metallb.io", "BGPPeer")
    assert {p["metadata"]["name"] for p in cluster.store.list("metallb.io", "IPAddressPool")} \
        == bgp_pools
    for pin in (a for a in plan.stage("pin").actions if a.verb == "patch"):
        service = services[f"{pin.target.namespace}/{pin.target.name}"]
        annotations = service["metadata"].get("annotations") or {}
        assert "lbipam.cilium.io/ips" in annotations, pin.target.key
        assert not any(k.startswith(("metallb.io/", "metallb.universe.tf/"))
                       for k in annotations if "ip-allocated" not in k) or (
            service["metadata"]["labels"].get("lbmigrate.io/pool") in bgp_pools)
    controller = plan.context["metallbController"]
    deployment = cluster.store.get("apps", "Deployment", controller["name"],
                                   controller["namespace"])
    assert deployment["spec"]["replicas"] == 0
    leases = {lease["metadata"]["name"]: lease for lease in
              cluster.store.list("coordination.k8s.io", "Lease", "kube-system")}
    for key in plan.context["announced"]:
        namespace, name = key.split("/")
        assert leases[f"cilium-l2announce-{namespace}-{name}"]["spec"]["holderIdentity"]


def test_a_shared_ip_has_one_lease_and_one_announcing_node(cluster_factory: ClusterFactory
                                                           ) -> None:
    """cilium/cilium#48419: the sharers' elections are independent, so only the leader of a
    shared IP is selected by the L2 policies; its lease holder alone answers."""
    cluster = cluster_factory("several-pools-shared")
    plan = make_plan(read_live(cluster.kube))
    for stage in plan.stages:
        apply_stage(cluster.kube, plan, stage.name, options=fast_options())
    cluster.settle(0.2)
    shared = {ip for ip in {ip for ips in plan.expected_ips.values() for ip in ips}
              if sum(ip in ips for ips in plan.expected_ips.values()) > 1}
    assert shared
    leases = {lease["metadata"]["name"] for lease in
              cluster.store.list("coordination.k8s.io", "Lease", "kube-system")}
    announcements = cluster.controllers.announcements()
    for ip in shared:
        sharers = sorted(key for key, ips in plan.expected_ips.items() if ip in ips)
        leased = [key for key in sharers
                  if f"cilium-l2announce-{key.replace('/', '-')}" in leases]
        assert len(leased) == 1, (ip, leased)
        assert len(announcements[ip].cilium_nodes) == 1, (ip, announcements[ip])
        assert announcements[ip].metallb_node is None
    cluster.assert_ips_kept(plan.expected_ips)
