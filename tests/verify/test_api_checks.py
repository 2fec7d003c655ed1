"""``verify_api`` against the lab, the ARP-to-announcer match, and ``migrate verify --plan``
with the wire replaced by a table of answers (no root needed)."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from migrate.apply.executor import apply_stage
from migrate.plan.api import make_plan, save_plan
from migrate.plan.model import Plan
from migrate.sources.live import read_live
from migrate.verify import arp
from migrate.verify.announcers import match_announcers
from migrate.verify.api import ApiReport, Check, verify_api
from migrate.verify.arp import ArpEntry, ArpReport, ArpResult, classify
from tests.engine.conftest import Cluster, ClusterFactory, cluster_factory, fast_options
from tests.helpers import run_cli

__all__ = ["cluster_factory"]

SCENARIO = "guide-single-pool"
POOLS = "cilium.io/v2"


def planned(cluster: Cluster) -> Plan:
    plan = make_plan(read_live(cluster.kube))
    assert not plan.blocked, plan.findings
    return plan


def apply_until(cluster: Cluster, plan: Plan, last: str) -> None:
    """Apply the plan's stages in order, up to and including ``last``."""
    for stage in plan.stages:
        assert apply_stage(cluster.kube, plan, stage.name,
                           options=fast_options()).outcome == "applied"
        if stage.name == last:
            break
    cluster.settle(0.1)


def by_name(report: ApiReport, name: str) -> dict[str, Check]:
    return {check.subject: check for check in report.checks if check.name == name}


# --------------------------------------------------------------------------- verify_api


