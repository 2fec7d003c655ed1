"""The engine on virtual time: the lab's clock moves only while the engine waits, so a grace
period costs no wall time, and a run is the same for the same seed."""

from __future__ import annotations

import time

from migrate.apply.executor import apply_stage
from migrate.apply.waits import SilentReporter, wait_until
from migrate.plan.api import make_plan
from migrate.sources.live import read_live
from tests.engine.conftest import ClusterFactory


def test_the_engine_migrates_the_instant_lab_on_virtual_time(
        virtual_cluster_factory: ClusterFactory) -> None:
    cluster = virtual_cluster_factory("guide-single-pool", timing="instant")
    plan = make_plan(read_live(cluster.kube))
    for stage in plan.stages:
        assert apply_stage(cluster.kube, plan, stage.name,
                           options=cluster.options()).outcome == "applied", stage.name
    cluster.settle(30)
    cluster.assert_ips_kept(plan.expected_ips)
    assert cluster.controllers.record.overlaps() == []
    assert {a.cilium_nodes != () for a in cluster.controllers.announcements().values()} == {True}


def test_a_wait_for_the_last_pod_advances_the_lab_clock_not_the_wall_clock(
        virtual_cluster_factory: ClusterFactory) -> None:
    cluster = virtual_cluster_factory("guide-single-pool", seed=5)
    kube = cluster.kube
    kube.patch("apps/v1", "Deployment", "controller", {"spec": {"replicas": 0}},
               namespace="metallb-system")

    def no_pod() -> tuple[bool, str, int, int]:
        left = kube.list("v1", "Pod", namespace="metallb-system",
                         label_selector="component=controller")
        return not left, f"{len(left)} pod(s)", 0 if left else 1, 1

    lab_before, wall_before = cluster.controllers.now(), time.monotonic()
    wait_until(no_pod, "MetalLB's controller has no pod", 120, cluster.waits(),
               SilentReporter())
    lab_spent = cluster.controllers.now() - lab_before
    assert 1.0 < lab_spent <= 31.0  # within the 30 s grace period, after the first poll
    assert time.monotonic() - wall_before < lab_spent  # virtual: cheaper than real time
    status = kube.get("apps/v1", "Deployment", "controller", "metallb-system")["status"]
    assert not status.get("replicas")
