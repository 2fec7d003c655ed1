"""The BGP hand-over on the lab, on virtual time: node by node, no prefix ever without a next
hop, never two speakers from one node address, and back again exactly."""

from __future__ import annotations

import pytest

from migrate.apply.executor import apply_stage
from migrate.apply.rollback import rollback
from migrate.plan.api import make_plan
from migrate.sources.live import read_live
from tests.engine.conftest import ClusterFactory

SCENARIO = "bgp-kinds"


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bgp_handover_keeps_every_prefix_routed(virtual_cluster_factory: ClusterFactory,
                                                seed: int) -> None:
    cluster = virtual_cluster_factory(SCENARIO, seed=seed)
    cluster.settle(30)
    plan = make_plan(read_live(cluster.kube))
    assert not plan.blocked, [f for f in plan.findings if f.severity.value == "ERROR"]
    for stage in plan.stages:
        result = apply_stage(cluster.kube, plan, stage.name, options=cluster.options())
        assert result.outcome == "applied", stage.name
        cluster.settle(2)
    cluster.settle(30)
    record = cluster.controllers.bgp_record
    assert record.collisions == []
    assert record.no_next_hop() == []
    sessions = cluster.controllers.bgp_sessions()
    assert {(s.node, s.stack, s.state) for s in sessions} == {
        (n, "cilium", "established") for n in ("cp-1", "worker-1", "worker-2")}
    hops = cluster.controllers.bgp_announcements()
    assert hops["203.0.113.1/32"].cilium_nodes == ("cp-1", "worker-1", "worker-2")
    assert hops["203.0.113.2/32"].cilium_nodes == ("worker-1", "worker-2")
    cluster.assert_ips_kept(plan.expected_ips)
    result = rollback(cluster.kube, plan, options=cluster.options())
    cluster.settle(30)
    assert record.collisions == []
    assert record.no_next_hop() == []
    sessions = cluster.controllers.bgp_sessions()
    assert {(s.node, s.stack, s.state) for s in sessions} == {
        (n, "metallb", "established") for n in ("cp-1", "worker-1", "worker-2")}
