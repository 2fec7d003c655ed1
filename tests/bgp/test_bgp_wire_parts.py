"""The BGP wire's pure parts, without root: the lab's BGP view turned into one speaker per node,
the daemons' configurations and commands, bird's output read back, and the poll analysis."""

from __future__ import annotations

from ipaddress import IPv4Address
from pathlib import Path

import pytest

from migrate.lab.bgp_wire import (
    OUTBOUND_MAP,
    BGPWireError,
    Sample,
    Speaker,
    Target,
    WireRoute,
    allowed_next_hops,
    attribute_list,
    bird_config,
    break_step,
    expected_table,
    frr_commands,
    gobgp_commands,
    longest_short_span,
    parse_protocols,
    parse_routes,
    peering,
    sample_problems,
    wanted_speakers,
)
from migrate.lab.models.bgp import BGPRoute, BGPSession

NODES = ("cp-1", "worker-1", "worker-2")
IPS = {node: IPv4Address(f"198.19.64.{11 + i}") for i, node in enumerate(NODES)}
ROUTER = "10.99.0.254"


def session(node: str, stack: str, state: str = "established", *, prefixes: tuple[str, ...] = (
        "203.0.113.1/32",), router: str = ROUTER, asn: int = 64512,
            communities: tuple[str, ...] = ("64512:100",)) -> BGPSession:
    routes = tuple(BGPRoute(p, communities=communities, local_pref=200) for p in prefixes)
    return BGPSession(
        node=node, stack=stack, peer="router", peer_address=router, peer_port=179, peer_asn=0,
        local_asn=asn, source_address="10.77.0.11", router_id=None, password_secret=None,
        password_inline=False, ebgp_multihop=None, hold_time=90, keepalive_time=30,
        connect_retry=120, graceful_restart=False, state=state, established_since=None,
        advertised=routes if state == "established" else (), routes=routes)


def wanted(*sessions: BGPSession, router_asn: int = 64513) -> dict[str, Speaker | None]:
    return wanted_speakers(sessions, NODES, router=ROUTER, router_asn=router_asn, node_ips=IPS)


def test_each_node_runs_the_speaker_whose_session_the_lab_says_is_established() -> None:
    view = wanted(session("cp-1", "metallb"), session("cp-1", "cilium", "active"),
                  session("worker-1", "cilium", prefixes=("203.0.113.1/32", "203.0.113.2/32")),
                  session("worker-2", "metallb", router="10.99.0.253"))
    assert view["cp-1"] == Speaker("metallb", 64512, "198.19.64.11", "198.19.64.254", 64513, (
        WireRoute("203.0.113.1/32", ("64512:100",)),))  # LOCAL_PREF is not sent over eBGP
    assert view["worker-1"] is not None and view["worker-1"].stack == "cilium"
    assert view["worker-2"] is None  # another router: not on this wire
    assert expected_table(view) == {"203.0.113.1/32": frozenset({"cp-1", "worker-1"}),
                                    "203.0.113.2/32": frozenset({"worker-1"})}
    assert peering(view) == {"cp-1", "worker-1"}
    ibgp = wanted(session("cp-1", "metallb"), router_asn=64512)
    assert ibgp["cp-1"] is not None and ibgp["cp-1"].routes[0].local_pref == 200


def test_a_view_with_two_speakers_peering_from_one_node_is_refused() -> None:
    with pytest.raises(BGPWireError, match="both metallb and cilium"):
        wanted(session("cp-1", "metallb"), session("cp-1", "cilium"))
    with pytest.raises(BGPWireError, match="IPv4 only"):
        wanted(session("cp-1", "metallb", prefixes=("2001:db8::1/128",)))


def test_what_goes_goes_first_and_a_node_changing_speaker_is_silent_in_between() -> None:
    old = wanted(session("cp-1", "metallb", prefixes=("203.0.113.1/32", "203.0.113.2/32")),
                 session("worker-1", "metallb"))
    new = wanted(session("cp-1", "metallb", prefixes=("203.0.113.1/32",)),
                 session("worker-1", "cilium"), session("worker-2", "cilium"))
    between = break_step(old, new)
    assert expected_table(between) == {"203.0.113.1/32": frozenset({"cp-1"})}
    assert peering(between) == {"cp-1"}


