"""Roll back from after every stage: the cluster is as before, object by object."""

from __future__ import annotations

from typing import Any

import pytest

from migrate.apply.executor import apply_stage
from migrate.apply.rollback import rollback
from migrate.plan.api import make_plan
from migrate.plan.model import STAGE_NAMES
from migrate.rehearse.invariants import WATCHED, comparable_objects
from migrate.sources.live import read_live
from tests.engine.conftest import SCENARIOS, Cluster, ClusterFactory, fast_options

Obj = dict[str, Any]


def cluster_objects(cluster: Cluster) -> dict[str, Obj]:
    """Every object the migration may touch, without what the server and the controllers own
    (the rehearsal's own comparison: ``migrate.rehearse.invariants``), keyed by object."""
    return comparable_objects(obj for group, kind in WATCHED
                              for obj in cluster.store.list(group, kind))


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("last", range(1, len(STAGE_NAMES) - 1))  # no l2-canary stage here
def test_rollback_after_stage_restores_the_cluster(cluster_factory: ClusterFactory,
                                                   scenario: str, last: int) -> None:
    cluster = cluster_factory(scenario)
    before = cluster_objects(cluster)
    plan = make_plan(read_live(cluster.kube))
    if last >= len(plan.stages):
        pytest.skip(f"the plan of {scenario} has {len(plan.stages)} stages")
    for stage in plan.stages[: last + 1]:
        apply_stage(cluster.kube, plan, stage.name, options=fast_options())
    cluster.settle(0.1)
    result = rollback(cluster.kube, plan, options=fast_options())
    assert result.undone == [s.name for s in reversed(plan.stages[1: last + 1])]
    cluster.settle(0.2)
    after = cluster_objects(cluster)
    assert sorted(after) == sorted(before)
    for key in before:
        assert after[key] == before[key], key
    cluster.assert_ips_kept(plan.expected_ips)
    assert cluster.store.try_get("", "ConfigMap", "lbmigrate-state", "kube-system") is None
