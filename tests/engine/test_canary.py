"""``migrate plan --canary POOL``: one pool's announcements move to Cilium first (stage
l2-canary), the others at l2-cutover; against the lab, with rollback and the API checks."""

from __future__ import annotations

import pytest

from migrate.apply.executor import apply_stage
from migrate.apply.rollback import rollback
from migrate.errors import InputError
from migrate.plan.api import make_plan
from migrate.plan.model import Plan
from migrate.sources.live import read_live
from migrate.sources.snapshot import read_snapshot
from migrate.verify.api import verify_api
from tests.engine.conftest import CLUSTERS, Cluster, ClusterFactory, fast_options
from tests.engine.test_rollback import cluster_objects
from tests.helpers import run_cli

SCENARIO = "several-pools-shared"  # pools general + reserved share "lan"; dns has "dns-workers"
CANARY = "dns"


def canary_plan(cluster: Cluster) -> Plan:
    plan = make_plan(read_live(cluster.kube), canary=CANARY)
    assert not plan.blocked, plan.findings
    return plan


def announced_by(cluster: Cluster) -> dict[str, tuple[str, ...]]:
    """Per Service: the stacks announcing it right now (lab view: who answers ARP)."""
    out: dict[str, set[str]] = {}
    for announcers in cluster.controllers.announcements().values():
        for service in announcers.services:
            stacks = out.setdefault(service, set())
            if announcers.metallb_node:
                stacks.add("metallb")
            if announcers.cilium_node:
                stacks.add("cilium")
    return {service: tuple(sorted(stacks)) for service, stacks in out.items()}


def test_the_canary_stage_comes_between_ipam_handover_and_l2_cutover() -> None:
    plan = make_plan(read_snapshot([str(CLUSTERS / SCENARIO)]), canary=CANARY)
    assert [(s.number, s.name) for s in plan.stages] == [
        (0, "preflight"), (1, "pin"), (2, "freeze-metallb"), (3, "ipam-handover"),
        (4, "l2-canary"), (5, "l2-cutover"), (6, "decommission")]
    canary, cutover = plan.stage("l2-canary"), plan.stage("l2-cutover")
    touched = {(a.verb, a.target.kind, a.target.name) for a in canary.actions}
    assert touched == {("delete", "L2Advertisement", "dns-workers"),
                       ("wait", "ServiceL2Status", "*"),
                       ("create", "CiliumL2AnnouncementPolicy", "dns-workers"),
                       ("wait", "Lease", "cilium-l2announce-*")}
    waits = {("wait", "Lease", "cilium-l2announce-*"), ("wait", "ServiceL2Status", "*")}
    assert not {(a.verb, a.target.kind, a.target.name) for a in cutover.actions} & (
        touched - waits)
    # Break before make: Cilium's policy comes only after MetalLB let go of the pool's Services.
    order = [a.verb for a in canary.actions]
    assert order.index("create") > order.index("wait") > order.index("delete")
    released = next(a for a in canary.actions if a.target.kind == "ServiceL2Status")
    assert released.wait is not None
    assert set(released.wait["services"]) == {pin for pin in plan.expected_ips
                                              if pin.startswith("dns/")}
    # Without the canary, the same objects change: the canary only splits the work in two.
    whole = make_plan(read_snapshot([str(CLUSTERS / SCENARIO)])).stage("l2-cutover")
    split = [(a.verb, a.target.key) for a in [*canary.actions, *cutover.actions]
             if a.verb != "wait"]
    assert sorted(split) == sorted((a.verb, a.target.key) for a in whole.actions
                                   if a.verb != "wait")
    assert set(canary.actions[-1].wait["services"]) == {  # type: ignore[index]
        key for key in plan.context["announced"] if key.startswith("dns/")}


@pytest.mark.parametrize(
    ("scenario", "pool", "message"),
    [
        (SCENARIO, "nope", "no MetalLB IPAddressPool is named 'nope' (pools: dns, general,"
                           " reserved)"),
        (SCENARIO, "general", "L2Advertisement metallb-system/lan field --canary: pool general"
                              " cannot be a canary: this advertisement also announces"
                              " reserved"),
        ("legacy-configmap", "default", "pool default cannot be a canary: a legacy"
                                        " configuration"),
        ("bgp-kinds", None, "pool {pool} cannot be a canary: no L2Advertisement announces it"),
    ],
)
def test_a_pool_that_cannot_be_a_canary_is_refused_by_name(
    scenario: str, pool: str | None, message: str
) -> None:
    snapshot = read_snapshot([str(CLUSTERS / scenario)])
    if pool is None:  # a pool announced over BGP only
        from migrate.translate.translator import translate

        l2 = {name for names in translate(snapshot).l2_pools.values() for name in names}
        pool = next(p.name for p in snapshot.pools if p.name not in l2)
        message = message.format(pool=pool)
    with pytest.raises(InputError) as refused:
        make_plan(snapshot, canary=pool)
    assert message in str(refused.value)


