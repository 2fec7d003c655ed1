"""A MetalLB pool whose name is no label value migrates: the lab's API server, validating as
kube-apiserver does, accepts every label the plan writes, and refuses the raw name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from migrate.apply.executor import apply_stage
from migrate.errors import ClusterError
from migrate.kube import KubeError
from migrate.model.names import is_label_value
from migrate.model.selectors import matches
from migrate.plan.api import make_plan
from migrate.sources.live import read_live
from tests.engine.conftest import (
    CLUSTERS,
    GUARDED,
    Cluster,
    ClusterFactory,
    apply_through,
    unless,
)

LONG_POOL = "web-pool-for-the-customer-facing-shop-frontends-and-their-public-api-v2"
"""71 characters: a valid IPAddressPool name (a DNS subdomain), too long for a label value."""
POOL_LABEL = "lbmigrate.io/pool"


def long_pool_scenario(tmp_path: Path) -> Path:
    """guide-single-pool, with its pool renamed to LONG_POOL everywhere."""
    assert len(LONG_POOL) == 71 and not is_label_value(LONG_POOL)
    folder = tmp_path / "long-pool-name"
    shutil.copytree(CLUSTERS / "guide-single-pool", folder)
    for path in folder.glob("*.yaml"):
        path.write_text(path.read_text().replace("web-pool", LONG_POOL))
    return folder


@pytest.fixture
def cluster(virtual_cluster_factory: ClusterFactory, tmp_path: Path) -> Cluster:
    return virtual_cluster_factory(long_pool_scenario(tmp_path), seed=1)


def test_the_server_refuses_the_pool_name_as_a_label_value(cluster: Cluster) -> None:
    with pytest.raises(KubeError) as refused:
        cluster.kube.patch("v1", "Service", "web", {"metadata": {"labels": {
            POOL_LABEL: LONG_POOL}}}, namespace="shop")
    assert refused.value.status == 422 and refused.value.fields == ["metadata.labels"]
    assert "must be no more than 63 characters" in str(refused.value)


@GUARDED
def test_every_stage_is_accepted_and_keeps_every_ip(cluster: Cluster, guarded: bool) -> None:
    """The pool label's value is a label-safe form of the name, recorded in the plan; without
    that mapping (the guard off) the pin stage writes the raw name, which the server refuses."""
    with unless(guarded, "label_safe_names"):
        plan = make_plan(read_live(cluster.kube))
    value = plan.context["poolLabels"][LONG_POOL]
    if not guarded:
        assert value == LONG_POOL
        with pytest.raises(ClusterError) as refused:
            apply_stage(cluster.kube, plan, "pin", options=cluster.options())
        assert "metadata.labels" in str(refused.value)
        assert "must be no more than 63 characters" in str(refused.value)
        return
    assert not plan.blocked, plan.findings
    assert value != LONG_POOL and is_label_value(value)
    assert any(f.code == "pool-label-value" and value in f.message for f in plan.findings)
    expected = {k: list(v) for k, v in plan.expected_ips.items()}
    apply_through(cluster, plan, "pin")
    pinned = [s for s in cluster.store.list("", "Service", "shop")
              if s["metadata"]["name"] in ("web", "api")]
    assert {s["metadata"]["labels"][POOL_LABEL] for s in pinned} == {value}
    apply_through(cluster, plan)
    cluster.assert_ips_kept(expected)
    assert cluster.controllers.record.overlaps() == []
    pool = cluster.store.get("cilium.io", "CiliumLoadBalancerIPPool", LONG_POOL)
    for key in expected:
        namespace, name = key.split("/")
        service = cluster.store.get("", "Service", name, namespace)
        assert matches(pool["spec"].get("serviceSelector"), service["metadata"]["labels"])
