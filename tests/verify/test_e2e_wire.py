"""End to end on the test wire: the lab migrates while a prober watches ARP continuously.

One network namespace per lab node (cp-1, worker-1, worker-2) with two responders of ours each,
one for MetalLB's speaker and one for Cilium's lease holder, following what the lab's
controller models announce (``LabFollower``); a client namespace where the prober watches the
Services' IPs and where ``migrate verify`` runs, against a second lab API server listening
inside that namespace. Every frame stays inside namespaces this test created.
"""

from __future__ import annotations

import contextlib
import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from migrate.apply.executor import apply_stage
from migrate.lab.runtime import METALLB_SPEAKER, Delay, Timing
from migrate.lab.server import LabServer
from migrate.plan.api import make_plan, save_plan
from migrate.plan.model import Plan
from migrate.sources.live import read_live
from tests.engine.conftest import (
    GUARDED,
    Cluster,
    ClusterFactory,
    altered_scenario,
    cluster_factory,
    fast_options,
)
from tests.wire import (
    INTERFACE,
    STACKS,
    LabFollower,
    Responder,
    Watcher,
    Wire,
    built_wire,
    json_lines_of,
    python_env,
    run_in_namespace,
    session_prefix,
)

__all__ = ["cluster_factory"]

pytestmark = pytest.mark.wire

SCENARIO = "guide-single-pool"
LAB_NODES = ("cp-1", "worker-1", "worker-2")


@pytest.fixture
def lab_wire() -> Iterator[Wire]:
    """A wire of our own: a client namespace and one namespace per lab node."""
    yield from built_wire(Wire(f"{session_prefix()}e", nodes=len(LAB_NODES)))


def verify_cli(wire: Wire, kubeconfig: Path, plan: Path, *args: str) -> tuple[int, Any, str]:
    """``migrate verify --plan ... --arp --interface eth0 -o json`` in the client namespace."""
    argv = wire.exec_argv(wire.client, [
        sys.executable, "-c", "from migrate.cli import main; main(prog_name='migrate')",
        "verify", "--plan", str(plan), "--kubeconfig", str(kubeconfig),
        "--arp", "--interface", INTERFACE, "-o", "json", *args,
    ])
    done = subprocess.run(argv, capture_output=True, text=True, env=python_env(), timeout=120)
    document = json.loads(done.stdout) if done.stdout.strip() else None
    return done.returncode, document, done.stderr


def observe_after(watcher: Watcher, moment: float) -> dict[str, Any]:
    """The first observation whose round started after ``moment`` (epoch seconds)."""
    return watcher.until(lambda seen: seen["started"] > moment)


def silent_spans(observations: list[dict[str, Any]], ip: str) -> list[tuple[float, float]]:
    """(start, end) of every run of rounds in which nobody answered ``ip``."""
    spans = []
    since: float | None = None
    for seen in observations:
        if not seen["macs"].get(ip):
            since = seen["started"] if since is None else since
        elif since is not None:
            spans.append((since, seen["started"]))
            since = None
    return spans


@dataclass
class LabOnWire:
    """A lab cluster whose announcements answer on the wire, watched from the client."""

    cluster: Cluster
    wire: Wire
    plan: Plan
    plan_file: Path
    kubeconfig: Path
    """For ``migrate verify`` in the client namespace."""
    follower: LabFollower
    watcher: Watcher
    vips: list[IPv4Address]
    mac_of: dict[str, str]
    """Lab node → the MAC of its namespace's eth0."""

    def services_of(self, ip: str) -> list[str]:
        return sorted(key for key, ips in self.plan.expected_ips.items() if ip in ips)

    def verify(self, *args: str) -> tuple[int, Any, str]:
        return verify_cli(self.wire, self.kubeconfig, self.plan_file, *args)

    def now_seen(self) -> dict[str, Any]:
        """An observation of the wire once the responders answer what the models say now."""
        self.follower.wait_synced()
        return observe_after(self.watcher, time.time())

    def wire_shows(self, expected: dict[str, list[str]]) -> dict[str, Any]:
        """The first round from now in which these IPs are answered by exactly these MACs.

        A round can miss a reply that comes late on a loaded machine, so the wire is given a
        few rounds; never answering so fails the test.
        """
        self.follower.wait_synced()
        now = time.time()
        return self.watcher.until(
            lambda seen: seen["started"] > now
            and all(sorted(seen["macs"].get(ip, [])) == sorted(macs)
                    for ip, macs in expected.items()))