def test_plan_canary_on_the_command_line() -> None:
    shown = run_cli("plan", "--from", str(CLUSTERS / SCENARIO), "--canary", CANARY)
    assert shown.exit_code == 0, shown.stderr
    assert "Stage 4: l2-canary — Hand the ARP answers of pool dns to Cilium first" in shown.stdout
    refused = run_cli("plan", "--from", str(CLUSTERS / SCENARIO), "--canary", "general")
    assert refused.exit_code == 1
    assert "--canary" in refused.stderr and "also announces reserved" in refused.stderr


def test_canary_then_cutover_keeps_one_announcer_and_every_ip(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = canary_plan(cluster)
    canary_services = set(plan.context["canary"]["services"])
    others = set(plan.context["announced"]) - canary_services
    assert canary_services and others
    for stage in plan.stages:
        assert apply_stage(cluster.kube, plan, stage.name,
                           options=fast_options()).outcome == "applied", stage.name
        cluster.settle(0.2)
        now = announced_by(cluster)
        assert all(len(stacks) == 1 for stacks in now.values()), (stage.name, now)  # I2
        report = verify_api(cluster.kube, plan)
        assert report.ok, (stage.name, report.failures)
        if stage.name == "l2-canary":
            assert report.phase == "canary"
            assert {key for key, stacks in now.items() if stacks == ("cilium",)} \
                == canary_services
            assert {key for key, stacks in now.items() if stacks == ("metallb",)} == others
            leased = {check.subject for check in report.checks if check.name == "lease"}
            assert leased == {f"Service {key}" for key in canary_services}
    assert set(announced_by(cluster).values()) == {("cilium",)}
    cluster.assert_ips_kept(plan.expected_ips)


def test_verify_names_an_advertisement_the_canary_left_behind(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = canary_plan(cluster)
    for stage in plan.stages[:5]:
        apply_stage(cluster.kube, plan, stage.name, options=fast_options())
    cluster.settle(0.2)
    ad = {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
          "metadata": {"name": "dns-workers", "namespace": "metallb-system"},
          "spec": {"ipAddressPools": [CANARY]}}
    # Somebody recreates it by hand: with MetalLB's controller stopped that takes its
    # webhooks failing open.
    webhooks = cluster.store.get("admissionregistration.k8s.io",
                                 "ValidatingWebhookConfiguration", plan.context["webhook"])
    for webhook in webhooks["webhooks"]:
        webhook["failurePolicy"] = "Ignore"
    cluster.store.update(webhooks)
    cluster.store.create(ad)
    cluster.settle(0.2)
    report = verify_api(cluster.kube, plan)
    failed = {(check.name, check.subject): check.detail for check in report.failures}
    assert failed[("metallb-advertisements", "L2Advertisement metallb-system/dns-workers")] \
        == "still present after l2-canary: MetalLB's speakers answer ARP too"


@pytest.mark.parametrize("last", ["l2-canary", "l2-cutover", "decommission"])
def test_rollback_after_a_canary_restores_the_cluster(
    cluster_factory: ClusterFactory, last: str
) -> None:
    cluster = cluster_factory(SCENARIO)
    before = cluster_objects(cluster)
    plan = canary_plan(cluster)
    applied = []
    for stage in plan.stages:
        apply_stage(cluster.kube, plan, stage.name, options=fast_options())
        applied.append(stage.name)
        if stage.name == last:
            break
    cluster.settle(0.1)
    result = rollback(cluster.kube, plan, options=fast_options())
    assert result.undone == list(reversed(applied[1:]))
    cluster.settle(0.2)
    assert cluster_objects(cluster) == before
    assert set(announced_by(cluster).values()) == {("metallb",)}
    cluster.assert_ips_kept(plan.expected_ips)


def test_rollback_to_the_canary_keeps_it(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = canary_plan(cluster)
    for stage in plan.stages:
        apply_stage(cluster.kube, plan, stage.name, options=fast_options())
    cluster.settle(0.1)
    result = rollback(cluster.kube, plan, to="l2-canary", options=fast_options())
    assert result.undone == ["decommission", "l2-cutover"]
    cluster.settle(0.2)
    now = announced_by(cluster)
    canary_services = set(plan.context["canary"]["services"])
    assert {key for key, stacks in now.items() if stacks == ("cilium",)} == canary_services
    assert all(stacks == ("metallb",) for key, stacks in now.items()
               if key not in canary_services)
    assert verify_api(cluster.kube, plan).phase == "canary"
    cluster.assert_ips_kept(plan.expected_ips)
