"""End to end on the BGP wire: the lab scenario ``bgp-kinds`` hands BGP over from MetalLB to
Cilium node by node through the engine, then rolls back, while a real router (bird) peers with
real daemons standing in for each node's speakers (gobgpd for Cilium's, FRR's bgpd for
MetalLB's) that follow what the lab's models say (``BGPFollower``), and a poller reads the
router's table throughout.

The lab runs on its own clock, paced at ``RATE`` lab seconds per real second, and its time
stands still while the wire catches up with a change (``LabPacer``): real sessions take about
a second to come up, and the lab must not hand over the next node before the router has seen
the last one do so, as a real cluster's status would not. Every packet stays inside the
namespaces this test creates."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from migrate.apply.executor import ApplyOptions, apply_stage
from migrate.apply.rollback import rollback
from migrate.apply.waits import WaitOptions
from migrate.lab.bgp_wire import (
    CILIUM,
    METALLB,
    BGPFollower,
    BGPWire,
    LabPacer,
    RouterPoller,
    dump_samples,
    lab_view,
    longest_short_span,
    sample_problems,
    session_prefix,
    why_no_bgp_wire,
)
from migrate.lab.models import build_controllers
from migrate.lab.store import Clock, Store
from migrate.plan.api import make_plan
from migrate.sources.live import read_live
from tests.engine.conftest import CLUSTERS, Cluster, _served
from tests.wire import built_wire

pytestmark = pytest.mark.wire

SCENARIO = "bgp-kinds"
LAB_NODES = ("cp-1", "worker-1", "worker-2")
ROUTER = "10.99.0.254"
RATE = 25.0
"""Lab seconds per real second while the wire keeps up."""


@dataclass
class PacedWire:
    """The lab, its BGP wire, the follower, the pacer and the router poller."""

    cluster: Cluster
    wire: BGPWire
    follower: BGPFollower
    pacer: LabPacer

    def options(self) -> ApplyOptions:
        """The engine waits on the lab's clock; its sleeps are real (the pacer moves the lab)."""
        return ApplyOptions(waits=WaitOptions(poll=0.5, clock=self.cluster.controllers.now,
                                              sleep=self.pacer.sleep))

    def settle(self, lab_seconds: float) -> None:
        """Let ``lab_seconds`` of lab time pass, and the wire catch up."""
        self.pacer.wait(lab_seconds)
        self.follower.wait_caught_up()

    def stacks(self) -> dict[str, str | None]:
        """Per node, the daemon that peers on the wire."""
        return {node: s.stack if s else None for node, s in self.wire.applied.items()}


@pytest.fixture
def paced_wire(tmp_path: Path) -> Iterator[PacedWire]:
    scenario = CLUSTERS / SCENARIO
    store, skipped = Store.from_snapshot([scenario], Clock.manual())
    assert not skipped, skipped
    controllers = build_controllers(store, timing="realistic", seed=1)
    cluster = _served(store, controllers, tmp_path / "kubeconfig", scenario, virtual=True)
    (router,) = [r for r in controllers.bgp_routers() if r.address == ROUTER]
    assert router.asn is not None
    expected = sorted(router.remote_asns)
    wire = BGPWire(LAB_NODES, tmp_path / "wire", router_asn=router.asn,
                   node_asns=dict.fromkeys(LAB_NODES, expected[0]) if len(expected) == 1
                   else None, prefix=f"{session_prefix()}h")
    started: list[BGPFollower | LabPacer] = []
    built = built_wire(wire, why_no_bgp_wire)
    try:
        next(built)
        follower = BGPFollower(wire, lab_view(controllers, wire, router=ROUTER)).start()
        started.append(follower)
        pacer = LabPacer(controllers, rate=RATE, hold=lambda: not follower.caught_up()).start()
        started.append(pacer)
        yield PacedWire(cluster, wire, follower, pacer)
    finally:
        for each in reversed(started):
            each.stop()
        built.close()  # tears the wire down
        cluster.stop()


def test_the_router_always_routes_every_prefix_through_the_handover_and_back(
        paced_wire: PacedWire, tmp_path: Path, figure: Callable[[str], None]) -> None:
    lab = paced_wire.cluster
    paced_wire.settle(30)  # MetalLB's speakers peer from every node
    assert paced_wire.stacks() == dict.fromkeys(LAB_NODES, METALLB)
    before = paced_wire.wire.table()
    assert before == {"203.0.113.1/32": set(LAB_NODES),
                      "203.0.113.2/32": {"worker-1", "worker-2"}}  # Local: its endpoints' nodes
    poller = RouterPoller(paced_wire.wire, interval=0.15, lab_clock=lab.controllers.now).start()
    began = time.monotonic()
    plan = make_plan(read_live(lab.kube))
    assert not plan.blocked
    for stage in plan.stages:
        result = apply_stage(lab.kube, plan, stage.name, options=paced_wire.options())
        assert result.outcome == "applied", stage.name
        paced_wire.settle(2)
    paced_wire.settle(30)
    assert paced_wire.stacks() == dict.fromkeys(LAB_NODES, CILIUM)
    assert paced_wire.wire.table() == before
    # The router got the routes from gobgpd with the BGPAdvertisement's community.
    assert {p.communities for ps in paced_wire.wire.routes().values() for p in ps} == {
        ("64512:100",)}
    handed_over = time.monotonic()
    rollback(lab.kube, plan, options=paced_wire.options())
    paced_wire.settle(30)
    assert paced_wire.stacks() == dict.fromkeys(LAB_NODES, METALLB)
    assert paced_wire.wire.table() == before
    samples = poller.stop()
    dump_samples(samples, tmp_path / "router-table.jsonl")

    problems = sample_problems(samples, paced_wire.follower.history, before)
    longest = longest_short_span(samples, {p: len(n) for p, n in before.items()})
    shown = longest.describe() if longest else "never"
    report = (f"{len(samples)} polls of the router over {samples[-1].ended - began:.1f} s"
              f" (hand-over {handed_over - began:.1f} s, lab held {paced_wire.pacer.held:.1f} s"
              f" for the wire); longest moment with fewer next hops than nodes: {shown}")
    figure(report)
    assert problems == [], f"{report}\n" + "\n".join(problems[:20])
    assert longest is not None  # the nodes did leave and come back, one at a time
    assert longest.fewest >= 1
    # The wire followed every step of the lab: each node went to Cilium and back.
    assert len(paced_wire.follower.history) >= 4 * len(LAB_NODES)
    assert lab.controllers.bgp_record.collisions == []
    assert len(samples) > 30