def _on_wire(cluster: Cluster, lab_wire: Wire, tmp_path: Path,
             canary: str | None) -> Iterator[LabOnWire]:
    """``cluster`` on ``lab_wire``: responders following it per node and stack, a prober
    watching, a second API server in the client namespace."""
    namespace_of = dict(zip(LAB_NODES, lab_wire.nodes, strict=True))
    # Each node's InternalIP lives on its namespace's eth0, so verify learns its MAC over ARP.
    for node in cluster.kube.list("v1", "Node"):
        address = next(a["address"] for a in node["status"]["addresses"]
                       if a["type"] == "InternalIP")
        subprocess.run(["ip", "-n", namespace_of[node["metadata"]["name"]], "addr", "add",
                        f"{address}/32", "dev", INTERFACE], check=True)
    plan = make_plan(read_live(cluster.kube), canary=canary)
    assert not plan.blocked, plan.findings
    plan_file = tmp_path / "plan.yaml"
    save_plan(plan, plan_file)
    vips = sorted({IPv4Address(ip) for ips in plan.expected_ips.values() for ip in ips})
    with contextlib.ExitStack() as cleanup:
        responders: dict[tuple[str, str], Responder] = {}
        for node, namespace in namespace_of.items():
            for stack in STACKS:
                responders[(node, stack)] = lab_wire.responder(
                    namespace, tmp_path / f"{node}-{stack}.ips")
                cleanup.callback(responders[(node, stack)].stop)
        follower = LabFollower(cluster.controllers.announcements, responders).start()
        cleanup.callback(follower.stop)
        server = run_in_namespace(lab_wire.client, lambda: LabServer(cluster.store).start())
        cleanup.callback(server.stop)
        kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig-client")
        watcher = Watcher(lab_wire, vips, seconds=240, interval=0.05)
        cleanup.callback(watcher.stop)
        yield LabOnWire(cluster, lab_wire, plan, plan_file, kubeconfig, follower, watcher, vips,
                        {node: lab_wire.macs[ns] for node, ns in namespace_of.items()})


@pytest.fixture
def lab_on_wire(cluster_factory: ClusterFactory, lab_wire: Wire, tmp_path: Path,
                request: pytest.FixtureRequest) -> Iterator[LabOnWire]:
    """The scenario's instant lab on the wire (indirect parametrization: ``(scenario, canary
    pool or None)``)."""
    scenario, canary = getattr(request, "param", (SCENARIO, None))
    yield from _on_wire(cluster_factory(scenario), lab_wire, tmp_path, canary)


ASYNC_TIME_SCALE = 0.05
"""The asynchronous lab's time scale on the wire: every modelled delay 20 times shorter."""


@pytest.fixture
def async_lab_on_wire(cluster_factory: ClusterFactory, lab_wire: Wire,
                      tmp_path: Path) -> Iterator[LabOnWire]:
    """The scenario's asynchronous lab (realistic timing on the real clock, time-scaled) on
    the wire."""
    cluster = cluster_factory(SCENARIO, timing="realistic", seed=7,
                              time_scale=ASYNC_TIME_SCALE)
    yield from _on_wire(cluster, lab_wire, tmp_path, None)


def doubled_rounds(watcher: Watcher) -> list[tuple[float, str, list[str]]]:
    """Every (round, IP, MACs) seen so far where two MACs or more answered one IP (I2)."""
    return [(seen["started"], ip, macs) for seen in watcher.seen
            for ip, macs in seen["macs"].items() if len(macs) > 1]


