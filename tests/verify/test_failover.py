"""``migrate verify --failover`` against the lab, without the wire (the lease alone).

The lab's clock runs fast here (a manual clock moved ``SPEED`` times faster than real time), so
a lease expires in a fraction of a second instead of 15 s. The failover on the wire, with the
new MAC and the gratuitous ARP, is in ``test_e2e_wire.py``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrate.apply.executor import apply_stage
from migrate.errors import ClusterError, InputError, VerificationError
from migrate.kube import Kube, RetryPolicy
from migrate.lab.models import Controllers, build_controllers
from migrate.lab.server import LabServer
from migrate.lab.store import Clock, Store
from migrate.lab.workloads import DeploymentStatus
from migrate.plan.api import make_plan
from migrate.plan.model import Plan
from migrate.sources.live import read_live
from migrate.verify import arp
from migrate.verify.failover import run_failover
from tests.engine.conftest import CLUSTERS, Cluster, fast_options
from tests.helpers import run_cli

SCENARIO = "guide-single-pool"
SPEED = 40.0
"""Lab seconds per real second."""
LEASES = "coordination.k8s.io/v1"


def _run_fast(controllers: Controllers, stop: threading.Event) -> None:
    last = time.monotonic()
    while not stop.is_set():
        controllers.run_until_idle()
        now = time.monotonic()
        controllers.advance((now - last) * SPEED)
        last = now
        stop.wait(0.02)


@pytest.fixture
def fast_cluster(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """The scenario's lab on a fast clock, with its client; stopped after the test (another
    scenario through indirect parametrization)."""
    scenario = getattr(request, "param", SCENARIO)
    store, skipped = Store.from_snapshot([CLUSTERS / scenario], Clock.manual())
    assert not skipped, skipped
    DeploymentStatus(store)
    controllers = build_controllers(store)
    server = LabServer(store).start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    kube = Kube.from_kubeconfig(str(kubeconfig), retry=RetryPolicy(attempts=4, base_delay=0.01))
    cluster = Cluster(store, server, controllers, kube, kubeconfig, CLUSTERS / scenario)
    cluster._thread = threading.Thread(target=_run_fast, args=(controllers, cluster._stop),
                                       daemon=True)
    cluster._thread.start()
    try:
        yield cluster
    finally:
        cluster.stop()


def migrated(cluster: Cluster) -> Plan:
    """Apply every stage; the plan."""
    plan = make_plan(read_live(cluster.kube))
    for stage in plan.stages:
        assert apply_stage(cluster.kube, plan, stage.name,
                           options=fast_options()).outcome == "applied"
    return plan


def holder(cluster: Cluster, service: str) -> str:
    namespace, name = service.split("/")
    lease = cluster.kube.get(LEASES, "Lease", f"cilium-l2announce-{namespace}-{name}",
                             "kube-system")
    return str(lease["spec"]["holderIdentity"])


def agent_pods(cluster: Cluster) -> dict[str, str]:
    """node → name of its Cilium agent pod."""
    return {p["spec"]["nodeName"]: p["metadata"]["name"]
            for p in cluster.kube.list("v1", "Pod", namespace="kube-system",
                                       label_selector="k8s-app=cilium")}


def test_the_lease_moves_to_another_eligible_node(fast_cluster: Cluster) -> None:
    plan = migrated(fast_cluster)
    old = holder(fast_cluster, "shop/web")
    pods = agent_pods(fast_cluster)
    events: list[str] = []
    report = run_failover(fast_cluster.kube, "shop/web", timeout=30, poll=0.05,
                          on_event=events.append)
    assert report.ok, report.problems
    assert (report.old_holder, report.pod) == (old, f"kube-system/{pods[old]}")
    assert report.new_holder in plan.context["announced"]["shop/web"]
    assert report.new_holder != old
    assert holder(fast_cluster, "shop/web") == report.new_holder
    assert old not in agent_pods(fast_cluster)
    assert report.wire is False and report.to_json()["status"] == "ok"
    assert any(f"deleting pod kube-system/{pods[old]}" in event for event in events)


@pytest.mark.parametrize("fast_cluster", ["several-pools-shared"], indirect=True)
def test_a_service_announced_through_its_sharer_fails_over_with_it(
    fast_cluster: Cluster,
) -> None:
    plan = migrated(fast_cluster)
    follower = "dns/pihole-udp"
    assert follower not in plan.context["announced"]  # no lease of its own
    leader = "dns/pihole-tcp"
    old = holder(fast_cluster, leader)
    events: list[str] = []
    report = run_failover(fast_cluster.kube, follower, timeout=30, poll=0.05,
                          on_event=events.append)
    assert report.ok, report.problems
    assert report.old_holder == old and report.new_holder not in (None, old)
    assert holder(fast_cluster, leader) == report.new_holder
    assert f"{follower} shares its IP with {leader}, whose lease announces it" in events


def test_a_lease_that_never_moves_times_out_cleanly(fast_cluster: Cluster) -> None:
    migrated(fast_cluster)
    fast_cluster.controllers.set_enabled(fast_cluster.controllers.cilium_l2, False)
    old = holder(fast_cluster, "shop/web")
    report = run_failover(fast_cluster.kube, "shop/web", timeout=0.5, poll=0.05)
    assert report.timed_out and not report.ok
    assert report.new_holder is None
    assert report.problems == ["the lease did not move within 0.5s"]
    assert holder(fast_cluster, "shop/web") == old


def test_nothing_to_fail_over_before_cutover(fast_cluster: Cluster) -> None:
    with pytest.raises(VerificationError, match="no Cilium lease holder"):
        run_failover(fast_cluster.kube, "shop/web")
    with pytest.raises(InputError, match="no Service shop/nope"):
        run_failover(fast_cluster.kube, "shop/nope")
    with pytest.raises(InputError, match="not NAMESPACE/NAME"):
        run_failover(fast_cluster.kube, "web")
    assert len(agent_pods(fast_cluster)) == 3


def test_no_agent_pod_on_the_holder_is_a_cluster_error(fast_cluster: Cluster) -> None:
    migrated(fast_cluster)
    fast_cluster.controllers.set_enabled(fast_cluster.controllers.cilium_l2, False)
    old = holder(fast_cluster, "shop/web")
    fast_cluster.kube.delete("v1", "Pod", agent_pods(fast_cluster)[old], "kube-system")
    with pytest.raises(ClusterError, match=f"no Cilium agent pod .* on node {old}"):
        run_failover(fast_cluster.kube, "shop/web")


def test_cli_failover_needs_yes_and_reports_json(fast_cluster: Cluster) -> None:
    migrated(fast_cluster)
    kubeconfig = str(fast_cluster.kubeconfig)
    refused = run_cli("verify", "--failover", "shop/api", "--kubeconfig", kubeconfig)
    assert refused.exit_code == 2
    assert "--yes" in refused.stderr
    assert len(agent_pods(fast_cluster)) == 3

    old = holder(fast_cluster, "shop/api")
    done = run_cli("verify", "--failover", "shop/api", "--yes", "--kubeconfig", kubeconfig,
                   "-o", "json")
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)["failover"]
    assert report["status"] == "ok" and report["oldHolder"] == old
    assert report["newHolder"] == holder(fast_cluster, "shop/api") != old
    assert "deleting pod" in done.stderr


def test_cli_failover_before_cutover_exits_4(fast_cluster: Cluster) -> None:
    result = run_cli("verify", "--failover", "shop/web", "--yes", "--kubeconfig",
                     str(fast_cluster.kubeconfig))
    assert result.exit_code == 4
    assert "no Cilium lease holder" in result.stderr
    assert len(agent_pods(fast_cluster)) == 3


def test_without_raw_sockets_no_pod_is_deleted(fast_cluster: Cluster,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    migrated(fast_cluster)
    real_socket = arp.socket.socket

    def no_packet_sockets(family: int = -1, *args: Any, **kwargs: Any) -> Any:
        if family == arp.socket.AF_PACKET:
            raise PermissionError(1, "Operation not permitted")
        return real_socket(family, *args, **kwargs)

    monkeypatch.setattr(arp.socket, "socket", no_packet_sockets)
    result = run_cli("verify", "--failover", "shop/web", "--yes", "--arp", "--interface", "lo",
                     "--kubeconfig", str(fast_cluster.kubeconfig))
    assert result.exit_code == 1
    assert "CAP_NET_RAW" in result.stderr
    assert len(agent_pods(fast_cluster)) == 3
