"""Roll back from after every stage: the cluster is as before, object by object."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from migrate.apply.executor import apply_stage
from migrate.apply.rollback import rollback
from migrate.plan.api import make_plan
from migrate.plan.model import STAGE_NAMES
from migrate.sources.live import read_live
from tests.engine.conftest import SCENARIOS, Cluster, ClusterFactory, fast_options

Obj = dict[str, Any]
# What the controllers own or the server writes: not part of "the cluster as before".
IGNORED_META = ("resourceVersion", "managedFields", "creationTimestamp", "uid", "generation")
WATCHED = [("", "Service"), ("apps", "Deployment"), ("apps", "DaemonSet"), ("", "ConfigMap"),
           ("metallb.io", "IPAddressPool"), ("metallb.io", "L2Advertisement"),
           ("metallb.io", "BGPAdvertisement"), ("metallb.io", "BGPPeer"),
           ("metallb.io", "Community"), ("metallb.io", "BFDProfile"), ("", "Node"),
           ("cilium.io", "CiliumBGPClusterConfig"), ("cilium.io", "CiliumBGPPeerConfig"),
           ("cilium.io", "CiliumBGPAdvertisement"), ("cilium.io", "CiliumBGPNodeConfig"),
           ("cilium.io", "CiliumLoadBalancerIPPool"), ("cilium.io", "CiliumL2AnnouncementPolicy"),
           ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration")]


# Fields the API server defaults on a Service's first write (the snapshot was loaded as is).
SERVICE_DEFAULTS = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy",
                    "internalTrafficPolicy", "sessionAffinity", "externalTrafficPolicy",
                    "allocateLoadBalancerNodePorts")


def _comparable(obj: Obj) -> Obj:
    out = copy.deepcopy(obj)
    for key in IGNORED_META:
        out["metadata"].pop(key, None)
    if out["kind"] == "Service":
        spec = out.get("spec") or {}
        for key in SERVICE_DEFAULTS:
            spec.pop(key, None)
        for port in spec.get("ports") or []:
            port.pop("nodePort", None)
    status = out.get("status")
    if isinstance(status, dict):
        status.pop("conditions", None)
        if out["kind"] == "Deployment":
            out.pop("status")
    return out


def cluster_objects(cluster: Cluster) -> dict[str, Obj]:
    """Every object the migration may touch, keyed by kind/namespace/name."""
    out = {}
    for group, kind in WATCHED:
        for obj in cluster.store.list(group, kind):
            meta = obj["metadata"]
            if kind == "ConfigMap" and meta["name"].startswith("lbmigrate-"):
                continue
            out[f"{kind}/{meta.get('namespace')}/{meta['name']}"] = _comparable(obj)
    return out


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