def test_migration_keeps_one_announcer_and_fails_over(
        lab_on_wire: LabOnWire, figure: Callable[[str], None]) -> None:
    lab = lab_on_wire
    cluster, plan, watcher, mac_of = lab.cluster, lab.plan, lab.watcher, lab.mac_of

    # Before: MetalLB's speakers answer, each IP from the node its ServiceL2Status names.
    lab.now_seen()
    code, before, stderr = lab.verify()
    assert code == 0, (stderr, before)
    metallb_view = cluster.controllers.announcements()
    for row in before["arp"]:
        speaker = metallb_view[row["ip"]].metallb_node
        assert row["expected"] == [speaker], row
        assert row["nodes"] == [speaker] and row["macs"] == [mac_of[speaker]], row
    assert {check["status"] for check in before["api"]} == {"ok"}

    # Apply every stage while the wire is watched.
    spans: dict[str, tuple[float, float]] = {}
    for stage in plan.stages:
        began = time.time()
        result = apply_stage(cluster.kube, plan, stage.name, options=fast_options())
        assert result.outcome == "applied", stage.name
        lab.now_seen()
        spans[stage.name] = (began, time.time())

    # After cutover each IP is answered by its lease holder's MAC alone.
    holders = {
        ip: {cluster.kube.get("coordination.k8s.io/v1", "Lease",
                              f"cilium-l2announce-{key.replace('/', '-')}",
                              plan.cilium_namespace)["spec"]["holderIdentity"]
             for key in lab.services_of(ip)}
        for ip in map(str, lab.vips)
    }
    assert all(len(nodes) == 1 for nodes in holders.values()), holders
    lab.wire_shows({ip: [mac_of[next(iter(nodes))]] for ip, nodes in holders.items()})

    code, after, stderr = lab.verify()
    assert code == 0, (stderr, after)
    assert {check["name"] for check in after["api"]} >= {"lease", "metallb-advertisements"}
    assert {check["status"] for check in after["api"]} == {"ok"}
    assert {row["ip"]: row["expected"] for row in after["arp"]} == {
        ip: sorted(nodes) for ip, nodes in holders.items()}

    # Failover: the holder's agent pod goes; another node takes the lease and the wire.
    first_ip = str(lab.vips[0])
    old_holder = next(iter(holders[first_ip]))
    code, failed_over, stderr = lab.verify("--failover", lab.services_of(first_ip)[0], "--yes",
                                           "--timeout", "45")
    assert code == 0, (stderr, failed_over)
    report = failed_over["failover"]
    figure(f"failover: {json.dumps(report)}")
    new_holder = report["newHolder"]
    assert report["oldHolder"] == old_holder and new_holder not in (None, old_holder)
    assert report["oldMacs"] == [mac_of[old_holder]]
    assert report["newMacs"] == [mac_of[new_holder]]
    assert report["newMacNodes"] == [new_holder]
    assert report["gratuitousArp"] is True
    assert {g["mac"] for g in report["gratuitous"]} == {mac_of[new_holder]}
    assert cluster.kube.try_get("v1", "Pod", report["deletedPod"].split("/")[1],
                                plan.cilium_namespace) is None
    lab.wire_shows({first_ip: [mac_of[new_holder]]})

    # I2 over the whole run: no round in which two MACs answered one IP.
    assert not doubled_rounds(watcher)
    # The gap at l2-cutover (break before make) is allowed; report it.
    cutover_began, cutover_done = spans["l2-cutover"]
    for ip in map(str, lab.vips):
        gaps = [end - start for start, end in silent_spans(watcher.seen, ip)
                if cutover_began <= end and start <= cutover_done + 1]
        figure(f"l2-cutover: {ip} silent for {max(gaps, default=0.0):.3f}s")
    assert any(g["mac"] == mac_of[old_holder] for seen in watcher.seen
               for g in seen["gratuitous"])


def test_make_before_break_shows_two_announcers(lab_on_wire: LabOnWire) -> None:
    """Creating Cilium's policies while MetalLB still advertises (the wrong order) puts two
    announcers on the wire; the prober sees it and verify fails with exit 4."""
    lab = lab_on_wire
    cluster, plan = lab.cluster, lab.plan
    for stage in plan.stages[: [s.name for s in plan.stages].index("l2-cutover")]:
        assert apply_stage(cluster.kube, plan, stage.name,
                           options=fast_options()).outcome == "applied"
    cutover = plan.stage("l2-cutover")
    for action in cutover.actions:
        if action.verb == "create" and action.body is not None:
            cluster.kube.create(action.body)
    deadline = time.monotonic() + 15
    while not any(a.metallb_nodes and a.cilium_nodes
                  for a in cluster.controllers.announcements().values()):
        assert time.monotonic() < deadline, "the lab never announced with both stacks"
        time.sleep(0.05)
    view = cluster.controllers.announcements()
    two_nodes = {ip for ip, a in view.items() if set(a.metallb_nodes) != set(a.cilium_nodes)}
    assert two_nodes, view
    lab.wire_shows({ip: sorted({lab.mac_of[n] for n in (*view[ip].metallb_nodes,
                                                        *view[ip].cilium_nodes)})
                    for ip in two_nodes})
    assert doubled_rounds(lab.watcher)

    code, document, stderr = lab.verify()
    assert code == 4, (stderr, document)
    rows = {row["ip"]: row for row in document["arp"]}
    for ip in two_nodes:
        assert rows[ip]["status"] == "conflict" and rows[ip]["announcer"] == "failed"
        assert sorted(rows[ip]["nodes"]) == sorted(
            {*view[ip].metallb_nodes, *view[ip].cilium_nodes})
    assert "not answered by exactly one MAC" in stderr


