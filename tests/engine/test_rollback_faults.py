"""Rollback under failure: MetalLB's webhooks are always put back, and a second run completes."""

from __future__ import annotations

import pytest

from migrate.apply.executor import apply_stage
from migrate.apply.rollback import rollback
from migrate.errors import MigrateError
from migrate.lab.faults import FaultRule
from migrate.plan.api import make_plan
from migrate.sources.live import read_live
from tests.engine.conftest import ClusterFactory, fast_options


def _policies(cluster: object) -> list[str]:
    store = cluster.store  # type: ignore[attr-defined]
    vwc = store.get("admissionregistration.k8s.io", "ValidatingWebhookConfiguration",
                    "metallb-webhook-configuration")
    return [w["failurePolicy"] for w in vwc["webhooks"]]


def test_failed_restore_of_metallb_objects_keeps_the_webhooks_intact(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory("guide-single-pool")
    assert _policies(cluster) == ["Fail", "Fail"]
    plan = make_plan(read_live(cluster.kube))
    for stage in plan.stages[:5]:
        apply_stage(cluster.kube, plan, stage.name, options=fast_options())
    cluster.server.faults.add(FaultRule(verb="create", resource="l2advertisements",
                                        status=500))
    with pytest.raises(MigrateError):
        rollback(cluster.kube, plan, options=fast_options())
    assert _policies(cluster) == ["Fail", "Fail"], "the bypass must be undone on error"
    cluster.server.faults.clear()
    result = rollback(cluster.kube, plan, options=fast_options())
    assert result.undone[0] == "l2-cutover"
    assert _policies(cluster) == ["Fail", "Fail"]
    assert cluster.store.list("metallb.io", "L2Advertisement")
    assert not cluster.store.list("cilium.io", "CiliumL2AnnouncementPolicy")


def test_rollback_with_metallb_frozen_needs_the_bypass(cluster_factory: ClusterFactory) -> None:
    """Without the bypass MetalLB's webhook refuses the recreated objects (controller at 0)."""
    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    for stage in plan.stages:
        apply_stage(cluster.kube, plan, stage.name, options=fast_options())
    pool = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "probe", "namespace": "metallb-system"},
            "spec": {"addresses": ["10.250.0.0/30"]}}
    with pytest.raises(MigrateError, match="webhook"):
        cluster.kube.create(pool)
    result = rollback(cluster.kube, plan, options=fast_options())
    assert result.undone == ["decommission", "l2-cutover", "ipam-handover", "freeze-metallb",
                             "pin"]
