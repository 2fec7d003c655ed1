"""A stage fails half-way, and the cautious operator rolls back instead of re-running.

For every stage that writes, in two scenarios, a write in the middle of the stage fails for good
(403, as when RBAC refuses it, or a 500 that outlasts every retry). ``rollback`` must then put
the cluster back exactly as it was before the migration, with no Service IP changed at any
moment and the MetalLB controller and Cilium operator at their recorded replicas. A rollback
that itself fails half-way is finished by a second one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from migrate.apply.executor import apply_stage
from migrate.apply.rollback import rollback
from migrate.errors import MigrateError
from migrate.kube import resource
from migrate.lab.faults import FaultRule
from migrate.plan.api import make_plan, save_plan
from migrate.plan.model import Action, Plan
from migrate.sources.live import read_live
from tests.engine.conftest import Cluster, ClusterFactory, fast_options
from tests.engine.test_rollback import cluster_objects
from tests.helpers import run_cli

HTTP_VERB = {"patch": "patch", "create": "create", "delete": "delete", "scale": "patch"}


@dataclass(frozen=True)
class Case:
    """Which write of which stage fails: the ``nth`` write of that (verb, kind) in the stage."""

    scenario: str
    stage: str
    verb: str
    kind: str
    nth: int
    status: int = 403

    @property
    def id(self) -> str:
        return f"{self.scenario}-{self.stage}-{self.verb}-{self.kind}-{self.nth}-{self.status}"


CASES = [
    # pin: the second Service patch fails (the others, in flight beside it, succeed).
    Case("guide-single-pool", "pin", "patch", "Service", 2),
    Case("several-pools-shared", "pin", "patch", "Service", 2, status=500),
    # freeze-metallb: its one write, the controller's scale, fails.
    Case("guide-single-pool", "freeze-metallb", "scale", "Deployment", 1),
    # ipam-handover: a pool create fails with the operator stopped; or the operator restart.
    Case("guide-single-pool", "ipam-handover", "create", "CiliumLoadBalancerIPPool", 1),
    Case("guide-single-pool", "ipam-handover", "scale", "Deployment", 2),
    Case("several-pools-shared", "ipam-handover", "create", "CiliumLoadBalancerIPPool", 2),
    # l2-cutover: the policy create fails after the L2Advertisement was deleted.
    Case("guide-single-pool", "l2-cutover", "create", "CiliumL2AnnouncementPolicy", 1),
    Case("several-pools-shared", "l2-cutover", "delete", "L2Advertisement", 2),
    Case("several-pools-shared", "l2-cutover", "create", "CiliumL2AnnouncementPolicy", 2,
         status=422),
    # decommission: after a MetalLB pool is deleted, the next one fails; or a Service patch.
    Case("several-pools-shared", "decommission", "delete", "IPAddressPool", 2),
    Case("guide-single-pool", "decommission", "patch", "Service", 2),
]


def _nth_action(plan: Plan, stage: str, verb: str, kind: str, nth: int) -> Action:
    matching = [a for a in plan.stage(stage).actions if a.verb == verb and a.target.kind == kind]
    return matching[nth - 1]


def _fault_on(action: Action, status: int, nth_create: int = 1) -> FaultRule:
    """A fault on every request that writes the action's object (outlasts the retries).

    A create names no object in its URL: the fault hits the ``nth_create``-th create of the
    kind, with a status that is never retried."""
    plural = resource(action.target.api_version, action.target.kind).plural
    if action.verb == "create":
        assert status not in (429, 500, 502, 503, 504)
        return FaultRule(verb="create", resource=plural, nth=nth_create, status=status)
    if action.verb == "scale":
        plural += "/scale"
    return FaultRule(verb=HTTP_VERB[action.verb], resource=plural, name=action.target.name,
                     status=status)


def _replicas(cluster: Cluster) -> dict[str, int]:
    out = {}
    for name, namespace in (("controller", "metallb-system"), ("cilium-operator", "kube-system")):
        deployment = cluster.store.get("apps", "Deployment", name, namespace)
        out[name] = int(deployment["spec"]["replicas"])
    return out


def _assert_restored(cluster: Cluster, plan: Plan, before: dict[str, dict[str, object]],
                     replicas: dict[str, int]) -> None:
    cluster.settle(0.2)
    after = cluster_objects(cluster)
    assert sorted(after) == sorted(before)
    for key in before:
        assert after[key] == before[key], key
    cluster.assert_ips_kept(plan.expected_ips)
    assert _replicas(cluster) == replicas
    assert cluster.store.try_get("", "ConfigMap", "lbmigrate-state", "kube-system") is None
    assert not [cm for cm in cluster.store.list("", "ConfigMap", "kube-system")
                if cm["metadata"]["name"].startswith("lbmigrate-")]


def _start(cluster_factory: ClusterFactory, scenario: str) -> tuple[
    Cluster, Plan, dict[str, dict[str, object]], dict[str, int]
]:
    cluster = cluster_factory(scenario)
    before = cluster_objects(cluster)
    replicas = _replicas(cluster)
    plan = make_plan(read_live(cluster.kube))
    assert not plan.blocked
    return cluster, plan, before, replicas


def _apply_before(cluster: Cluster, plan: Plan, stage: str) -> None:
    for earlier in plan.stages[1: plan.stage(stage).number]:
        apply_stage(cluster.kube, plan, earlier.name, options=fast_options())


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rollback_after_a_stage_failed_half_way(cluster_factory: ClusterFactory,
                                                case: Case) -> None:
    cluster, plan, before, replicas = _start(cluster_factory, case.scenario)
    _apply_before(cluster, plan, case.stage)
    action = _nth_action(plan, case.stage, case.verb, case.kind, case.nth)
    rule = cluster.server.faults.add(_fault_on(action, case.status, case.nth))
    with pytest.raises(MigrateError) as failure:
        apply_stage(cluster.kube, plan, case.stage, options=fast_options())
    assert rule.fired, "the fault must have hit the stage"
    assert action.target.kind in str(failure.value)
    hint = " ".join(getattr(failure.value, "__notes__", []))
    assert f"migrate apply --stage {case.stage}" in hint and "migrate rollback" in hint
    cluster.server.faults.clear()
    cluster.settle(0.1)
    result = rollback(cluster.kube, plan, options=fast_options())
    assert result.undone == [s.name for s in reversed(plan.stages[1: plan.stage(
        case.stage).number + 1])]
    _assert_restored(cluster, plan, before, replicas)


@dataclass(frozen=True)
class UndoFault:
    """A write of the rollback that fails, after ``stage`` was the last stage applied."""

    scenario: str
    last: str
    verb: str
    plural: str
    name: str | None
    nth: int | None = None
    status: int = 403

    @property
    def id(self) -> str:
        return f"{self.scenario}-{self.last}-{self.verb}-{self.plural}-{self.name}"


UNDO_FAULTS = [
    # undo of ipam-handover: the operator is stopped, then a pool delete fails.
    UndoFault("several-pools-shared", "ipam-handover", "delete", "ciliumloadbalancerippools",
              "general"),
    # ... or the operator's restart fails with every pool already gone.
    UndoFault("guide-single-pool", "ipam-handover", "patch", "deployments/scale",
              "cilium-operator", nth=2),
    # undo of pin: the second Service's labels and annotations cannot be restored.
    UndoFault("several-pools-shared", "pin", "patch", "services", "pihole-tcp"),
    # undo of freeze-metallb: MetalLB's controller cannot be started again.
    UndoFault("guide-single-pool", "freeze-metallb", "patch", "deployments/scale",
              "controller"),
    # undo of decommission: the second MetalLB pool cannot be recreated (webhooks bypassed).
    UndoFault("several-pools-shared", "decommission", "create", "ipaddresspools", None, nth=2),
    # undo of l2-cutover: the L2Advertisement cannot be recreated after the policies are gone.
    UndoFault("guide-single-pool", "l2-cutover", "create", "l2advertisements", None),
    # the state cannot be saved after a stage was undone.
    UndoFault("guide-single-pool", "l2-cutover", "update", "configmaps", "lbmigrate-state",
              nth=3),
]


@pytest.mark.parametrize("case", UNDO_FAULTS, ids=[c.id for c in UNDO_FAULTS])
def test_a_rollback_that_fails_half_way_is_finished_by_a_second_one(
    cluster_factory: ClusterFactory, case: UndoFault,
) -> None:
    cluster, plan, before, replicas = _start(cluster_factory, case.scenario)
    for stage in plan.stages[1: plan.stage(case.last).number + 1]:
        apply_stage(cluster.kube, plan, stage.name, options=fast_options())
    cluster.settle(0.1)
    rule = cluster.server.faults.add(FaultRule(verb=case.verb, resource=case.plural,
                                               name=case.name, nth=case.nth,
                                               status=case.status))
    with pytest.raises(MigrateError) as failure:
        rollback(cluster.kube, plan, options=fast_options())
    assert rule.fired, "the fault must have hit the rollback"
    assert "run `migrate rollback` again" in " ".join(getattr(failure.value, "__notes__", []))
    cluster.server.faults.clear()
    cluster.assert_ips_kept(plan.expected_ips)
    cluster.settle(0.1)
    rollback(cluster.kube, plan, options=fast_options())
    _assert_restored(cluster, plan, before, replicas)


def test_a_failed_stage_then_a_failed_rollback_then_a_second_rollback(
    cluster_factory: ClusterFactory,
) -> None:
    """ipam-handover dies with the operator stopped and one pool created; the rollback dies
    deleting that pool; the second rollback finishes, and no IP moved at any point."""
    cluster, plan, before, replicas = _start(cluster_factory, "several-pools-shared")
    _apply_before(cluster, plan, "ipam-handover")
    action = _nth_action(plan, "ipam-handover", "create", "CiliumLoadBalancerIPPool", 2)
    cluster.server.faults.add(_fault_on(action, 403, nth_create=2))
    with pytest.raises(MigrateError):
        apply_stage(cluster.kube, plan, "ipam-handover", options=fast_options())
    cluster.server.faults.clear()
    assert _replicas(cluster)["cilium-operator"] == 0, "the operator must stay stopped"
    first_pool = _nth_action(plan, "ipam-handover", "create", "CiliumLoadBalancerIPPool", 1)
    cluster.server.faults.add(FaultRule(verb="delete", resource="ciliumloadbalancerippools",
                                        name=first_pool.target.name, status=500))
    with pytest.raises(MigrateError):
        rollback(cluster.kube, plan, options=fast_options())
    cluster.server.faults.clear()
    assert _replicas(cluster)["cilium-operator"] == 0, "never start LB-IPAM on half the pools"
    rollback(cluster.kube, plan, options=fast_options())
    _assert_restored(cluster, plan, before, replicas)



def test_a_stage_left_half_undone_is_not_reported_as_applied(
    cluster_factory: ClusterFactory,
) -> None:
    """The rollback of ipam-handover dies with Cilium's operator stopped and a pool deleted; the
    operator changes their mind and applies the stage again: it must finish the stage (not call
    it done), and the next stage must wait for it."""
    cluster, plan, _, replicas = _start(cluster_factory, "several-pools-shared")
    for stage in plan.stages[1: plan.stage("ipam-handover").number + 1]:
        apply_stage(cluster.kube, plan, stage.name, options=fast_options())
    cluster.settle(0.1)
    cluster.server.faults.add(FaultRule(verb="delete", resource="ciliumloadbalancerippools",
                                        name="general", status=403))
    with pytest.raises(MigrateError):
        rollback(cluster.kube, plan, options=fast_options())
    cluster.server.faults.clear()
    assert _replicas(cluster)["cilium-operator"] == 0
    with pytest.raises(MigrateError, match=r"ipam-handover \(half rolled back\)"):
        apply_stage(cluster.kube, plan, "l2-cutover", options=fast_options())
    again = apply_stage(cluster.kube, plan, "ipam-handover", options=fast_options())
    assert again.outcome == "applied" and again.writes > 0
    assert _replicas(cluster) == {**replicas, "controller": 0}
    pools = {p["metadata"]["name"] for p in cluster.store.list("cilium.io",
                                                                "CiliumLoadBalancerIPPool")}
    assert pools == {"dns", "general", "reserved"}
    apply_stage(cluster.kube, plan, "l2-cutover", options=fast_options())
    cluster.assert_ips_kept(plan.expected_ips)


def test_a_rerun_finishes_ipam_handover_after_the_operator_restart_failed(
    cluster_factory: ClusterFactory,
) -> None:
    """Every pool is created, then starting Cilium's operator again is refused: a re-run takes
    the pools the server now shows (with its defaults filled in) as its own and finishes."""
    cluster, plan, _, replicas = _start(cluster_factory, "several-pools-shared")
    _apply_before(cluster, plan, "ipam-handover")
    cluster.server.faults.add(FaultRule(verb="patch", resource="deployments/scale",
                                        name="cilium-operator", nth=2, status=403))
    with pytest.raises(MigrateError, match="cilium-operator"):
        apply_stage(cluster.kube, plan, "ipam-handover", options=fast_options())
    cluster.server.faults.clear()
    assert _replicas(cluster)["cilium-operator"] == 0
    again = apply_stage(cluster.kube, plan, "ipam-handover", options=fast_options())
    assert again.outcome == "applied" and again.writes == 1
    assert _replicas(cluster)["cilium-operator"] == replicas["cilium-operator"]
    cluster.assert_ips_kept(plan.expected_ips)


def test_the_cli_says_how_to_get_out_of_a_stage_that_stopped_half_way(
    cluster_factory: ClusterFactory, tmp_path: Path,
) -> None:
    """ipam-handover stops at the pool create: the error says what to do next, and rollback
    works even without the plan file (apply recorded the plan in the cluster)."""
    cluster, plan, before, replicas = _start(cluster_factory, "guide-single-pool")
    save_plan(plan, tmp_path / "plan.yaml")
    common = ("--kubeconfig", str(cluster.kubeconfig))
    for stage in ("pin", "freeze-metallb"):
        assert run_cli("apply", "--plan", str(tmp_path / "plan.yaml"), "--stage", stage,
                       "--yes", "--timeout-scale", "0.1", *common).exit_code == 0
    cluster.server.faults.add(FaultRule(verb="create", resource="ciliumloadbalancerippools",
                                        status=403))
    failed = run_cli("apply", "--plan", str(tmp_path / "plan.yaml"), "--stage",
                     "ipam-handover", "--yes", "--timeout-scale", "0.1", *common)
    cluster.server.faults.clear()
    assert failed.exit_code == 1
    assert "CiliumLoadBalancerIPPool web-pool: 403" in failed.stderr
    assert "migrate apply --stage ipam-handover" in failed.stderr
    assert "Cilium's operator may be left stopped on purpose" in failed.stderr
    shown = run_cli("status", *common)
    assert "in-progress" in shown.stdout
    (tmp_path / "plan.yaml").unlink()  # the laptop is lost: the plan recorded in the cluster
    undone = run_cli("rollback", "--yes", *common)
    assert undone.exit_code == 0, undone.stderr
    assert "Rolled back ipam-handover, freeze-metallb, pin" in undone.stdout
    _assert_restored(cluster, plan, before, replicas)


@pytest.mark.parametrize("last", ["l2-cutover", "decommission"])
def test_the_cli_rolls_back_metallb_objects_while_its_controller_is_stopped(
    cluster_factory: ClusterFactory, tmp_path: Path, last: str,
) -> None:
    """``migrate rollback`` previews with a server dry run before it writes: the preview must
    get past MetalLB's webhook (its controller is stopped) as the real run does."""
    cluster, plan, before, replicas = _start(cluster_factory, "guide-single-pool")
    for stage in plan.stages[1: plan.stage(last).number + 1]:
        apply_stage(cluster.kube, plan, stage.name, options=fast_options())
    save_plan(plan, tmp_path / "plan.yaml")
    common = ("--plan", str(tmp_path / "plan.yaml"), "--kubeconfig", str(cluster.kubeconfig))
    preview = run_cli("rollback", "--dry-run", *common)
    assert preview.exit_code == 0, preview.stderr
    assert f"would undo {last}" in preview.stdout
    undone = run_cli("rollback", "--yes", *common)
    assert undone.exit_code == 0, undone.stderr
    _assert_restored(cluster, plan, before, replicas)