def answering_node(lab: LabOnWire, ip: str) -> str:
    """The one node the lab says answers for ``ip`` now (either stack)."""
    view = lab.cluster.controllers.announcements()[ip]
    nodes = {*view.metallb_nodes, *view.cilium_nodes}
    assert len(nodes) == 1, (ip, view)
    return nodes.pop()


@pytest.mark.parametrize("lab_on_wire", [("several-pools-shared", "dns")], indirect=True)
def test_a_canary_pool_with_a_shared_ip_keeps_one_announcer(lab_on_wire: LabOnWire) -> None:
    """The canary pool (DNS over TCP and UDP on one IP) moves first, the other pools stay with
    MetalLB; then the rest. One MAC per IP at every moment, verify passing at each step."""
    lab = lab_on_wire
    cluster, plan, mac_of = lab.cluster, lab.plan, lab.mac_of
    canary_ips = {ip for key in plan.context["canary"]["services"]
                  for ip in plan.expected_ips[key]}
    assert canary_ips and set(map(str, lab.vips)) - canary_ips
    for stage in plan.stages:
        assert apply_stage(cluster.kube, plan, stage.name,
                           options=fast_options()).outcome == "applied", stage.name
        if stage.name not in ("ipam-handover", "l2-canary", "l2-cutover"):
            continue
        lab.follower.wait_synced()
        view = cluster.controllers.announcements()
        if stage.name == "l2-canary":
            for ip in map(str, lab.vips):
                stack = "cilium" if ip in canary_ips else "metallb"
                assert (view[ip].cilium_node if stack == "cilium" else view[ip].metallb_node)
        lab.wire_shows({ip: [mac_of[answering_node(lab, ip)]] for ip in map(str, lab.vips)})
        code, document, stderr = lab.verify()
        assert code == 0, (stage.name, stderr, document)
        assert {row["announcer"] for row in document["arp"]} == {"ok"}
    assert not doubled_rounds(lab.watcher)


def test_verify_watch_follows_the_cutover(lab_on_wire: LabOnWire) -> None:
    """An operator's second terminal: `migrate verify --plan --arp --watch` while the stages
    run, stopped with Ctrl-C. It names the nodes behind the MACs (from their InternalIPs),
    sees each IP move from MetalLB's node to its lease holder, and no round with two MACs."""
    lab = lab_on_wire
    cluster, plan, mac_of = lab.cluster, lab.plan, lab.mac_of
    lab.now_seen()
    argv = lab.wire.exec_argv(lab.wire.client, [
        sys.executable, "-m", "migrate", "verify", "--plan", str(lab.plan_file),
        "--kubeconfig", str(lab.kubeconfig), "--arp", "--interface", INTERFACE,
        "--watch", "120", "-o", "json"])
    before = {ip: answering_node(lab, ip) for ip in map(str, lab.vips)}
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=python_env())
    try:
        time.sleep(2.0)
        for stage in plan.stages:
            assert apply_stage(cluster.kube, plan, stage.name,
                               options=fast_options()).outcome == "applied", stage.name
        after = {ip: answering_node(lab, ip) for ip in map(str, lab.vips)}
        lab.wire_shows({ip: [mac_of[node]] for ip, node in after.items()})
        time.sleep(0.5)
        process.send_signal(signal.SIGINT)  # Ctrl-C: stop and sum up
    finally:
        code, lines, err = json_lines_of(process)
    # On failure: the watch's events where an IP was not answered by one MAC, the lab's own
    # overlaps (none: the wire, not the models), and the follower's last changes.
    assert code == 0, (err, [e for e in lines[:-1] if len(e.get("macs") or ()) != 1][:20],
                       cluster.controllers.record.overlaps(), lab.follower.history[-8:])
    summary = lines[-1]["summary"]
    assert summary["problems"] == []
    for ip in map(str, lab.vips):
        answered = [(e["macs"], e["nodes"]) for e in lines[:-1]
                    if e["ip"] == ip and e["event"] == "answered"]
        assert answered[0] == ([mac_of[before[ip]]], [before[ip]]), answered
        assert answered[-1] == ([mac_of[after[ip]]], [after[ip]]), answered
        assert summary["ips"][ip]["conflictRounds"] == 0
        assert summary["ips"][ip]["macs"] == [mac_of[after[ip]]]