def test_frr_is_told_routes_then_the_neighbour_and_loses_the_neighbour_first() -> None:
    new = wanted(session("cp-1", "metallb"))["cp-1"]
    commands = frr_commands(None, new)
    assert commands[0] == "configure terminal"
    # The community is set on the way out, as MetalLB does, by the neighbour's route-map.
    entry = next(c for c in commands if c.startswith(f"route-map {OUTBOUND_MAP} permit "))
    name = attribute_list(new.routes[0])
    assert commands[commands.index(entry) + 1] == f"match ip address prefix-list {name}"
    assert commands.index("set community 64512:100") > commands.index(entry)
    assert f"ip prefix-list {name} permit 203.0.113.1/32" in commands
    assert not any(c.startswith("network") and "route-map" in c for c in commands)
    neighbour = commands.index("neighbor 198.19.64.254 remote-as 64513")
    assert commands.index("network 203.0.113.1/32") < neighbour
    assert commands.index(f"route-map {OUTBOUND_MAP} permit 65535") < neighbour
    assert f"neighbor 198.19.64.254 route-map {OUTBOUND_MAP} out" in commands[neighbour:]
    assert "neighbor 198.19.64.254 activate" in commands
    assert frr_commands(new, new) == []
    gone = frr_commands(new, None)
    assert gone[gone.index("router bgp 64512") + 1] == "no neighbor 198.19.64.254"
    assert "no network 203.0.113.1/32" in gone
    assert gone[-1] == f"no ip prefix-list {name} permit 203.0.113.1/32"
    fewer = wanted(session("cp-1", "metallb", prefixes=()))["cp-1"]
    assert [c for c in frr_commands(new, fewer) if "neighbor" in c or "network" in c] == [
        "no network 203.0.113.1/32"]


def test_a_route_whose_attributes_change_joins_its_new_list_before_it_leaves_the_old() -> None:
    old = wanted(session("cp-1", "metallb"))["cp-1"]
    new = wanted(session("cp-1", "metallb", communities=("64512:200", "no-export")))["cp-1"]
    assert old is not None and new is not None
    commands = frr_commands(old, new)
    before, after = attribute_list(old.routes[0]), attribute_list(new.routes[0])
    joins = commands.index(f"ip prefix-list {after} permit 203.0.113.1/32")
    assert commands.index("set community 64512:200 no-export") < joins
    assert commands.index(f"no ip prefix-list {before} permit 203.0.113.1/32") > joins
    assert commands[-1] == "clear bgp ipv4 unicast 198.19.64.254 soft out"
    assert not any("network" in c or "neighbor" in c for c in commands)


def test_gobgp_is_told_routes_then_the_neighbour() -> None:
    new = wanted(session("worker-1", "cilium", prefixes=("203.0.113.1/32", "203.0.113.2/32"),
                         communities=("64512:100", "no-export")))["worker-1"]
    calls = gobgp_commands(None, new)
    assert calls[-1] == ["neighbor", "add", "198.19.64.254", "as", "64513"]
    assert calls[0] == ["global", "rib", "add", "203.0.113.1/32", "-a", "ipv4", "origin", "igp",
                        "community", "64512:100,no-export"]
    less = wanted(session("worker-1", "cilium", prefixes=("203.0.113.2/32",),
                          communities=("64512:100", "no-export")))["worker-1"]
    assert gobgp_commands(new, less) == [["global", "rib", "del", "203.0.113.1/32", "-a", "ipv4"]]
    assert gobgp_commands(less, None)[0] == ["neighbor", "del", "198.19.64.254"]


def test_bird_keeps_one_protocol_per_node_address(tmp_path: Path) -> None:
    text = bird_config(router_asn=64513, log_file=tmp_path / "bird.log", neighbors=[
        ("node1", IPS["cp-1"], 64512), ("node2", IPS["worker-1"], None)])
    assert "protocol bgp node1 from lbnode { neighbor 198.19.64.11 as 64512; }" in text
    assert "protocol bgp node2 from lbnode { neighbor 198.19.64.12 external; }" in text
    assert "export none" in text and "merge paths on" in text


