"""The BGP wire on its own: real daemons in network namespaces this test creates (bird as the
upstream router, gobgpd for Cilium's speaker, FRR's bgpd for MetalLB's), read back through
``birdc``. Every packet stays inside these namespaces."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from migrate.lab.bgp_wire import (
    CILIUM,
    METALLB,
    ROUTER_IP,
    BGPFollower,
    BGPWire,
    FRRSpeaker,
    RouterPoller,
    Speaker,
    WireRoute,
    frr_commands,
    longest_short_span,
    sample_problems,
    session_prefix,
    why_no_bgp_wire,
)
from tests.wire import built_wire

pytestmark = pytest.mark.wire

NODES = ("node-a", "node-b")
PREFIX = "203.0.113.1/32"


@pytest.fixture
def bgp_wire(tmp_path: Path) -> Iterator[BGPWire]:
    """Two nodes and the router."""
    yield from built_wire(BGPWire(NODES, tmp_path, router_asn=64513,
                                  prefix=f"{session_prefix()}w"), why_no_bgp_wire)


def speaker(wire: BGPWire, node: str, stack: str, *prefixes: str) -> Speaker:
    return Speaker(stack, 64512, str(wire.node_ips[node]), str(ROUTER_IP), 64513,
                   tuple(WireRoute(p, ("64512:100",)) for p in prefixes))


def test_two_nodes_announcing_one_prefix_are_two_next_hops(bgp_wire: BGPWire) -> None:
    """ECMP across the two stacks: FRR's bgpd on one node, gobgpd on the other; bird merges
    the equal paths into one multipath route in the router's kernel table."""
    wanted = {"node-a": speaker(bgp_wire, "node-a", METALLB, PREFIX),
              "node-b": speaker(bgp_wire, "node-b", CILIUM, PREFIX, "203.0.113.2/32")}
    bgp_wire.apply(wanted)
    bgp_wire.wait_shows(wanted)
    assert bgp_wire.table() == {PREFIX: {"node-a", "node-b"}, "203.0.113.2/32": {"node-b"}}
    paths = bgp_wire.routes()[PREFIX]
    assert {p.next_hop for p in paths} == {"198.19.64.11", "198.19.64.12"}
    assert all(p.communities == ("64512:100",) for p in paths)
    kernel = json.loads(subprocess.run(
        ["ip", "-n", bgp_wire.router_ns, "-j", "route", "show", PREFIX.split("/")[0]],
        capture_output=True, text=True, check=True).stdout)
    assert {hop["gateway"] for hop in kernel[0]["nexthops"]} == {"198.19.64.11", "198.19.64.12"}
    # One node withdraws: one next hop left, the other prefix untouched.
    wanted["node-b"] = speaker(bgp_wire, "node-b", CILIUM, "203.0.113.2/32")
    bgp_wire.apply(wanted)
    bgp_wire.wait_shows(wanted)
    assert bgp_wire.table() == {PREFIX: {"node-a"}, "203.0.113.2/32": {"node-b"}}


def test_a_no_export_route_reaches_the_ebgp_router_from_either_speaker(
        bgp_wire: BGPWire) -> None:
    """MetalLB sets communities in the neighbour's outbound route-map, so bgpd sends a route it
    marks ``no-export`` to its eBGP router, as gobgpd sends Cilium's; a community that changes
    reaches the router without the route being withdrawn."""
    marked = ("64512:100", "no-export")
    wanted = {"node-a": Speaker(METALLB, 64512, str(bgp_wire.node_ips["node-a"]),
                                str(ROUTER_IP), 64513, (WireRoute(PREFIX, marked),)),
              "node-b": Speaker(CILIUM, 64512, str(bgp_wire.node_ips["node-b"]),
                                str(ROUTER_IP), 64513, (WireRoute(PREFIX, marked),))}
    bgp_wire.apply(wanted)
    bgp_wire.wait_shows(wanted)
    paths = bgp_wire.routes()[PREFIX]
    assert {(p.next_hop, p.communities) for p in paths} == {
        ("198.19.64.11", marked), ("198.19.64.12", marked)}
    remarked = {**wanted, "node-a": Speaker(METALLB, 64512, str(bgp_wire.node_ips["node-a"]),
                                            str(ROUTER_IP), 64513,
                                            (WireRoute(PREFIX, ("64512:200",)),))}
    bgp_wire.apply(remarked)
    deadline = time.monotonic() + 10
    while True:
        seen = {p.next_hop: p.communities for p in bgp_wire.routes().get(PREFIX, ())}
        assert set(seen) == {"198.19.64.11", "198.19.64.12"}, "a next hop went missing"
        if seen["198.19.64.11"] == ("64512:200",):
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.05)