def apply_cli(lab: LabOnWire, stage: str) -> subprocess.CompletedProcess[str]:
    """``migrate apply --stage STAGE --yes --interface eth0`` in the client namespace, as an
    operator on the LAN runs it."""
    argv = lab.wire.exec_argv(lab.wire.client, [
        sys.executable, "-c", "from migrate.cli import main; main(prog_name='migrate')",
        "apply", "--plan", str(lab.plan_file), "--kubeconfig", str(lab.kubeconfig),
        "--stage", stage, "--yes", "--interface", INTERFACE, "-q",
    ])
    return subprocess.run(argv, capture_output=True, text=True, env=python_env(), timeout=180)


def cutover_silences(observations: list[dict[str, Any]], ips: list[str],
                     window: tuple[float, float]) -> dict[str, float]:
    """Per IP, the longest silence on the wire that begins within ``window`` (the cutover
    stage): from MetalLB's last answer to Cilium's first, which can come after the stage
    returned (a reply a loaded machine missed makes a shorter one)."""
    out = {}
    for ip in ips:
        out[ip] = max((end - start for start, end in silent_spans(observations, ip)
                       if window[0] - 0.1 <= start <= window[1]), default=0.0)
    return out


def test_the_asynchronous_lab_migrates_with_one_mac_per_ip_on_the_wire(
        async_lab_on_wire: LabOnWire, record_property: Any,
        figure: Callable[[str], None]) -> None:
    """Every stage by `migrate apply --interface eth0` on the asynchronous lab (speakers and
    agents react after their own delays, pods terminate within their grace period): the
    prober never sees two MACs for an IP, and each IP ends answered by its lease holder. The
    cutover silence per IP is printed and attached to the report."""
    lab = async_lab_on_wire
    cluster, plan, mac_of = lab.cluster, lab.plan, lab.mac_of
    ips = [str(ip) for ip in lab.vips]
    deadline = time.monotonic() + 30
    while not all(cluster.controllers.announcements().get(ip) for ip in ips):
        assert time.monotonic() < deadline, "MetalLB never announced every IP"
        time.sleep(0.05)
    lab.wire_shows({ip: [mac_of[answering_node(lab, ip)]] for ip in ips})

    spans: dict[str, tuple[float, float]] = {}
    for stage in plan.stages:
        began = time.time()
        done = apply_cli(lab, stage.name)
        assert done.returncode == 0, (stage.name, done.stderr)
        spans[stage.name] = (began, time.time())

    deadline = time.monotonic() + 30
    view = cluster.controllers.announcements()
    while not all(view.get(ip) and view[ip].cilium_node and not view[ip].metallb_nodes
                  for ip in ips):
        assert time.monotonic() < deadline, view
        time.sleep(0.05)
        view = cluster.controllers.announcements()
    lab.wire_shows({ip: [mac_of[str(view[ip].cilium_node)]] for ip in ips})
    assert not doubled_rounds(lab.watcher)
    # Both stacks of one node share its MAC: the lab's record tells them apart.
    assert cluster.controllers.record.overlaps(same_node_counts=True) == []
    cluster.assert_ips_kept(plan.expected_ips)

    silences = cutover_silences(lab.watcher.seen, ips, spans["l2-cutover"])
    low, high = plan.context["cutoverSilence"]["min"], plan.context["cutoverSilence"]["max"]
    summary = {"timeScale": ASYNC_TIME_SCALE, "perIp": {ip: round(s, 3)
                                                       for ip, s in silences.items()},
               "max": round(max(silences.values()), 3),
               "median": round(statistics.median(silences.values()), 3),
               "planned": [low, high]}
    figure("\n".join(f"l2-cutover on the asynchronous lab: {ip} silent for {silence:.3f}s"
                     for ip, silence in silences.items()))
    figure(f"l2-cutover silence over {len(ips)} IPs: max {summary['max']:.3f}s, median"
          f" {summary['median']:.3f}s (lab time scale {ASYNC_TIME_SCALE:g}; the plan states"
          f" {low:g}-{high:g}s on a real cluster)")
    record_property("cutover_silence", json.dumps(summary))
    assert all(silence > 0 for silence in silences.values()), silences  # break before make