ROUTES = """BIRD 2.0.12 ready.
Table master4:
203.0.113.9/32       unicast [node2 07:13:07.566] * (100) [AS64512i]
\tvia 198.19.64.12 on br0
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 64512
\tBGP.next_hop: 198.19.64.12
\tBGP.local_pref: 100
\tBGP.community: (64512,100) (65535,65281)
\tBGP.large_community: (64512, 1, 2)
                     unicast [node1 07:11:02.275] (100) [AS64512i]
\tvia 198.19.64.11 on br0
\tType: BGP univ
\tBGP.origin: IGP
\tBGP.as_path: 64512
\tBGP.next_hop: 198.19.64.11
203.0.113.7/32       unicast [node1 07:12:39.113] * (100) [AS64512i]
\tvia 198.19.64.11 on br0
\tType: BGP univ
"""

PROTOCOLS = """BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
device1    Device     ---        up     07:10:40.626
kernel1    Kernel     master4    up     07:10:40.626
node1      BGP        ---        up     07:11:02.274  Established
node2      BGP        ---        start  07:10:40.626  Active        Socket: Connection refused
"""


def test_bird_s_table_and_sessions_read_back() -> None:
    routes = parse_routes(ROUTES)
    assert sorted(routes) == ["203.0.113.7/32", "203.0.113.9/32"]
    ecmp = routes["203.0.113.9/32"]
    assert [(r.protocol, r.next_hop, r.primary) for r in ecmp] == [
        ("node1", "198.19.64.11", False), ("node2", "198.19.64.12", True)]
    assert ecmp[1].communities == ("64512:100", "no-export")
    assert ecmp[1].large_communities == ("64512:1:2",)
    assert parse_routes("BIRD 2.0.12 ready.\nTable master4:\n") == {}
    assert parse_protocols(PROTOCOLS) == {"node1": "Established", "node2": "Active"}


def sample(at: float, **table: str) -> Sample:
    return Sample(at, at + 0.01, {f"203.0.113.{k[1:]}/32": frozenset(v.split()) if v else
                                  frozenset() for k, v in table.items()})


def test_a_reading_may_show_the_last_confirmed_state_or_any_seen_after_it() -> None:
    history = [
        Target(0.0, {"203.0.113.1/32": frozenset({"a", "b"})}, frozenset("ab"), 1.0),
        Target(2.0, {"203.0.113.1/32": frozenset({"b"})}, frozenset("b"), 2.5),
        Target(3.0, {"203.0.113.1/32": frozenset({"b", "c"})}, frozenset("bc"), 4.0),
    ]
    assert allowed_next_hops(history, 1.5, 1.6) == {"203.0.113.1/32": frozenset({"a", "b"})}
    assert allowed_next_hops(history, 2.2, 3.1) == {"203.0.113.1/32": frozenset({"a", "b", "c"})}
    assert allowed_next_hops(history, 4.5, 4.6) == {"203.0.113.1/32": frozenset({"b", "c"})}
    prefixes = ["203.0.113.1/32"]
    assert sample_problems([sample(1.5, p1="a b"), sample(3.5, p1="c")], history, prefixes) == []
    problems = sample_problems([sample(4.5, p1="a c"), sample(5.0, p1="")], history, prefixes)
    assert problems == ["at 4.500: 203.0.113.1/32 via ['a'], which the lab does not say"
                        " announce it", "at 5.000: no route for 203.0.113.1/32"]


def test_the_longest_moment_with_fewer_next_hops_than_nodes() -> None:
    samples = [sample(0, p1="a b c"), sample(1, p1="b c"), sample(2, p1="c"),
               sample(3, p1="a b c"), sample(4, p1="a b"), sample(4.5, p1="a b c"),
               sample(5, p1="a b c", p2="a")]
    longest = longest_short_span(samples, {"203.0.113.1/32": 3, "203.0.113.2/32": 1})
    assert longest is not None
    assert (longest.prefix, longest.start, longest.end, longest.fewest) == (
        "203.0.113.1/32", 1, 3, 1)
    assert longest.describe() == "203.0.113.1/32: 1 of 3 next hops (c) at worst, for 2.00 s"
    assert longest_short_span(samples[:1], {"203.0.113.1/32": 3}) is None
