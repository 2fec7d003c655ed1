"""Fault matrix: for every stage and each kind of write it makes, the API server fails once with
500, 409, a timeout or a dropped connection. The tool retries what is safe to retry, or stops
with a clear message and a consistent state; a second run completes; no IP ever changes."""

from __future__ import annotations

import pytest

from migrate.apply.executor import apply_stage
from migrate.errors import MigrateError
from migrate.kube import resource
from migrate.lab.faults import FaultRule
from migrate.plan.api import make_plan
from migrate.plan.model import Plan
from migrate.sources.live import read_live
from tests.engine.conftest import ClusterFactory, fast_options

FAULTS = {
    "500": {"status": 500},
    "409": {"status": 409},
    "timeout": {"delay": 1.5},
    "dropped": {"drop": True},
}
HTTP_VERB = {"patch": "patch", "create": "create", "delete": "delete", "scale": "patch"}


def _writes(plan: Plan) -> list[tuple[str, int]]:
    """(stage, index of the first action) for each distinct (verb, kind) a stage writes."""
    out = []
    for stage in plan.stages:
        seen = set()
        for index, action in enumerate(stage.actions):
            key = (action.verb, action.target.kind)
            if action.verb == "wait" or key in seen:
                continue
            seen.add(key)
            out.append((stage.name, index))
    return out


def _plan_for_ids() -> list[tuple[str, int]]:
    from migrate.sources.snapshot import read_snapshot
    from tests.engine.conftest import CLUSTERS

    return _writes(make_plan(read_snapshot([CLUSTERS / "guide-single-pool"])))


WRITES = _plan_for_ids()


@pytest.mark.parametrize("fault", sorted(FAULTS))
@pytest.mark.parametrize(("stage", "index"), WRITES, ids=[f"{s}-{i}" for s, i in WRITES])
def test_fault_on_a_write(cluster_factory: ClusterFactory, stage: str, index: int,
                          fault: str) -> None:
    cluster = cluster_factory("guide-single-pool")
    cluster.kube.timeout = 0.5
    plan = make_plan(read_live(cluster.kube))
    expected = dict(plan.expected_ips)
    target_stage = plan.stage(stage)
    for earlier in plan.stages[: target_stage.number]:
        apply_stage(cluster.kube, plan, earlier.name, options=fast_options())
    action = target_stage.actions[index]
    plural = resource(action.target.api_version, action.target.kind).plural
    if action.verb == "scale":
        plural += "/scale"
    rule = FaultRule(verb=HTTP_VERB[action.verb], resource=plural, name=action.target.name,
                     nth=1, **FAULTS[fault])  # type: ignore[arg-type]
    cluster.server.faults.add(rule)
    try:
        first = apply_stage(cluster.kube, plan, stage, options=fast_options())
        assert first.outcome == "applied"
    except MigrateError as error:
        message = str(error)
        assert action.target.name in message or "timed out" in message or "lock" in message
    finally:
        cluster.server.faults.clear()
    cluster.settle(0.1)
    second = apply_stage(cluster.kube, plan, stage, options=fast_options())
    assert second.outcome in ("applied", "already-applied")
    cluster.assert_ips_kept(expected, now=False)
