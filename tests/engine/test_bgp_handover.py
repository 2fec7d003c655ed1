"""The BGP hand-over on the lab, on virtual time (realistic timing, several seeds): node by node,
no prefix ever without a next hop at the router, never two speakers peering from one node
address, and back again exactly, from after every stage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from migrate.apply.executor import apply_stage, run_actions, stale_objects
from migrate.apply.rollback import rollback
from migrate.apply.waits import SilentReporter
from migrate.errors import MigrateError
from migrate.plan.api import make_plan, save_plan
from migrate.plan.model import Plan
from migrate.sources.live import read_live
from migrate.verify import run_verify
from tests.engine.conftest import CLUSTERS, Cluster, ClusterFactory
from tests.engine.test_rollback import cluster_objects
from tests.helpers import run_cli

SCENARIO = "bgp-kinds"
NODES = ("cp-1", "worker-1", "worker-2")


def start(factory: ClusterFactory, scenario: str | Path = SCENARIO, seed: int = 1) -> tuple[
        Cluster, Plan]:
    cluster = factory(scenario, seed=seed)
    cluster.settle(30)  # MetalLB's speakers are up and peering
    plan = make_plan(read_live(cluster.kube))
    assert not plan.blocked, [f for f in plan.findings if f.severity.value == "ERROR"]
    return cluster, plan


def apply_all(cluster: Cluster, plan: Plan, until: str | None = None) -> None:
    for stage in plan.stages:
        assert apply_stage(cluster.kube, plan, stage.name,
                           options=cluster.options()).outcome == "applied", stage.name
        cluster.settle(2)
        if stage.name == until:
            return


def assert_always_routed(cluster: Cluster) -> None:
    record = cluster.controllers.bgp_record
    assert record.collisions == []  # never two speakers from one node address
    assert record.no_next_hop() == []  # every prefix always had a next hop at the router
    assert set(record.prefixes()) == {"203.0.113.1/32", "203.0.113.2/32"}


def speakers(cluster: Cluster) -> set[tuple[str, str, str]]:
    return {(s.node, s.stack, s.state) for s in cluster.controllers.bgp_sessions()}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_the_handover_and_its_rollback_keep_every_prefix_routed(
        virtual_cluster_factory: ClusterFactory, seed: int) -> None:
    cluster, plan = start(virtual_cluster_factory, seed=seed)
    before = cluster_objects(cluster)
    began = cluster.controllers.now()
    apply_all(cluster, plan)
    cluster.settle(30)
    assert_always_routed(cluster)
    assert speakers(cluster) == {(n, "cilium", "established") for n in NODES}
    hops = cluster.controllers.bgp_announcements()
    assert hops["203.0.113.1/32"].cilium_nodes == NODES
    assert hops["203.0.113.2/32"].cilium_nodes == ("worker-1", "worker-2")  # Local: endpoints
    assert not hops["203.0.113.1/32"].metallb_nodes
    # The router saw the nodes move one at a time: never fewer than two next hops for the
    # prefix every node advertises.
    assert [s for s in cluster.controllers.bgp_record.fewer_next_hops(2, "203.0.113.1/32")
            if s.start >= began] == []
    cluster.assert_ips_kept(plan.expected_ips)
    result = rollback(cluster.kube, plan, options=cluster.options())
    assert result.undone == [s.name for s in reversed(plan.stages[1:])]
    cluster.settle(30)
    assert_always_routed(cluster)
    assert speakers(cluster) == {(n, "metallb", "established") for n in NODES}
    after = cluster_objects(cluster)
    assert sorted(after) == sorted(before)
    for key in before:
        assert after[key] == before[key], key
    assert cluster.store.list("cilium.io", "CiliumBGPNodeConfig") == []


@pytest.mark.parametrize("last", ["pin", "bgp-prepare", "freeze-metallb", "ipam-handover",
                                  "bgp-handover", "l2-cutover", "decommission"])
def test_rollback_after_every_stage_restores_the_cluster(
        virtual_cluster_factory: ClusterFactory, last: str) -> None:
    cluster, plan = start(virtual_cluster_factory, seed=7)
    before = cluster_objects(cluster)
    webhook = cluster.store.get("admissionregistration.k8s.io",
                                "ValidatingWebhookConfiguration",
                                "metallb-webhook-configuration")["webhooks"]
    apply_all(cluster, plan, until=last)
    rollback(cluster.kube, plan, options=cluster.options())
    cluster.settle(30)
    after = cluster_objects(cluster)
    assert sorted(after) == sorted(before)
    for key in before:
        assert after[key] == before[key], key
    # The bypass decommission's undo needs is always put back (failurePolicy Fail).
    assert cluster.store.get("admissionregistration.k8s.io", "ValidatingWebhookConfiguration",
                             "metallb-webhook-configuration")["webhooks"] == webhook
    assert_always_routed(cluster)
    assert speakers(cluster) == {(n, "metallb", "established") for n in NODES}
    cluster.assert_ips_kept(plan.expected_ips)


def test_a_handover_stopped_part_way_resumes_and_rolls_back(
        virtual_cluster_factory: ClusterFactory) -> None:
    cluster, plan = start(virtual_cluster_factory, seed=11)
    apply_all(cluster, plan, until="ipam-handover")
    # The router password's Secret is missing for a while: Cilium on the first node never
    # comes up, and the stage stops there with that node between the two speakers.
    secret = cluster.store.get("", "Secret", "router-password", "kube-system")
    cluster.store.delete("", "Secret", "router-password", "kube-system")
    with pytest.raises(MigrateError) as stopped:
        apply_stage(cluster.kube, plan, "bgp-handover", options=cluster.options())
    assert "router-password" in str(stopped.value)
    for key in ("uid", "resourceVersion", "creationTimestamp", "managedFields"):
        secret["metadata"].pop(key, None)
    cluster.store.create(secret)
    assert apply_stage(cluster.kube, plan, "bgp-handover",
                       options=cluster.options()).outcome == "applied"
    cluster.settle(20)
    assert speakers(cluster) == {(n, "cilium", "established") for n in NODES}
    rollback(cluster.kube, plan, options=cluster.options())
    cluster.settle(30)
    assert speakers(cluster) == {(n, "metallb", "established") for n in NODES}
    assert_always_routed(cluster)


def test_a_stage_stopped_between_the_two_speakers_resumes_from_there(
        virtual_cluster_factory: ClusterFactory) -> None:
    cluster, plan = start(virtual_cluster_factory, seed=12)
    apply_all(cluster, plan, until="ipam-handover")
    stage = plan.stage("bgp-handover")
    # A first run that dies after parking worker-1 (after its 'none' label).
    cut = next(i for i, a in enumerate(stage.actions)
               if a.target.name == "worker-1" and a.verb == "patch") + 1
    run_actions(cluster.kube, plan, stage.actions[:cut], options=cluster.options(),
                reporter=SilentReporter())
    cluster.settle(20)
    labels = cluster.store.get("", "Node", "worker-1")["metadata"]["labels"]
    assert labels["lbmigrate.io/bgp-speaker"] == "none"
    # apply sees worker-1 at a step of the stage, not a cluster that changed under the plan.
    assert stale_objects(cluster.kube, plan, stage, resuming=True) == []
    assert stale_objects(cluster.kube, plan, stage, resuming=False)


def test_metallb_0_15_s_service_bgp_status_is_what_the_handover_waits_on(
        virtual_cluster_factory: ClusterFactory, tmp_path: Path) -> None:
    scenario = tmp_path / "bgp-kinds-0.15"
    shutil.copytree(CLUSTERS / SCENARIO, scenario)
    install = scenario / "metallb-install.yaml"
    install.write_text(install.read_text().replace("v0.14.9", "v0.15.2"))
    cluster, plan = start(virtual_cluster_factory, scenario, seed=3)
    assert plan.context["bgp"]["metallbStatus"] is True
    assert cluster.store.list("metallb.io", "ServiceBGPStatus")
    apply_all(cluster, plan)
    cluster.settle(30)
    assert cluster.store.list("metallb.io", "ServiceBGPStatus") == []
    assert_always_routed(cluster)
    rollback(cluster.kube, plan, options=cluster.options())
    cluster.settle(30)
    nodes = {s["status"]["node"] for s in cluster.store.list("metallb.io", "ServiceBGPStatus")}
    assert nodes == set(NODES)
    assert_always_routed(cluster)


def test_verify_bgp_follows_the_handover(virtual_cluster_factory: ClusterFactory,
                                         tmp_path: Path) -> None:
    cluster, plan = start(virtual_cluster_factory, seed=5)

    def failing() -> set[tuple[str, str]]:
        result = run_verify(cluster.kube, plan, bgp=True)
        assert result.api is not None
        return {(c.name, c.subject) for c in result.api.failures if c.name.startswith("bgp")}

    apply_all(cluster, plan, until="ipam-handover")
    assert failing() == set()  # MetalLB's everywhere, Cilium nowhere
    apply_stage(cluster.kube, plan, "bgp-handover", options=cluster.options())
    cluster.settle(10)
    assert failing() == set()
    # A node whose agent loses its sessions shows.
    cluster.store.delete("", "Secret", "router-password", "kube-system")
    cluster.controllers.set_enabled(cluster.controllers.cilium_l2, False)
    cluster.controllers.set_enabled(cluster.controllers.cilium_l2, True)
    cluster.settle(10)
    assert ("bgp-cilium-sessions", "Node worker-1") in failing()
    path = tmp_path / "plan.yaml"
    save_plan(plan, path)
    shown = run_cli("verify", "--plan", str(path), "--kubeconfig", str(cluster.kubeconfig),
                    "--bgp", "-o", "json")
    assert shown.exit_code == 4
    assert "bgp-cilium-sessions" in shown.stdout
    assert run_cli("verify", "--bgp").exit_code == 2


def test_the_lab_s_bgp_view_is_plain_data(virtual_cluster_factory: ClusterFactory) -> None:
    """What the wire test reads: per node and stack, its sessions (peer, ASNs, port, password
    Secret, multihop) and the routes it advertises (attributes)."""
    cluster, _ = start(virtual_cluster_factory, seed=2)
    sessions = cluster.controllers.bgp_sessions()
    dumped = yaml.safe_dump([{
        "node": s.node, "stack": s.stack, "peer": s.peer, "address": s.peer_address,
        "asn": [s.local_asn, s.peer_asn], "port": s.peer_port, "secret": s.password_secret,
        "multihop": s.ebgp_multihop, "state": s.state,
        "routes": [[r.prefix, list(r.communities), r.local_pref] for r in s.advertised],
    } for s in sessions])
    assert "lab-md5-secret" not in dumped
    assert "203.0.113.1/32" in dumped and "64512:100" in dumped


def test_batches_keep_the_local_service_routed(virtual_cluster_factory: ClusterFactory) -> None:
    cluster = virtual_cluster_factory(SCENARIO, seed=8)
    cluster.settle(30)
    plan = make_plan(read_live(cluster.kube), bgp_batch=2)
    # web/api's only next hops are worker-1 and worker-2: they never hand over together.
    assert plan.context["bgp"]["batches"] == [["cp-1", "worker-1"], ["worker-2"]]
    apply_all(cluster, plan)
    cluster.settle(30)
    assert_always_routed(cluster)
    assert speakers(cluster) == {(n, "cilium", "established") for n in NODES}
    rollback(cluster.kube, plan, options=cluster.options())
    cluster.settle(30)
    assert_always_routed(cluster)


def test_a_local_service_on_one_node_is_unrouted_only_while_that_node_hands_over(
        virtual_cluster_factory: ClusterFactory, tmp_path: Path) -> None:
    """What the plan's bgp-single-next-hop WARNING says, on the wire's side: a router keeps one
    session per neighbour address, so the Service's only node has a gap of its own."""
    scenario = tmp_path / "bgp-kinds-one-endpoint"
    shutil.copytree(CLUSTERS / SCENARIO, scenario)
    services = scenario / "services.yaml"
    docs = list(yaml.safe_load_all(services.read_text()))
    for doc in docs:
        if doc["kind"] == "EndpointSlice":
            doc["endpoints"] = doc["endpoints"][:1]  # worker-1 only
    services.write_text(yaml.safe_dump_all(docs))
    cluster, plan = start(virtual_cluster_factory, scenario, seed=9)
    assert {f.obj for f in plan.findings if f.code == "bgp-single-next-hop"} == {
        "Service web/api"}
    began = cluster.controllers.now()
    apply_all(cluster, plan)
    cluster.settle(30)
    record = cluster.controllers.bgp_record
    assert record.collisions == []
    gaps = [s for s in record.no_next_hop() if s.start >= began]
    assert {s.prefix for s in gaps} == {"203.0.113.2/32"}  # web/api alone, once
    assert len(gaps) == 1 and 0 < gaps[0].length(cluster.controllers.now()) < 30
    assert not [s for s in record.no_next_hop("203.0.113.1/32")]


def test_dropping_the_handover_label_after_the_migration_keeps_the_sessions(
        virtual_cluster_factory: ClusterFactory) -> None:
    """The manual last step: the ClusterConfig no longer needs the label; Cilium's operator
    writes the same CiliumBGPNodeConfigs, so no session resets."""
    cluster, plan = start(virtual_cluster_factory, seed=6)
    apply_all(cluster, plan)
    cluster.settle(20)
    assert "lbmigrate.io/bgp-speaker=cilium from the nodeSelector" in plan.context[
        "manualLastStep"]
    changes = len(cluster.controllers.bgp_record.changes)
    config = cluster.store.get("cilium.io", "CiliumBGPClusterConfig", "lbmigrate-bgp")
    config["spec"]["nodeSelector"]["matchLabels"].pop("lbmigrate.io/bgp-speaker")
    if not config["spec"]["nodeSelector"]["matchLabels"]:
        config["spec"]["nodeSelector"].pop("matchLabels")
    config["metadata"].pop("resourceVersion")
    cluster.store.update(config)
    cluster.settle(30)
    assert len(cluster.controllers.bgp_record.changes) == changes
    assert speakers(cluster) == {(n, "cilium", "established") for n in NODES}