def test_two_speakers_cannot_peer_from_one_node_address(
        bgp_wire: BGPWire, figure: Callable[[str], None]) -> None:
    """What the router does when both speakers of one node try: bird has one session per
    neighbour address, closes the second connection ("Connection collision") and learns only
    the first speaker's prefixes; the second comes up only once the first has gone, and the
    node's prefixes are unrouted in between."""
    cilium = {"node-a": speaker(bgp_wire, "node-a", CILIUM, "203.0.113.5/32"), "node-b": None}
    bgp_wire.apply(cilium)
    bgp_wire.wait_shows(cilium)
    # MetalLB's speaker on the same node, told to peer too (the wire itself never does this).
    frr = FRRSpeaker(bgp_wire.namespaces["node-a"], bgp_wire.folder / "extra-frr", asn=64512,
                     router_id=str(bgp_wire.node_ips["node-a"]))
    bgp_wire.frr["node-a"] = frr  # torn down with the wire
    frr.run(frr_commands(None, speaker(bgp_wire, "node-a", METALLB, "203.0.113.6/32")))
    deadline = time.monotonic() + 10
    while "Connection collision" not in bgp_wire.bird_log.read_text():
        assert time.monotonic() < deadline, "bird never saw MetalLB's connection"
        time.sleep(0.05)
    assert bgp_wire.sessions()["node-a"] == "Established"
    assert bgp_wire.table() == {"203.0.113.5/32": {"node-a"}}  # Cilium's only
    summary = subprocess.run(
        ["vtysh", "--vty_socket", str(frr.folder), "--config_dir", str(frr.folder), "-d",
         "bgpd", "-c", "show bgp summary json"], capture_output=True, text=True, check=True)
    peers = json.loads(summary.stdout)["ipv4Unicast"]["peers"]
    assert peers[str(ROUTER_IP)]["state"] != "Established"
    # Cilium's speaker stops: MetalLB's gets the session on its next attempt.
    gobgp = bgp_wire.gobgp["node-a"]
    stopped = time.monotonic()
    gobgp.run([["neighbor", "del", str(ROUTER_IP)]])
    unrouted_since: float | None = None
    while bgp_wire.table() != {"203.0.113.6/32": {"node-a"}}:
        if unrouted_since is None and not bgp_wire.table():
            unrouted_since = time.monotonic()
        assert time.monotonic() - stopped < 15, bgp_wire.table()
        time.sleep(0.02)
    assert unrouted_since is not None  # the node announced nothing for a while
    gap = time.monotonic() - unrouted_since
    figure(f"node-a unrouted for {gap:.2f} s between Cilium's session and MetalLB's")


def test_teardown_leaves_no_namespace_and_no_daemon(tmp_path: Path) -> None:
    wire = BGPWire(NODES, tmp_path, router_asn=64513, prefix=f"{session_prefix()}t")
    for built in built_wire(wire, why_no_bgp_wire):
        both = {"node-a": speaker(built, "node-a", METALLB, PREFIX),
                "node-b": speaker(built, "node-b", CILIUM, PREFIX)}
        built.apply(both)
        built.wait_shows(both)
        pids = [daemon.pid for daemon in built.daemons()]
        assert len(pids) == 3  # bird, bgpd, gobgpd
        built.destroy()
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                                check=True).stdout.split()
        # None of this session's BGP wires is left (other tests' wires are torn down too).
        assert [name for name in listed if name.startswith(session_prefix())] == []
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)


def test_switching_every_node_at_once_leaves_the_prefix_unrouted(
        bgp_wire: BGPWire, figure: Callable[[str], None]) -> None:
    """What the node-by-node hand-over avoids, seen by the poller: when every node moves from
    MetalLB's speaker to Cilium's at once, the router has no route for a while."""
    metallb = {n: speaker(bgp_wire, n, METALLB, PREFIX) for n in NODES}
    cilium = {n: speaker(bgp_wire, n, CILIUM, PREFIX) for n in NODES}
    view = {"now": metallb}
    follower = BGPFollower(bgp_wire, lambda: view["now"]).start()
    try:
        follower.wait_caught_up()
        poller = RouterPoller(bgp_wire, interval=0.05).start()
        time.sleep(0.2)
        view["now"] = cilium
        follower.wait_caught_up()
        samples = poller.stop()
    finally:
        follower.stop()
    problems = sample_problems(samples, follower.history, [PREFIX])
    assert problems and all(p.endswith(f"no route for {PREFIX}") for p in problems), problems
    longest = longest_short_span(samples, {PREFIX: len(NODES)})
    assert longest is not None and longest.fewest == 0
    figure(f"every node at once: {longest.describe()}")
