"""Preflight is stage 0 of the plan: its findings are the plan's, and an ERROR blocks apply."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from migrate.apply.executor import apply_stage
from migrate.errors import BlockedError
from migrate.kube import Kube
from migrate.lab.models.interfaces import INTERFACES_ANNOTATION, agent_devices
from migrate.lab.server import LabServer
from migrate.lab.store import Clock, Store
from migrate.plan.api import make_plan
from migrate.preflight import run_preflight
from migrate.sources.live import read_live
from tests.conftest import TESTDATA
from tests.engine.conftest import (
    GUARDED,
    ClusterFactory,
    altered_scenario,
    apply_through,
    fast_options,
    unless,
)


def test_kube_proxy_replacement_off_blocks_the_plan(tmp_path: Path) -> None:
    folder = tmp_path / "cluster"
    shutil.copytree(TESTDATA / "clusters" / "guide-single-pool", folder)
    cilium = folder / "cilium.yaml"
    cilium.write_text(cilium.read_text().replace('kube-proxy-replacement: "true"',
                                                 'kube-proxy-replacement: "false"'))
    store, _ = Store.from_snapshot([folder], Clock.real())
    server = LabServer(store).start()
    kube = Kube.from_kubeconfig(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    try:
        snapshot = read_live(kube)
        plan = make_plan(snapshot)
        preflight = run_preflight(snapshot)
        assert preflight.blocking
        codes = {f.code for f in plan.findings}
        assert {f"preflight:{f.code.removeprefix('preflight:')}"
                for f in preflight.findings()} <= codes
        assert plan.blocked
        assert any("kube-proxy-replacement" in check for check in plan.stages[0].checks_before)
        with pytest.raises(BlockedError, match="ERROR findings"):
            apply_stage(kube, plan, "pin", options=fast_options())
        assert "lbipam.cilium.io/ips" not in (
            store.get("", "Service", "web", "shop")["metadata"].get("annotations") or {})
    finally:
        kube.close()
        server.stop()


# -- the preflight guards against their hazards, on the asynchronous lab ---------------------

NODES = (("cp-1", 11), ("worker-1", 21), ("worker-2", 22))


@GUARDED
def test_the_device_carrying_each_pool_must_be_among_ciliums_devices(
        virtual_cluster_factory: ClusterFactory, tmp_path: Path, guarded: bool) -> None:
    """MetalLB names no interface, so it answers on every interface of a node, the pool's
    subnet (ens19) included; Cilium's devices are restricted to ens20. Migrated, the agents take
    the leases and answer on ens20 only: nobody answers on the pool's segment any more."""
    interfaces = [(f"  name: {node}\n", f"  name: {node}\n  annotations: {{{INTERFACES_ANNOTATION}:"
                   f" 'ens18=10.77.0.{n}/24,ens19=192.168.105.{n}/24,ens20=10.99.0.{n}/24'}}\n")
                  for node, n in NODES]
    scenario = altered_scenario(tmp_path / "cluster", "guide-single-pool", {
        "metallb-config.yaml": [("  interfaces: [ens20]\n", "")], "nodes.yaml": interfaces})
    cluster = virtual_cluster_factory(scenario, seed=1)
    before = cluster.controllers.announcements()
    assert before and all(a.metallb_nodes and not a.metallb_interfaces for a in before.values())
    with unless(guarded, "pool_devices"):
        plan = make_plan(read_live(cluster.kube))
    devices = [f for f in plan.findings if f.code == "preflight:l2-devices"]
    if guarded:
        assert plan.blocked and [f.severity.value for f in devices] == ["ERROR"]
        assert ("pool web-pool (192.168.105.128/27): on worker-1 its subnet 192.168.105.0/24 is"
                " on ens19" in devices[0].message)
        assert "answer on no interface of that subnet" in devices[0].message
        return
    assert not plan.blocked and all(f.severity.value != "ERROR" for f in devices)
    apply_through(cluster, plan, "l2-cutover")
    cluster.assert_ips_kept(plan.expected_ips)
    config = cluster.store.get("", "ConfigMap", "cilium-config", "kube-system")["data"]
    after = cluster.controllers.announcements()
    assert set(after) == set(before)
    for ip, answer in after.items():
        assert answer.cilium_nodes and not answer.metallb_nodes, ip
        for node in answer.cilium_nodes:
            answering = answer.cilium_interfaces or tuple(
                agent_devices(cluster.store.get("", "Node", node), config).names)
            assert "ens19" not in answering and answering == ("ens20",), (ip, node)


def _lease_requests_estimate(found: str) -> float:
    """The lease requests per second the client-rate-limit check expects at the API server."""
    match = re.search(r"about ([\d.]+) lease acquisition attempts/s .* and ([\d.]+) renewals/s",
                      found)
    assert match, found
    return float(match.group(1)) + float(match.group(2))


@GUARDED
def test_the_lease_load_follows_the_retry_period(
        virtual_cluster_factory: ClusterFactory, tmp_path: Path, guarded: bool) -> None:
    """Every eligible agent calls the API server once per retry period and Service (the holder
    renews, the others try to acquire): the lab's agents, once the cutover has settled, make
    what the check estimates; an estimate from the renew deadline is far below."""
    scenario = altered_scenario(tmp_path / "cluster", "guide-single-pool", {"cilium.yaml": [
        ("l2-announcements-retry-period: 2s", "l2-announcements-retry-period: 500ms")]})
    cluster = virtual_cluster_factory(scenario, seed=1)
    snapshot = read_live(cluster.kube)
    with unless(guarded, "lease_load"):
        estimate = _lease_requests_estimate(
            run_preflight(snapshot).check("client-rate-limit").found)
    apply_through(cluster, plan=make_plan(snapshot), last="l2-cutover")
    cluster.settle(20)
    since = cluster.controllers.now()
    cluster.settle(60)
    measured = cluster.controllers.requests.count(resource="leases", since=since,
                                                  process="cilium-agent") / 60
    if guarded:
        assert 0.7 <= estimate / measured <= 1.3, (estimate, measured)
    else:
        assert estimate < measured / 4, (estimate, measured)


@GUARDED
def test_the_known_bugs_of_the_clusters_versions_are_reported(
        virtual_cluster_factory: ClusterFactory, tmp_path: Path, guarded: bool) -> None:
    """Cilium 1.20.1 announcing over L2: cilium/cilium#48626 (after a LAN outage the new lease
    holder may never answer ARP) is named, with what the tool does and the remedy."""
    scenario = altered_scenario(tmp_path / "cluster", "guide-single-pool",
                                {"cilium.yaml": [("v1.18.4", "v1.20.1")]})
    cluster = virtual_cluster_factory(scenario, seed=1)
    with unless(guarded, "known_bugs"):
        plan = make_plan(read_live(cluster.kube))
    bugs = [f for f in plan.findings if f.code == "preflight:known-bugs"]
    if guarded:
        assert len(bugs) == 1 and "48626" in bugs[0].message
        assert "Cilium 1.20.1" in bugs[0].message
    else:
        assert bugs == []
