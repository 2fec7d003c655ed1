"""The hand-overs wait for what really stops, not for what the API accepted: MetalLB's speakers
before Cilium's policies appear, Cilium's agents before MetalLB's advertisements come back, and
LB-IPAM's start-up race on Cilium before 1.18.2 blocks the plan."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
import yaml

from migrate.apply.executor import apply_stage
from migrate.apply.rollback import rollback
from migrate.errors import ClusterError
from migrate.plan.api import make_plan
from migrate.plan.model import Plan
from migrate.sources.live import read_live
from migrate.sources.snapshot import read_snapshot
from tests.engine.conftest import CLUSTERS, Cluster, ClusterFactory, fast_options

SCENARIO = "guide-single-pool"


def _apply_until(cluster: Cluster, plan: Plan, last: str) -> None:
    for stage in plan.stages:
        apply_stage(cluster.kube, plan, stage.name, options=fast_options())
        if stage.name == last:
            return


def test_cilium_does_not_announce_while_a_speaker_still_does(
    cluster_factory: ClusterFactory,
) -> None:
    """A speaker that has not dropped the Services (its ServiceL2Status is still there) keeps
    the cutover from creating Cilium's policies: that would be two announcers (I2)."""
    cluster = cluster_factory(SCENARIO)
    plan = make_plan(read_live(cluster.kube))
    _apply_until(cluster, plan, "ipam-handover")
    assert cluster.store.list("metallb.io", "ServiceL2Status")
    # The speakers miss the deletion of their L2Advertisement (as one that is slow to reload).
    cluster.controllers.set_enabled(cluster.controllers.metallb_speaker, False)
    with pytest.raises(ClusterError, match="MetalLB still announces shop/"):
        apply_stage(cluster.kube, plan, "l2-cutover", options=fast_options())
    assert not cluster.store.list("cilium.io", "CiliumL2AnnouncementPolicy")
    assert not cluster.store.list("metallb.io", "L2Advertisement")
    # Once the speaker lets go, the same command finishes the stage.
    for status in cluster.store.list("metallb.io", "ServiceL2Status"):
        cluster.store.delete("metallb.io", "ServiceL2Status", status["metadata"]["name"],
                             status["metadata"]["namespace"])
    assert apply_stage(cluster.kube, plan, "l2-cutover",
                       options=fast_options()).outcome == "applied"
    assert cluster.store.list("cilium.io", "CiliumL2AnnouncementPolicy")


def test_metallb_returns_only_once_cilium_released_every_lease(
    cluster_factory: ClusterFactory,
) -> None:
    """Rolling back the cutover, MetalLB's advertisements come back only when Cilium's agents
    have let go of the leases; an agent still holding one stops the rollback before them."""
    cluster = cluster_factory(SCENARIO)
    plan = make_plan(read_live(cluster.kube))
    _apply_until(cluster, plan, "l2-cutover")
    # An agent that misses the policies' deletion: it keeps renewing its leases.
    cluster.controllers.set_enabled(cluster.controllers.cilium_l2, False)
    stop = threading.Event()

    def keep_renewing() -> None:
        while not stop.wait(0.05):
            for lease in cluster.store.list("coordination.k8s.io", "Lease", "kube-system"):
                if lease["metadata"]["name"].startswith("cilium-l2announce-"):
                    lease["spec"]["renewTime"] = cluster.store.clock.rfc3339_micro()
                    lease["metadata"].pop("resourceVersion", None)
                    cluster.store.update(lease)

    renewer = threading.Thread(target=keep_renewing, daemon=True)
    renewer.start()
    try:
        with pytest.raises(ClusterError, match="still held"):
            rollback(cluster.kube, None, to="ipam-handover", options=fast_options())
        assert not cluster.store.list("metallb.io", "L2Advertisement")
        assert not cluster.store.list("cilium.io", "CiliumL2AnnouncementPolicy")
    finally:
        stop.set()
        renewer.join()
    # The agent lets go (stops renewing): after one lease duration the rollback goes on.
    result = rollback(cluster.kube, None, to="ipam-handover", options=fast_options())
    assert result.undone == ["l2-cutover"]
    assert cluster.store.list("metallb.io", "L2Advertisement")


def _with_pending_service(tmp_path: Path, operator_image: str) -> Path:
    scenario = tmp_path / "cluster"
    shutil.copytree(CLUSTERS / SCENARIO, scenario)
    cilium = scenario / "cilium.yaml"
    cilium.write_text(cilium.read_text().replace("v1.18.4", operator_image))
    pending = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "new-app", "namespace": "shop"},
        "spec": {"type": "LoadBalancer", "ports": [{"port": 8080, "protocol": "TCP"}],
                 "selector": {"app": "new"}},
    }
    (scenario / "pending.yaml").write_text(yaml.safe_dump(pending))
    return scenario


@pytest.mark.parametrize(("version", "severity"), [
    ("v1.17.9", "ERROR"), ("v1.18.1", "ERROR"), ("v1.18.2", None), ("v1.19.8", None)])
def test_a_pending_service_blocks_the_handover_before_cilium_1_18_2(
    tmp_path: Path, version: str, severity: str | None,
) -> None:
    plan = make_plan(read_snapshot([_with_pending_service(tmp_path, version)]))
    found = [f for f in plan.findings if f.code == "lbipam-startup-race"]
    if severity is None:
        assert not found
        return
    assert [f.severity.value for f in found] == [severity]
    assert "shop/new-app (pending (no IP))" in found[0].message
    assert "cilium/cilium#43131" in found[0].message
    assert plan.blocked