SLOW_SPEAKERS = Timing("slow-speakers", reaction={METALLB_SPEAKER: Delay(7.0, 8.0)})
"""Every other process reacts at once; MetalLB's speakers reload 7-8 s after a change (a
loaded node), longer than the 5 s the plan gives MetalLB before 0.14.6, which leaves no trace
in the API of what its speakers announce."""


def off_unless(guarded: bool, *names: str) -> tuple[str, ...]:
    """The guards to turn off in a CLI process: ``names``, unless ``guarded``."""
    return () if guarded else names


def apply_cli_unguarded(lab: LabOnWire, stage: str, guards: tuple[str, ...]) -> (
        subprocess.CompletedProcess[str]):
    """``apply_cli`` with the named guards of ``migrate.guards`` off in that process."""
    names = ", ".join(repr(g) for g in guards)
    argv = lab.wire.exec_argv(lab.wire.client, [
        sys.executable, "-c", "from migrate.cli import main\nfrom migrate.guards import"
        f" disabled\nwith disabled({names}):\n    main(prog_name='migrate')",
        "apply", "--plan", str(lab.plan_file), "--kubeconfig", str(lab.kubeconfig),
        "--stage", stage, "--yes", "--interface", INTERFACE, "-q",
    ])
    return subprocess.run(argv, capture_output=True, text=True, env=python_env(), timeout=180)


@GUARDED
def test_the_cutover_waits_for_silence_on_the_wire_where_the_api_cannot_tell(
        cluster_factory: ClusterFactory, lab_wire: Wire, tmp_path: Path,
        guarded: bool) -> None:
    """MetalLB 0.14.5 writes no ServiceL2Status, so the cutover can only give its speakers a
    bounded time to stop. Speakers slower than that still answer when it ends: with
    ``--interface`` the cutover also waits until nobody answers ARP for the IPs, and Cilium
    starts on a silent wire; without that wait the prober sees two MACs for an IP."""
    image = 'image: "quay.io/metallb/speaker:v0.14.9"'
    scenario = altered_scenario(tmp_path / "cluster", SCENARIO, {"metallb-install.yaml": [
        (image, image.replace("v0.14.9", "v0.14.5")),
        ("controller:v0.14.9", "controller:v0.14.5")]})
    cluster = cluster_factory(scenario, timing=SLOW_SPEAKERS)
    with contextlib.contextmanager(_on_wire)(cluster, lab_wire, tmp_path, None) as lab:
        assert lab.plan.context["metallbReleaseSettle"] == 5.0
        ips = [str(ip) for ip in lab.vips]
        lab.wire_shows({ip: [lab.mac_of[answering_node(lab, ip)]] for ip in ips})
        off = off_unless(guarded, "arp_silence")
        for stage in lab.plan.stages:
            done = apply_cli_unguarded(lab, stage.name, off)
            assert done.returncode == 0, (stage.name, done.stderr)
            if stage.name == "l2-cutover":
                break
        lab.follower.wait_synced()
        time.sleep(4.0)  # past the slowest speaker's reload
        lab.wire_shows({ip: [lab.mac_of[str(cluster.controllers.announcements()[ip]
                                             .cilium_node)]] for ip in ips})
        cluster.assert_ips_kept(lab.plan.expected_ips)
        if guarded:
            assert doubled_rounds(lab.watcher) == []
            assert cluster.controllers.record.overlaps(same_node_counts=True) == []
        else:
            assert cluster.controllers.record.overlaps(same_node_counts=True)
            if cluster.controllers.record.overlaps():  # on two nodes: two MACs
                assert doubled_rounds(lab.watcher), "two MACs on the wire at the cutover"