def test_before_the_migration_metallb_announces_and_only_ips_are_checked(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = planned(cluster)
    report = verify_api(cluster.kube, plan)
    assert report.ok, report.failures
    assert report.phase == "metallb"
    assert {check.name for check in report.checks} == {"service-ips", "one-announcer"}
    assert set(by_name(report, "service-ips")) == {f"Service {k}" for k in plan.expected_ips}
    assert set(by_name(report, "one-announcer")) == {f"Service {k}" for k in plan.expected_ips}
    view = cluster.controllers.announcements()
    assert dict(report.announcers) == {ip: (view[ip].metallb_node,) for ip in view}


def test_after_every_stage_each_check_passes_and_lease_holders_announce(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = planned(cluster)
    apply_until(cluster, plan, plan.stages[-1].name)
    report = verify_api(cluster.kube, plan)
    assert report.ok, report.failures
    assert report.phase == "cilium"
    assert "l2-cutover" in report.applied
    assert {c.name for c in report.checks} == {"service-ips", "pool-conflict", "lbipam", "lease",
                                                "metallb-advertisements", "metallb-released"}
    assert set(by_name(report, "lease")) == {f"Service {k}" for k in plan.context["announced"]}
    assert set(by_name(report, "metallb-released")) == {f"Service {k}" for k in plan.expected_ips}
    view = cluster.controllers.announcements()
    assert dict(report.announcers) == {ip: (view[ip].cilium_node,) for ip in view}
    assert report.to_json()["api"][0].keys() == {"name", "object", "status", "detail"}


def test_after_cutover_a_service_metallb_still_announces_fails(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = planned(cluster)
    apply_until(cluster, plan, "l2-cutover")
    cluster.controllers.set_enabled(cluster.controllers.metallb_speaker, False)
    key = sorted(plan.expected_ips)[0]
    namespace, name = key.split("/")
    # What a speaker that missed the deletion of its L2Advertisement leaves behind.
    cluster.kube.create({
        "apiVersion": "metallb.io/v1beta1", "kind": "ServiceL2Status",
        "metadata": {"name": "l2-left", "namespace": plan.metallb_namespace, "labels": {
            "metallb.io/node": "worker-1", "metallb.io/service-name": name,
            "metallb.io/service-namespace": namespace}},
    })
    report = verify_api(cluster.kube, plan)
    assert not report.ok
    failed = [c for c in report.failures if c.name == "metallb-released"]
    assert [c.subject for c in failed] == [f"Service {key}"]
    assert "worker-1" in failed[0].detail


def test_a_cilium_lease_while_metallb_announces_is_a_second_announcer(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = planned(cluster)
    apply_until(cluster, plan, "ipam-handover")
    for action in plan.stage("l2-cutover").actions:  # make before break: policies first
        if action.verb == "create" and action.body is not None:
            cluster.kube.create(action.body)
    cluster.settle()
    report = verify_api(cluster.kube, plan)
    assert report.phase == "metallb"
    assert {(c.name, c.subject) for c in report.failures} == {
        ("one-announcer", f"Service {key}") for key in plan.context["announced"]}
    assert "and by Cilium" in report.failures[0].detail


def test_a_service_off_its_plan_ip_or_gone_fails_i1(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = planned(cluster)
    other = dataclasses.replace(plan, expected_ips={**plan.expected_ips,
                                                    "shop/web": ["192.168.105.140"]})
    cluster.kube.delete("v1", "Service", "grafana", "shop")
    report = verify_api(cluster.kube, other)
    failed = {check.subject: check.detail for check in report.failures}
    assert failed == {
        "Service shop/web": "has 192.168.105.128 instead of 192.168.105.140",
        "Service shop/grafana": "the Service is gone",
    }


def test_a_conflicting_pool_fails_alone_while_the_older_pool_holds_the_ips(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = planned(cluster)
    apply_until(cluster, plan, "ipam-handover")
    cluster.kube.create({"apiVersion": POOLS, "kind": "CiliumLoadBalancerIPPool",
                         "metadata": {"name": "overlap"},
                         "spec": {"blocks": [{"cidr": "192.168.105.128/28"}]}})
    cluster.settle()
    report = verify_api(cluster.kube, plan)
    assert [(c.name, c.subject) for c in report.failures] == [
        ("pool-conflict", "CiliumLoadBalancerIPPool overlap")]
    assert all(check.ok for check in by_name(report, "lbipam").values())


def test_lbipam_refusal_and_a_short_ips_used_count_fail_the_services(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = planned(cluster)
    apply_until(cluster, plan, "ipam-handover")
    cluster.controllers.set_enabled(cluster.controllers.cilium_lbipam, False)
    web = cluster.kube.get("v1", "Service", "web", "shop")
    refused = {"type": "cilium.io/IPAMRequestSatisfied", "status": "False", "reason": "no_pool",
               "message": "There are no enabled CiliumLoadBalancerIPPools that match this"
                          " service", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    cluster.kube.patch("v1", "Service", "web", {"status": {
        "loadBalancer": web["status"]["loadBalancer"], "conditions": [refused]}},
        namespace="shop", subresource="status")
    report = verify_api(cluster.kube, plan)
    assert [c.subject for c in report.failures] == ["Service shop/web"]
    assert "no_pool" in report.failures[0].detail

    pool = cluster.kube.get(POOLS, "CiliumLoadBalancerIPPool", "web-pool")
    conditions = [dict(c, message="1") if c["type"] == "cilium.io/IPsUsed" else c
                  for c in pool["status"]["conditions"]]
    cluster.kube.patch(POOLS, "CiliumLoadBalancerIPPool", "web-pool",
                       {"status": {"conditions": conditions}}, subresource="status")
    lbipam = by_name(verify_api(cluster.kube, plan), "lbipam")
    assert not any(check.ok for check in lbipam.values())
    assert "pool web-pool uses 1 IPs, fewer than the 3 planned in it" in (
        lbipam["Service shop/api"].detail)


def test_after_cutover_a_missing_or_misplaced_lease_and_a_left_advertisement_fail(
    cluster_factory: ClusterFactory,
) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = planned(cluster)
    apply_until(cluster, plan, "l2-cutover")
    controllers = cluster.controllers
    controllers.set_enabled(controllers.cilium_l2, False)
    controllers.set_enabled(controllers.metallb_controller, False)  # its webhook with it
    cluster.kube.delete("coordination.k8s.io/v1", "Lease", "cilium-l2announce-shop-api",
                        plan.cilium_namespace)
    cluster.kube.patch("coordination.k8s.io/v1", "Lease", "cilium-l2announce-shop-web",
                       {"spec": {"holderIdentity": "cp-1"}}, namespace=plan.cilium_namespace)
    cluster.kube.create({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                         "metadata": {"name": "again", "namespace": plan.metallb_namespace},
                         "spec": {}})
    cluster.settle()
    report = verify_api(cluster.kube, plan)
    failed = {(c.name, c.subject): c.detail for c in report.failures}
    # The advertisement left behind makes MetalLB's speakers announce again (their
    # ServiceL2Status objects are back): a second announcer beside Cilium's lease holders.
    assert set(failed) == {
        ("lease", "Service shop/api"),
        ("lease", "Service shop/web"),
        ("metallb-advertisements", f"L2Advertisement {plan.metallb_namespace}/again"),
        *(("metallb-released", f"Service {key}") for key in plan.expected_ips),
    }
    assert "no lease" in failed[("lease", "Service shop/api")]
    assert "held by cp-1, which no policy selects" in failed[("lease", "Service shop/web")]
    assert report.announcers["192.168.105.128"] == ("cp-1",)


# --------------------------------------------------------------------------- ARP vs API

MAC_1, MAC_2, MAC_X = "02:00:00:00:00:01", "02:00:00:00:00:02", "02:00:00:00:00:99"


def arp_report(answers: dict[str, tuple[str, ...]]) -> ArpReport:
    owners = {MAC_1: "node-1", MAC_2: "node-2"}
    entries = tuple(
        ArpEntry(IPv4Address(ip), classify(macs), macs,
                 tuple(owners[m] for m in macs if m in owners))
        for ip, macs in answers.items())
    return ArpReport("eth9", entries, {"node-1": (MAC_1,), "node-2": (MAC_2,)})


def test_each_ip_is_held_to_the_node_the_api_names() -> None:
    answers = {"192.0.2.1": (MAC_1,), "192.0.2.2": (MAC_2,), "192.0.2.3": (MAC_X,),
               "192.0.2.4": (MAC_1, MAC_2), "192.0.2.5": (), "192.0.2.6": (MAC_2,)}
    api = ApiReport((), "cilium", {"192.0.2.1": ("node-1",), "192.0.2.2": ("node-1",),
                                   "192.0.2.3": ("node-1",), "192.0.2.4": ("node-1",),
                                   "192.0.2.5": ("node-1",)})
    rows = {str(row.entry.ip): row for row in match_announcers(arp_report(answers), api)}
    assert {ip: row.ok for ip, row in rows.items()} == {
        "192.0.2.1": True, "192.0.2.2": False, "192.0.2.3": False, "192.0.2.4": False,
        "192.0.2.5": False, "192.0.2.6": True}
    assert rows["192.0.2.2"].detail == "answered by node-2, expected node-1"
    assert f"node-1 has MAC {MAC_1}" in rows["192.0.2.3"].detail
    assert rows["192.0.2.6"].expected == ()  # the API names nobody: one MAC is enough
    assert rows["192.0.2.1"].to_json() == {
        "ip": "192.0.2.1", "status": "ok", "macs": [MAC_1], "nodes": ["node-1"],
        "expected": ["node-1"], "announcer": "ok", "detail": "answered by node-1, as expected"}


def test_without_the_api_only_the_number_of_macs_counts() -> None:
    rows = match_announcers(arp_report({"192.0.2.1": (MAC_X,), "192.0.2.2": (MAC_1, MAC_2)}),
                            None)
    assert [row.ok for row in rows] == [True, False]


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def fake_wire(monkeypatch: pytest.MonkeyPatch) -> dict[str, tuple[str, ...]]:
    """Replace ARP by a table IP → MACs that the test fills in; returns the table."""
    answers: dict[str, tuple[str, ...]] = {}

    def fake_probe(interface: str, ips: Sequence[IPv4Address], **_: Any) -> list[ArpResult]:
        return [ArpResult(ip, classify(answers.get(str(ip), ())), answers.get(str(ip), ()))
                for ip in ips]

    monkeypatch.setattr(arp, "probe", fake_probe)
    return answers


NODE_MACS = {"cp-1": "02:00:00:00:0a:01", "worker-1": "02:00:00:00:0b:01",
             "worker-2": "02:00:00:00:0b:02"}


def node_answers(cluster: Cluster) -> dict[str, tuple[str, ...]]:
    """Each node's InternalIP answered by that node's MAC."""
    out = {}
    for node in cluster.kube.list("v1", "Node"):
        address = next(a["address"] for a in node["status"]["addresses"]
                       if a["type"] == "InternalIP")
        out[address] = (NODE_MACS[node["metadata"]["name"]],)
    return out


def test_verify_plan_with_arp_after_cutover(cluster_factory: ClusterFactory, tmp_path: Path,
                                            fake_wire: dict[str, tuple[str, ...]]) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = planned(cluster)
    plan_file = tmp_path / "plan.yaml"
    save_plan(plan, plan_file)
    apply_until(cluster, plan, plan.stages[-1].name)
    holders = {ip: a.cilium_node for ip, a in cluster.controllers.announcements().items()}
    fake_wire.update(node_answers(cluster))
    fake_wire.update({ip: (NODE_MACS[str(node)],) for ip, node in holders.items()})
    args = ["verify", "--plan", str(plan_file), "--kubeconfig", str(cluster.kubeconfig),
            "--arp", "--interface", "eth9", "-o", "json"]

    good = run_cli(*args)
    assert good.exit_code == 0, good.stderr
    document = json.loads(good.stdout)
    assert set(document) == {"arp", "api"}
    assert {row["ip"]: (row["nodes"], row["expected"], row["announcer"])
            for row in document["arp"]} == {
        ip: ([node], [node], "ok") for ip, node in holders.items()}

    wrong_ip, holder = next(iter(holders.items()))
    other = next(node for node in ("worker-1", "worker-2") if node != holder)
    fake_wire[wrong_ip] = (NODE_MACS[other],)
    bad = run_cli(*args)
    assert bad.exit_code == 4
    assert "1 of 3 IPs are not answered by exactly one MAC, the expected node's" in bad.stderr
    row = next(r for r in json.loads(bad.stdout)["arp"] if r["ip"] == wrong_ip)
    assert row["announcer"] == "failed"
    assert row["detail"] == f"answered by {other}, expected {holder}"

    table = run_cli(*args[:-2])
    assert table.exit_code == 4
    for word in ("API checks", "lease", "ARP on eth9", wrong_ip):
        assert word in table.stdout
    header = next(line for line in table.stdout.splitlines() if line.startswith("IP "))
    assert header.split() == ["IP", "STATUS", "MACS", "NODES", "EXPECTED", "ANNOUNCER"]
    wrong_row = next(line for line in table.stdout.splitlines() if line.startswith(wrong_ip))
    assert wrong_row.split()[1:5] == ["ok", NODE_MACS[other], other, holder]
    assert wrong_row.endswith(f"answered by {other}, expected {holder}")


def test_verify_plan_without_arp_runs_the_api_checks_only(
    cluster_factory: ClusterFactory, tmp_path: Path, fake_wire: dict[str, tuple[str, ...]]
) -> None:
    cluster = cluster_factory(SCENARIO)
    plan = planned(cluster)
    plan_file = tmp_path / "plan.yaml"
    save_plan(plan, plan_file)
    ok = run_cli("verify", "--plan", str(plan_file), "--kubeconfig", str(cluster.kubeconfig),
                 "-o", "json")
    assert ok.exit_code == 0, ok.stderr
    assert set(json.loads(ok.stdout)) == {"api"}
    cluster.kube.delete("v1", "Service", "api", "shop")
    gone = run_cli("verify", "--plan", str(plan_file), "--kubeconfig", str(cluster.kubeconfig))
    assert gone.exit_code == 4
    assert re.search(r"\b1 of \d+ API checks failed", gone.stderr), gone.stderr
    assert "the Service is gone" in gone.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "--plan"),
        (["--plan", "{plan}", "--interface", "eth9"], "--interface needs --arp"),
        (["--plan", "{plan}", "--arp"], "--interface"),
        (["--failover", "shop/web"], "--yes"),
    ],
)
def test_usage_errors(tmp_path: Path, args: list[str], message: str) -> None:
    plan_file = tmp_path / "plan.yaml"
    plan_file.write_text("{}")
    result = run_cli("verify", *(a.format(plan=plan_file) for a in args))
    assert result.exit_code == 2
    assert message in result.stderr


def test_two_lease_holders_for_one_shared_ip_fail_the_api_checks(
    cluster_factory: ClusterFactory,
) -> None:
    """cilium/cilium#48419: the follower label keeps one lease per shared IP; a sharer that
    gets a lease of its own on another node makes two answers for the IP, and verify says so."""
    cluster = cluster_factory("several-pools-shared")
    plan = planned(cluster)
    apply_until(cluster, plan, plan.stages[-1].name)
    shared_ip = plan.expected_ips["dns/pihole-tcp"][0]
    checks = by_name(verify_api(cluster.kube, plan), "one-holder-per-ip")
    assert checks[f"IP {shared_ip}"].ok, checks

    # Somebody removes the follower label: Cilium elects a holder for that Service too.
    service = cluster.store.get("", "Service", "pihole-udp", "dns")
    del service["metadata"]["labels"]["lbmigrate.io/shared-ip-follower"]
    cluster.store.update(service)
    cluster.settle(0.2)
    leases = "coordination.k8s.io"
    tcp = cluster.store.get(leases, "Lease", "cilium-l2announce-dns-pihole-tcp", "kube-system")
    udp = cluster.store.get(leases, "Lease", "cilium-l2announce-dns-pihole-udp", "kube-system")
    other = next(node for node in ("worker-1", "worker-2")
                 if node != tcp["spec"]["holderIdentity"])
    udp["spec"]["holderIdentity"] = other  # the other worker won that election
    cluster.store.update(udp)
    cluster.settle(0.2)

    report = verify_api(cluster.kube, plan)
    check = by_name(report, "one-holder-per-ip")[f"IP {shared_ip}"]
    assert not check.ok
    assert check.detail == (
        f"shared by Services whose leases are held by {tcp['spec']['holderIdentity']}"
        f" (dns/pihole-tcp), {other} (dns/pihole-udp): each holder answers ARP for it"
        " (cilium/cilium#48419)")
    assert not report.ok
