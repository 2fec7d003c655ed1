"""Every bundled cluster, end to end on the asynchronous lab (virtual time, realistic timing),
20 seeds each, rolled back after every stage.

One run per seed: after stage k is applied, the run rolls back to the stage before it and the
cluster must be exactly as it was before k (the rehearsal's comparison of "the cluster as
before", ``migrate.rehearse.invariants``); then k is applied again and the run goes on. After
the last stage, a full rollback must give back the cluster as it was before the migration. Over
the whole run: no status write ever changed or emptied a Service's IPs (I1, the lab's write
record), never two announcers in the lab's announcement record (I2), and on the BGP scenario
every prefix always had a next hop and no two speakers peered from one node address.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from migrate.apply.rollback import rollback
from migrate.lab.runtime import AnnouncementChange
from migrate.plan.api import make_plan
from migrate.plan.model import Plan
from migrate.rehearse.invariants import rollback_problems
from migrate.sources.live import read_live
from tests.engine.conftest import SCENARIOS, Cluster, ClusterFactory, apply_through
from tests.engine.test_rollback import cluster_objects

SEEDS = range(20)
SETTLE = 5.0
"""Lab seconds after each stage and each rollback (free on virtual time)."""
BGP_START = 30.0
"""Lab seconds for MetalLB's speakers to peer before planning (the BGP scenario)."""
def assert_as_before(cluster: Cluster, before: dict[str, dict[str, object]], where: str) -> None:
    problems = rollback_problems(before, cluster_objects(cluster))
    assert problems == [], f"{where}: {[p.to_json() for p in problems][:3]}"


class Steps:
    """Applies and rollbacks on the lab's time, each followed by SETTLE seconds, remembering
    when each ran (to tell where an overlap happened)."""

    def __init__(self, cluster: Cluster, plan: Plan) -> None:
        self.cluster = cluster
        self.plan = plan
        self.spans: list[tuple[str, float, float]] = []

    def _timed(self, what: str, step: Callable[[], object]) -> None:
        began = self.cluster.controllers.now()
        step()
        self.spans.append((what, began, self.cluster.controllers.now()))

    def apply(self, what: str, stage: str) -> None:
        self._timed(what, lambda: apply_through(self.cluster, self.plan, stage, settle=SETTLE))

    def roll_back(self, what: str, to: str | None) -> None:
        def step() -> None:
            rollback(self.cluster.kube, self.plan, to=to, options=self.cluster.options())
            self.cluster.settle(SETTLE)
        self._timed(what, step)

    def where(self, at: float) -> str:
        return next((what for what, began, end in self.spans if began <= at <= end), "?")


def doubled(cluster: Cluster) -> list[AnnouncementChange]:
    """Every moment the lab's announcement record has two nodes answering one IP."""
    starts = {(span.ip, span.start) for span in cluster.controllers.record.overlaps()}
    return [c for c in cluster.controllers.record.changes if (c.ip, c.time) in starts]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_stage_rolls_back_exactly_and_the_run_stays_safe(
        virtual_cluster_factory: ClusterFactory, scenario: str, seed: int) -> None:
    cluster = virtual_cluster_factory(scenario, seed=seed)
    bgp = bool(cluster.store.list("metallb.io", "BGPPeer"))
    if bgp:
        cluster.settle(BGP_START)
    start = cluster_objects(cluster)
    plan = make_plan(read_live(cluster.kube))
    assert not plan.blocked, [f for f in plan.findings if f.severity.value == "ERROR"]
    steps = Steps(cluster, plan)
    steps.apply("apply preflight", plan.stages[0].name)
    for previous, stage in zip(plan.stages, plan.stages[1:], strict=False):
        before = cluster_objects(cluster)
        steps.apply(f"apply {stage.name}", stage.name)
        steps.roll_back(f"roll back {stage.name}", previous.name)
        assert_as_before(cluster, before, f"rolled back {stage.name}")
        steps.apply(f"re-apply {stage.name}", stage.name)
    steps.roll_back("roll back every stage", None)
    assert_as_before(cluster, start, "rolled back every stage")
    assert cluster.store.try_get("", "ConfigMap", "lbmigrate-state", "kube-system") is None
    cluster.assert_ips_kept(plan.expected_ips)
    if bgp:
        assert cluster.controllers.bgp_record.collisions == []
        assert cluster.controllers.bgp_record.no_next_hop() == []
    twice = [(steps.where(c.time), c) for c in doubled(cluster)]
    assert twice == [], "two announcers"
