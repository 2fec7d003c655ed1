"""The BGP wire: real BGP daemons in network namespaces, following what the lab's models say.

Topology (all inside namespaces this module creates; nothing touches the host's interfaces)::

    <p>rt (the upstream router: bird, 198.19.64.254/24 on br0) ─┬─ <p>n1 (198.19.64.11/24)
                                                               ├─ <p>n2 (198.19.64.12/24)
                                                               └─ ...

``<p>`` is ``mgb<pid % 10000>`` (plus whatever a test adds). The router namespace holds the
bridge ``br0``; each node namespace has one interface ``eth0`` whose peer ``p<node>`` sits on
the bridge. Per node, two daemons stand in for the node's two BGP speakers:

- ``gobgpd`` for Cilium's: Cilium's agent embeds GoBGP (cilium/cilium ``pkg/bgpv1/gobgp``) and
  originates every path with ORIGIN IGP and next hop 0.0.0.0, the peering address
  (``pkg/bgpv1/types/utils.go``, ``NewPathForPrefix``); the wire adds its routes with
  ``gobgp global rib add`` over gobgpd's gRPC port, bound to 127.0.0.1 inside the node's
  namespace;
- FRR's ``bgpd`` for MetalLB's: MetalLB's FRR mode renders a bgpd configuration with
  ``no bgp ebgp-requires-policy``, ``no bgp network import-check`` and one ``network``
  statement per advertised prefix (metallb/metallb ``internal/bgp/frr/templates/frr.tmpl``;
  see :func:`frr_config`); the wire runs ``/usr/lib/frr/bgpd`` directly (no zebra, no
  systemd, nothing in /etc/frr) with its own configuration, pid file and vty socket in a
  temporary folder, and reconfigures it with ``vtysh --vty_socket``.

A router keeps one session per neighbour address (RFC 4271 §6.8): bird has one protocol per node
address, and a second connection from an address that already has an Established session is
closed ("Connection collision"). So on one node only one of the two daemons peers at a time:
the wire configures the neighbour in exactly the daemon whose session the lab says is
Established, and nowhere else (:func:`wanted_speakers`). bird connects to the nodes (``connect
retry time 1``) and gobgpd listens for it, because GoBGP waits 5 to 9 s before its own first
connection attempt (``minConnectRetryInterval``, osrg/gobgp ``pkg/server/fsm.go``, vendored by
Cilium); FRR's bgpd does not listen (``-p 0``) and connects to the router itself, within about
a second.

Addresses come from 198.19.64.0/24 (inside RFC 2544's 198.18.0.0/15, apart from the ARP wire's
198.18.0.0/24 and 198.18.1.0/24) and exist only in these namespaces; the lab's node and router
addresses are mapped onto them. bird exports nothing to the nodes and installs what it learns
only into the router namespace's own kernel table (``merge paths``: ECMP). The router takes no
TCP MD5 password (the lab already checks passwords); IPv4 prefixes only.

The pure parts (the lab's view to per-node speakers, the daemons' configurations and commands,
bird's output parsed, the poll analysis) need no root and are unit-tested on their own.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import TYPE_CHECKING

from migrate.lab.wire import WireError, stop_process

if TYPE_CHECKING:
    from migrate.lab.models import Controllers
    from migrate.lab.models.bgp import BGPRoute, BGPSession

ROUTER_IP = IPv4Address("198.19.64.254")
NODE_IP_BASE = IPv4Address("198.19.64.10")
PREFIX_LENGTH = 24
INTERFACE = "eth0"
BRIDGE = "br0"
GOBGP_API_PORT = 50051
BIRD = "/usr/sbin/bird"
BIRDC = "/usr/sbin/birdc"
FRR_BGPD = "/usr/lib/frr/bgpd"
VTYSH = "/usr/bin/vtysh"
GOBGPD = "/usr/bin/gobgpd"
GOBGP = "/usr/bin/gobgp"
BINARIES = {"bird": BIRD, "birdc": BIRDC, "bgpd (frr)": FRR_BGPD, "vtysh (frr)": VTYSH,
            "gobgpd": GOBGPD, "gobgp": GOBGP}
METALLB = "metallb"
CILIUM = "cilium"
SYNC_TIMEOUT = 20.0
"""Seconds the router gets to show what the daemons were told (a session takes about one)."""


class BGPWireError(WireError):
    """The BGP wire, one of its daemons, or the lab view it follows failed."""


def session_prefix() -> str:
    """``mgb<pid % 10000>``: short enough for namespace and interface names."""
    return f"mgb{os.getpid() % 10000}"


def why_no_bgp_wire() -> str | None:
    """The reason the BGP wire cannot be built here, or None."""
    if os.geteuid() != 0:
        return "the BGP wire needs root (network namespaces)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    missing = [name for name, path in BINARIES.items() if not os.access(path, os.X_OK)]
    if missing:
        return ("the BGP wire needs " + ", ".join(missing)
                + " (Debian packages bird2, frr, gobgpd)")
    return None


# =========================================================================== the pure parts


@dataclass(frozen=True)
class WireRoute:
    """One prefix a speaker advertises, with the attributes the router will see."""

    prefix: str
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()
    local_pref: int | None = None


@dataclass(frozen=True)
class Speaker:
    """What one node's speaker does on the wire: its session to the router and its routes."""

    stack: str
    """``metallb`` (FRR's bgpd) or ``cilium`` (gobgpd)."""
    local_asn: int
    router_id: str
    peer_address: str
    peer_asn: int
    routes: tuple[WireRoute, ...] = ()

    @property
    def prefixes(self) -> frozenset[str]:
        """The prefixes it advertises."""
        return frozenset(r.prefix for r in self.routes)

    def same_session(self, other: Speaker | None) -> bool:
        """True when ``other`` is the same daemon with the same session (routes aside)."""
        return other is not None and (self.stack, self.local_asn, self.router_id,
                                      self.peer_address, self.peer_asn) == (
            other.stack, other.local_asn, other.router_id, other.peer_address, other.peer_asn)


Wanted = dict[str, Speaker | None]
"""Lab node -> the speaker that peers from it (None: neither)."""


def wire_route(route: BGPRoute, *, ibgp: bool) -> WireRoute:
    """The lab's route as the wire sends it (LOCAL_PREF only to an iBGP peer, RFC 4271 §5.1.5)."""
    if ":" in route.prefix:
        raise BGPWireError(f"the BGP wire carries IPv4 only, not {route.prefix}")
    return WireRoute(route.prefix, tuple(route.communities), tuple(route.large_communities),
                     route.local_pref if ibgp else None)


def wanted_speakers(sessions: Iterable[BGPSession], nodes: Sequence[str], *, router: str,
                    router_asn: int, node_ips: Mapping[str, IPv4Address],
                    router_ip: IPv4Address = ROUTER_IP) -> Wanted:
    """Per lab node, the one speaker the wire runs: the stack whose session to ``router`` (the
    lab's router address) the lab says is Established, with the routes it advertises on it.

    Sessions to other routers are not on this wire. Two Established sessions from one node
    cannot happen in the lab (its router refuses the second, as a real one does); a view that
    says so is an error, not something to put on the wire.
    """
    out: Wanted = dict.fromkeys(nodes)
    for session in sessions:
        if session.peer_address != router or session.node not in out or not session.established:
            continue
        held = out[session.node]
        if held is not None:
            raise BGPWireError(f"the lab says {session.node} peers with {router} from both"
                               f" {held.stack} and {session.stack}")
        ibgp = session.local_asn == router_asn
        routes = tuple(sorted((wire_route(r, ibgp=ibgp) for r in session.advertised),
                              key=lambda r: r.prefix))
        out[session.node] = Speaker(session.stack, session.local_asn, str(node_ips[session.node]),
                                    str(router_ip), router_asn, routes)
    return out


def expected_table(wanted: Mapping[str, Speaker | None]) -> dict[str, frozenset[str]]:
    """What the router should hold: per prefix, the nodes that are its next hops."""
    table: dict[str, set[str]] = {}
    for node, speaker in wanted.items():
        for prefix in speaker.prefixes if speaker else ():
            table.setdefault(prefix, set()).add(node)
    return {prefix: frozenset(nodes) for prefix, nodes in sorted(table.items())}


def peering(wanted: Mapping[str, Speaker | None]) -> frozenset[str]:
    """The nodes that have a session with the router."""
    return frozenset(node for node, speaker in wanted.items() if speaker is not None)


def break_step(old: Mapping[str, Speaker | None], new: Mapping[str, Speaker | None]) -> Wanted:
    """The state between ``old`` and ``new`` once everything that goes has gone: a session that
    ends or changes daemon is down, a route that is withdrawn is gone, nothing is added yet.
    (On one node the old speaker must be gone before the new one connects: one session per
    neighbour address.)"""
    out: Wanted = {}
    for node in sorted(set(old) | set(new)):
        before, after = old.get(node), new.get(node)
        if before is None or after is None or not before.same_session(after):
            out[node] = None
        else:
            kept = tuple(r for r in before.routes if r in after.routes)
            out[node] = Speaker(before.stack, before.local_asn, before.router_id,
                                before.peer_address, before.peer_asn, kept)
    return out


# --------------------------------------------------------------------------- configurations


def protocol_name(index: int) -> str:
    """bird's protocol for the ``index``-th node (1-based)."""
    return f"node{index}"


def bird_config(*, router_asn: int, neighbors: Sequence[tuple[str, IPv4Address, int | None]],
                log_file: Path, router_ip: IPv4Address = ROUTER_IP) -> str:
    """bird's configuration: one BGP protocol per node address (bird keeps one session per
    neighbour), importing everything, exporting nothing; the kernel protocol merges equal
    paths into one multipath route (ECMP) in the router namespace's own table.

    ``neighbors``: (protocol name, address, AS; None: any external AS)."""
    lines = [
        f"router id {router_ip};",
        f'log "{log_file}" all;',
        "debug protocols { states, events };",
        "protocol device { scan time 10; }",
        "protocol kernel { ipv4 { import none; export all; }; merge paths on; learn off; }",
        "template bgp lbnode {",
        f"  local {router_ip} as {router_asn};",
        "  connect delay time 1;",
        "  connect retry time 1;",
        "  error wait time 1, 2;",
        "  hold time 90;",
        "  ipv4 { import all; export none; };",
        "}",
    ]
    for name, address, asn in neighbors:
        remote = f"as {asn}" if asn else "external"
        lines.append(f"protocol bgp {name} from lbnode {{ neighbor {address} {remote}; }}")
    return "\n".join(lines) + "\n"


def frr_config(*, asn: int, router_id: str, hostname: str, log_file: Path) -> str:
    """bgpd's start-up configuration (no neighbour yet; :func:`frr_commands` adds it), shaped
    like MetalLB's (metallb ``internal/bgp/frr/templates/frr.tmpl``), except that IPv4 unicast
    stays on by default: MetalLB loads a neighbour and its ``activate`` in one configuration,
    while a neighbour added through vtysh connects at once, and an OPEN without the IPv4
    capability makes the router drop the node's other session too."""
    return "\n".join([
        "frr defaults datacenter",
        f"hostname {hostname}",
        f"log file {log_file}",
        "bgp route-map delay-timer 0",
        f"router bgp {asn}",
        f" bgp router-id {router_id}",
        " no bgp ebgp-requires-policy",
        " no bgp network import-check",
        " coalesce-time 0",
        "exit",
    ]) + "\n"


OUTBOUND_MAP = "lbm-out"
"""The neighbour's outbound route-map. MetalLB sets a route's communities and LOCAL_PREF there,
not where the route is originated: per neighbour a route-map ``<id>-out`` with one ``permit``
entry per attribute set, matching a prefix-list of the prefixes that carry it, ``set`` and
``on-match next``, then entries that permit what the neighbour may see (metallb/metallb
``internal/bgp/frr/templates/prefixfilters.tmpl``, ``neighboripfamily.tmpl``: ``neighbor ...
route-map <id>-out out``). It matters for ``no-export``: bgpd holds a route back from an eBGP
peer when the route *as originated* carries NO_EXPORT, before the outbound policy runs, so a
route that gets it on the way out is still sent, as gobgpd sends Cilium's."""

LAST_ENTRY = 65535
"""The outbound route-map's last entry: permits every route bgpd originates."""


def attribute_list(route: WireRoute) -> str | None:
    """The prefix-list (and outbound route-map entry) of a route's attributes (None: none)."""
    if not (route.communities or route.large_communities or route.local_pref is not None):
        return None
    digest = hashlib.sha256(repr((route.communities, route.large_communities,
                                  route.local_pref)).encode()).hexdigest()[:10]
    return f"lbm-{digest}"


def _entry(name: str) -> int:
    """The outbound route-map sequence of an attribute list (1..65000, from its name)."""
    return 1 + int(name.removeprefix("lbm-"), 16) % 65000


def _entry_commands(route: WireRoute, name: str) -> list[str]:
    commands = [f"route-map {OUTBOUND_MAP} permit {_entry(name)}",
                f"match ip address prefix-list {name}"]
    if route.communities:
        commands.append("set community " + " ".join(route.communities))
    if route.large_communities:
        commands.append("set large-community " + " ".join(route.large_communities))
    if route.local_pref is not None:
        commands.append(f"set local-preference {route.local_pref}")
    return [*commands, "on-match next", "exit"]


def frr_commands(old: Speaker | None, new: Speaker | None) -> list[str]:
    """The vtysh commands that take bgpd from ``old`` to ``new`` (same AS; a new AS means a new
    bgpd). Withdrawals first; then the outbound route-map's entries and prefix-lists (see
    :data:`OUTBOUND_MAP`), the networks, and last the neighbour; a route's old attribute list
    is left only once it is in its new one."""
    either = new or old
    if either is None:
        return []
    asn = either.local_asn
    new_routes = {r.prefix: r for r in new.routes} if new else {}
    old_routes = {r.prefix: r for r in old.routes} if old else {}
    session_goes = old is not None and (new is None or not new.same_session(old))
    withdrawn = [p for p in old_routes if p not in new_routes]
    changed = [r for p, r in new_routes.items() if old_routes.get(p) != r]
    names = {name for r in (*old_routes.values(), *new_routes.values())
             if (name := attribute_list(r))}
    if len({_entry(name) for name in names}) < len(names):
        raise BGPWireError("two attribute sets share one route-map sequence; change a route")
    first: list[str] = []
    if session_goes and old is not None:
        first.append(f"no neighbor {old.peer_address}")
    if withdrawn:
        first += ["address-family ipv4 unicast", *(f"no network {p}" for p in withdrawn),
                  "exit-address-family"]
    leaving = [(name, p) for p in withdrawn if (name := attribute_list(old_routes[p]))]
    lists: list[str] = []
    entries: dict[str, WireRoute] = {}
    for route in changed:
        name = attribute_list(route)
        before = old_routes.get(route.prefix)
        old_name = attribute_list(before) if before else None
        if name and name != old_name:
            entries.setdefault(name, route)
            lists.append(f"ip prefix-list {name} permit {route.prefix}")
        if old_name and old_name != name:
            leaving.append((old_name, route.prefix))
    peering = new is not None and (old is None or session_goes)
    maps = [c for name, route in sorted(entries.items()) for c in _entry_commands(route, name)]
    if peering:
        maps += [f"route-map {OUTBOUND_MAP} permit {LAST_ENTRY}", "exit"]
    second = []
    added = [p for p in new_routes if p not in old_routes or session_goes]
    if added:
        second += ["address-family ipv4 unicast", *(f"network {p}" for p in added),
                   "exit-address-family"]
    if peering and new is not None:
        peer = new.peer_address
        second += [f"neighbor {peer} remote-as {new.peer_asn}",
                   f"neighbor {peer} timers connect 1",
                   f"neighbor {peer} advertisement-interval 0",
                   "address-family ipv4 unicast", f"neighbor {peer} activate",
                   f"neighbor {peer} route-map {OUTBOUND_MAP} out",
                   "exit-address-family"]
    commands = ["configure terminal"]
    if first:
        commands += [f"router bgp {asn}", *first, "exit"]
    commands += maps + lists
    if second:
        commands += [f"router bgp {asn}", *second, "exit"]
    commands += [f"no ip prefix-list {name} permit {prefix}" for name, prefix in leaving]
    resent = [r for r in changed if r.prefix in old_routes]
    if resent and new is not None and not session_goes:
        # A route whose attribute list changed must reach the router again. MetalLB ships FRR
        # 10.x (metallb config/frr/speaker-patch.yaml), which re-runs a route-map when a
        # prefix-list it matches changes (FRRouting/frr fixed that in 2023, with a topotest);
        # Debian's bgpd 8.4 does not, so the wire asks it to send the routes again.
        commands += ["end", f"clear bgp ipv4 unicast {new.peer_address} soft out"]
    return commands if len(commands) > 1 else []


def gobgpd_config(*, asn: int, router_id: str) -> str:
    """gobgpd's start-up configuration (TOML): its AS and router ID, listening on port 179 of
    the node address for the router's connection."""
    return "\n".join([
        "[global.config]",
        f"  as = {asn}",
        f'  router-id = "{router_id}"',
        "  port = 179",
        f'  local-address-list = ["{router_id}"]',
    ]) + "\n"


def gobgp_commands(old: Speaker | None, new: Speaker | None) -> list[list[str]]:
    """The ``gobgp`` CLI calls that take gobgpd from ``old`` to ``new`` (same AS): the
    neighbour goes first when the session ends, routes are withdrawn, added or replaced (a path
    added again for the same prefix replaces the old one), and a new neighbour comes last, so
    its first UPDATE carries every route."""
    calls: list[list[str]] = []
    session_goes = old is not None and (new is None or not new.same_session(old))
    if session_goes and old is not None:
        calls.append(["neighbor", "del", old.peer_address])
    old_routes = {r.prefix: r for r in old.routes} if old else {}
    new_routes = {r.prefix: r for r in new.routes} if new else {}
    for prefix in old_routes:
        if prefix not in new_routes:
            calls.append(["global", "rib", "del", prefix, "-a", "ipv4"])
    for prefix, route in new_routes.items():
        if old_routes.get(prefix) == route:
            continue
        call = ["global", "rib", "add", prefix, "-a", "ipv4", "origin", "igp"]
        if route.communities:
            call += ["community", ",".join(route.communities)]
        if route.large_communities:
            call += ["large-community", ",".join(route.large_communities)]
        if route.local_pref is not None:
            call += ["local-pref", str(route.local_pref)]
        calls.append(call)
    if new is not None and (old is None or session_goes):
        calls.append(["neighbor", "add", new.peer_address, "as", str(new.peer_asn)])
    return calls


# --------------------------------------------------------------------------- bird's output


@dataclass(frozen=True)
class RouterRoute:
    """One path bird holds for a prefix."""

    prefix: str
    protocol: str
    next_hop: str
    primary: bool = False
    communities: tuple[str, ...] = ()
    large_communities: tuple[str, ...] = ()


_ROUTE_HEAD = re.compile(
    r"^(?P<prefix>\S+/\d+)?\s+unicast\s+\[(?P<proto>\w+)\s[^\]]*\]\s*(?P<primary>\*)?")
_VIA = re.compile(r"^\s+via\s+(?P<hop>\S+)")
_PAIR = re.compile(r"\((\d+),\s*(\d+)\)")
_TRIPLE = re.compile(r"\((\d+),\s*(\d+),\s*(\d+)\)")
_WELL_KNOWN = {"65535:65281": "no-export", "65535:65282": "no-advertise",
               "65535:65283": "no-export-subconfed", "65535:65284": "no-peer"}


def parse_routes(text: str) -> dict[str, tuple[RouterRoute, ...]]:
    """``birdc show route all`` as data: per prefix, every path bird holds (its protocol, next
    hop, whether it is the primary one, its communities; well-known ones by name)."""
    routes: dict[str, list[RouterRoute]] = {}
    prefix: str | None = None
    current: dict[str, object] | None = None

    def flush() -> None:
        if current is not None and current.get("hop"):
            routes.setdefault(str(current["prefix"]), []).append(RouterRoute(
                str(current["prefix"]), str(current["proto"]), str(current["hop"]),
                bool(current["primary"]),
                tuple(current.get("communities", ())),  # type: ignore[arg-type]
                tuple(current.get("large", ()))))  # type: ignore[arg-type]

    for line in text.splitlines():
        head = _ROUTE_HEAD.match(line)
        if head:
            flush()
            prefix = head.group("prefix") or prefix
            current = {"prefix": prefix, "proto": head.group("proto"),
                       "primary": head.group("primary") == "*", "hop": None}
            continue
        if current is None:
            continue
        via = _VIA.match(line)
        if via and not current["hop"]:
            current["hop"] = via.group("hop")
            continue
        stripped = line.strip()
        if stripped.startswith("BGP.community:"):
            pairs = [f"{a}:{b}" for a, b in _PAIR.findall(stripped)]
            current["communities"] = tuple(_WELL_KNOWN.get(p, p) for p in pairs)
        elif stripped.startswith("BGP.large_community:"):
            current["large"] = tuple(f"{a}:{b}:{c}" for a, b, c in _TRIPLE.findall(stripped))
    flush()
    return {p: tuple(sorted(rs, key=lambda r: r.next_hop)) for p, rs in sorted(routes.items())}


def parse_protocols(text: str) -> dict[str, str]:
    """``birdc show protocols`` as data: BGP protocol name -> its BGP state (``Established``,
    ``Active``, ``Connect``, ``Passive``, ``Idle``...)."""
    states: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[1] == "BGP":
            states[fields[0]] = fields[5]
    return states


# --------------------------------------------------------------------------- the polls


@dataclass(frozen=True)
class Sample:
    """One reading of the router's table: per prefix, the nodes that are its next hops."""

    started: float
    ended: float
    table: dict[str, frozenset[str]]
    lab_time: float | None = None


@dataclass(frozen=True)
class Target:
    """A state of the lab the wire was told to follow, when it saw it and when the router
    showed it (None: not yet, or never before the next one)."""

    seen: float
    table: dict[str, frozenset[str]]
    peering: frozenset[str]
    confirmed: float | None = None


def allowed_next_hops(history: Sequence[Target], started: float,
                      ended: float) -> dict[str, frozenset[str]]:
    """Per prefix, the nodes that may be its next hops in a reading taken from ``started`` to
    ``ended``: the nodes that announce it per the lab in the last state the router had fully
    shown by ``started`` or in any state the wire saw after it, up to ``ended`` (the router is
    never ahead of the lab, and lags it only while the wire applies a change)."""
    first = 0
    for index, target in enumerate(history):
        if target.confirmed is not None and target.confirmed <= started:
            first = index
    out: dict[str, set[str]] = {}
    for target in history[first:]:
        if target.seen > ended:
            break
        for prefix, nodes in target.table.items():
            out.setdefault(prefix, set()).update(nodes)
    return {prefix: frozenset(nodes) for prefix, nodes in out.items()}


def sample_problems(samples: Sequence[Sample], history: Sequence[Target],
                    prefixes: Iterable[str]) -> list[str]:
    """What a reading shows wrong: a prefix with no route, or a next hop that does not announce
    it per the lab."""
    problems = []
    wanted = sorted(prefixes)
    for sample in samples:
        allowed = allowed_next_hops(history, sample.started, sample.ended)
        for prefix in wanted:
            hops = sample.table.get(prefix, frozenset())
            if not hops:
                problems.append(f"at {sample.started:.3f}: no route for {prefix}")
            extra = hops - allowed.get(prefix, frozenset())
            if extra:
                problems.append(f"at {sample.started:.3f}: {prefix} via {sorted(extra)}, which"
                                f" the lab does not say announce it")
    return problems


@dataclass(frozen=True)
class ShortSpan:
    """A run of readings in which a prefix had fewer next hops than ``full``."""

    prefix: str
    start: float
    end: float
    fewest: int
    full: int
    nodes: tuple[str, ...]
    """The next hops at the reading with the fewest."""

    @property
    def length(self) -> float:
        """Its length in seconds."""
        return self.end - self.start

    def describe(self) -> str:
        """One line for a person."""
        return (f"{self.prefix}: {self.fewest} of {self.full} next hops"
                f" ({', '.join(self.nodes) or 'none'}) at worst, for {self.length:.2f} s")


def short_spans(samples: Sequence[Sample], full: Mapping[str, int]) -> list[ShortSpan]:
    """Every run of consecutive readings in which a prefix, once routed, had fewer next hops
    than ``full`` says (its number of nodes), from the first such reading's start to the start
    of the next full one (or the last reading's end)."""
    spans: list[ShortSpan] = []
    for prefix, count in sorted(full.items()):
        start: float | None = None
        fewest: frozenset[str] = frozenset()
        routed = False
        for sample in samples:
            hops = sample.table.get(prefix, frozenset())
            routed = routed or bool(hops)
            if not routed:
                continue
            if len(hops) < count:
                if start is None:
                    start, fewest = sample.started, hops
                elif len(hops) < len(fewest):
                    fewest = hops
            elif start is not None:
                spans.append(ShortSpan(prefix, start, sample.started, len(fewest), count,
                                       tuple(sorted(fewest))))
                start = None
        if start is not None and samples:
            spans.append(ShortSpan(prefix, start, samples[-1].ended, len(fewest), count,
                                   tuple(sorted(fewest))))
    return sorted(spans, key=lambda s: s.start)


def longest_short_span(samples: Sequence[Sample], full: Mapping[str, int]) -> ShortSpan | None:
    """The longest moment any prefix had fewer next hops than nodes (None: never)."""
    spans = short_spans(samples, full)
    return max(spans, key=lambda s: s.length) if spans else None


# =========================================================================== the daemons


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 10.0,
              poll: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise BGPWireError(f"timed out waiting for {what}")
        time.sleep(poll)


class Daemon:
    """One daemon process in a namespace, started by us and stopped by its pid."""

    def __init__(self, namespace: str, argv: Sequence[str], log: Path) -> None:
        self.namespace = namespace
        self.log = log
        self._log_handle = log.open("ab")
        self.process: subprocess.Popen[str] = subprocess.Popen(
            ["ip", "netns", "exec", namespace, *argv], stdout=self._log_handle,
            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True)

    @property
    def pid(self) -> int:
        """Its process id (``ip netns exec`` execs the daemon in place)."""
        return self.process.pid

    def alive(self) -> bool:
        """True while it runs."""
        return self.process.poll() is None

    def check(self) -> None:
        """Raise when it has exited."""
        if not self.alive():
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise BGPWireError(f"{self.process.args!r} exited ({self.process.returncode}):"
                               f" {tail}")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL; by pid."""
        stop_process(self.process)
        self._log_handle.close()


class FRRSpeaker:
    """FRR's bgpd in a node namespace, standing in for MetalLB's speaker."""

    def __init__(self, namespace: str, folder: Path, *, asn: int, router_id: str) -> None:
        self.folder = folder
        self.asn = asn
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vtysh.conf").write_text("")
        config = folder / "bgpd.conf"
        config.write_text(frr_config(asn=asn, router_id=router_id, hostname=f"{namespace}-frr",
                                     log_file=folder / "bgpd.log"))
        self.socket = folder / "bgpd.vty"
        # -Z: no zebra; -p 0: no listening socket (it connects to the router); -S: no user
        # switch; -P 0: no vty TCP port, only the socket in our folder.
        self.daemon = Daemon(namespace, [
            FRR_BGPD, "-Z", "-p", "0", "-S", "-P", "0", "-f", str(config),
            "-i", str(folder / "bgpd.pid"), "--vty_socket", str(folder),
        ], folder / "bgpd.out")
        _wait_for(lambda: self.socket.exists() or not self.daemon.alive(), "bgpd's vty socket")
        self.daemon.check()

    def run(self, commands: Sequence[str]) -> None:
        """Run vtysh commands against this bgpd (vtysh talks to its socket, from anywhere)."""
        if not commands:
            return
        argv = [VTYSH, "--vty_socket", str(self.folder), "--config_dir", str(self.folder),
                "-d", "bgpd"]
        for command in commands:
            argv += ["-c", command]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if done.returncode != 0 or "%" in done.stdout:
            raise BGPWireError(f"vtysh failed ({done.returncode}): {done.stdout}{done.stderr}")

    def stop(self) -> None:
        """Stop bgpd (it sends its neighbours a Cease NOTIFICATION)."""
        self.daemon.stop()


class GoBGPSpeaker:
    """gobgpd in a node namespace, standing in for Cilium's BGP speaker."""

    def __init__(self, namespace: str, folder: Path, *, asn: int, router_id: str) -> None:
        self.namespace = namespace
        self.asn = asn
        folder.mkdir(parents=True, exist_ok=True)
        config = folder / "gobgpd.toml"
        config.write_text(gobgpd_config(asn=asn, router_id=router_id))
        self.daemon = Daemon(namespace, [
            GOBGPD, "-f", str(config), "-p", "-l", "info", "--pprof-disable",
            f"--api-hosts=127.0.0.1:{GOBGP_API_PORT}",
        ], folder / "gobgpd.log")
        _wait_for(self._answers, "gobgpd's API")

    def _answers(self) -> bool:
        self.daemon.check()
        done = subprocess.run(self._argv(["global"]), capture_output=True, text=True,
                              timeout=10)
        return done.returncode == 0

    def _argv(self, args: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.namespace, GOBGP, "-u", "127.0.0.1",
                "-p", str(GOBGP_API_PORT), *args]

    def run(self, calls: Sequence[Sequence[str]]) -> None:
        """Run gobgp CLI calls against this gobgpd (its gRPC port inside the namespace)."""
        for call in calls:
            done = subprocess.run(self._argv(call), capture_output=True, text=True, timeout=30)
            if done.returncode != 0:
                raise BGPWireError(f"gobgp {' '.join(call)} failed: {done.stdout}{done.stderr}")

    def stop(self) -> None:
        """Stop gobgpd."""
        self.daemon.stop()


class BGPWire:
    """The router namespace (bridge, bird) and one namespace per lab node, with its two
    speakers started on demand and reconfigured as :meth:`apply` is told."""

    def __init__(self, nodes: Sequence[str], folder: Path, *, router_asn: int,
                 node_asns: Mapping[str, int] | None = None, prefix: str | None = None) -> None:
        self.prefix = prefix or session_prefix()
        self.lab_nodes = list(nodes)
        self.folder = folder
        self.router_asn = router_asn
        self.node_asns = dict(node_asns or {})
        self.router_ns = f"{self.prefix}rt"
        self.namespaces = {node: f"{self.prefix}n{index}"
                           for index, node in enumerate(self.lab_nodes, 1)}
        self.node_ips = {node: NODE_IP_BASE + index
                         for index, node in enumerate(self.lab_nodes, 1)}
        self.protocols = {node: protocol_name(index)
                          for index, node in enumerate(self.lab_nodes, 1)}
        self.by_address = {str(ip): node for node, ip in self.node_ips.items()}
        self.socket = folder / "bird.ctl"
        self.bird_log = folder / "bird.log"
        self.bird: Daemon | None = None
        self.frr: dict[str, FRRSpeaker] = {}
        self.gobgp: dict[str, GoBGPSpeaker] = {}
        self.applied: Wanted = dict.fromkeys(self.lab_nodes)
        self._lock = threading.RLock()

    # ----------------------------------------------------------------- build and tear down

    @property
    def all_namespaces(self) -> list[str]:
        """Every namespace of this wire, the router's last."""
        return [*self.namespaces.values(), self.router_ns]

    def build(self) -> BGPWire:
        """Create the namespaces and links, and start bird (leftovers of the prefix go first)."""
        self.destroy()
        atexit.register(self.destroy)
        self.folder.mkdir(parents=True, exist_ok=True)
        for namespace in self.all_namespaces:
            _ip("netns", "add", namespace)
        router = self.router_ns
        _ip("-n", router, "link", "add", BRIDGE, "type", "bridge", "stp_state", "0")
        _ip("-n", router, "addr", "add", f"{ROUTER_IP}/{PREFIX_LENGTH}", "dev", BRIDGE)
        _ip("-n", router, "link", "set", BRIDGE, "up")
        _ip("-n", router, "link", "set", "lo", "up")
        for node, namespace in self.namespaces.items():
            port = "p" + namespace.removeprefix(self.prefix)
            _ip("-n", router, "link", "add", port, "type", "veth",
                "peer", "name", INTERFACE, "netns", namespace)
            _ip("-n", router, "link", "set", port, "master", BRIDGE, "up")
            _ip("-n", namespace, "addr", "add", f"{self.node_ips[node]}/{PREFIX_LENGTH}",
                "dev", INTERFACE)
            _ip("-n", namespace, "link", "set", INTERFACE, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
        config = self.folder / "bird.conf"
        config.write_text(bird_config(
            router_asn=self.router_asn, log_file=self.bird_log,
            neighbors=[(self.protocols[n], self.node_ips[n], self.node_asns.get(n))
                       for n in self.lab_nodes]))
        # -f: stay in the foreground, so the process we started is bird itself.
        self.bird = Daemon(router, [BIRD, "-f", "-c", str(config), "-s", str(self.socket),
                                    "-P", str(self.folder / "bird.pid")],
                           self.folder / "bird.out")
        _wait_for(lambda: self.socket.exists() or not self.bird_alive(), "bird's socket")
        self.bird.check()
        return self

    def bird_alive(self) -> bool:
        """True while bird runs."""
        return self.bird is not None and self.bird.alive()

    def daemons(self) -> list[Daemon]:
        """Every daemon process started so far."""
        out = [self.bird] if self.bird else []
        out += [s.daemon for s in self.frr.values()] + [s.daemon for s in self.gobgp.values()]
        return out

    def destroy(self) -> None:
        """Stop every daemon (by pid), kill whatever is left in our namespaces (by pid) and
        delete them (by name)."""
        with self._lock:
            speakers: list[FRRSpeaker | GoBGPSpeaker] = [*self.frr.values(),
                                                         *self.gobgp.values()]
            for speaker in speakers:
                with contextlib.suppress(Exception):
                    speaker.stop()
            self.frr.clear()
            self.gobgp.clear()
            if self.bird is not None:
                with contextlib.suppress(Exception):
                    self.bird.stop()
                self.bird = None
            existing = set(_ip("netns", "list", check=False).stdout.split())
            for namespace in self.all_namespaces:
                if namespace not in existing:
                    continue
                for pid in _ip("netns", "pids", namespace, check=False).stdout.split():
                    with contextlib.suppress(ProcessLookupError, ValueError):
                        os.kill(int(pid), signal.SIGKILL)
                _ip("netns", "del", namespace, check=False)
            self.applied = dict.fromkeys(self.lab_nodes)

    # ----------------------------------------------------------------- the router's view

    def birdc(self, *command: str) -> str:
        """A birdc command against our bird's control socket."""
        done = subprocess.run([BIRDC, "-s", str(self.socket), *command], capture_output=True,
                              text=True, timeout=10)
        if done.returncode != 0:
            raise BGPWireError(f"birdc {' '.join(command)} failed: {done.stdout}{done.stderr}")
        return done.stdout

    def routes(self) -> dict[str, tuple[RouterRoute, ...]]:
        """Every path the router holds, per prefix."""
        return parse_routes(self.birdc("show", "route", "all"))

    def table(self) -> dict[str, frozenset[str]]:
        """Per prefix, the lab nodes that are its next hops at the router now."""
        out: dict[str, frozenset[str]] = {}
        for prefix, paths in self.routes().items():
            nodes = frozenset(self.by_address.get(p.next_hop, p.next_hop) for p in paths)
            if nodes:
                out[prefix] = nodes
        return out

    def sessions(self) -> dict[str, str]:
        """Per lab node, the state of the router's session with its address."""
        states = parse_protocols(self.birdc("show", "protocols"))
        return {node: states.get(name, "") for node, name in self.protocols.items()}

    def established(self) -> frozenset[str]:
        """The lab nodes with an Established session at the router."""
        return frozenset(n for n, s in self.sessions().items() if s == "Established")

    def shows(self, wanted: Mapping[str, Speaker | None]) -> bool:
        """True when the router holds exactly ``wanted``'s sessions and routes."""
        return self.established() == peering(wanted) and self.table() == expected_table(wanted)

    # ----------------------------------------------------------------- the speakers

    def _daemon(self, node: str, stack: str, asn: int) -> tuple[FRRSpeaker | GoBGPSpeaker, bool]:
        """The node's daemon of ``stack`` running as ``asn`` (started, or restarted for another
        AS, when needed), and whether it was just started."""
        running: dict[str, FRRSpeaker] | dict[str, GoBGPSpeaker] = (
            self.frr if stack == METALLB else self.gobgp)
        speaker = running.get(node)
        if speaker is not None and speaker.asn == asn:
            return speaker, False
        if speaker is not None:
            speaker.stop()
        namespace = self.namespaces[node]
        router_id = str(self.node_ips[node])
        if stack == METALLB:
            self.frr[node] = frr = FRRSpeaker(namespace, self.folder / f"{namespace}-frr",
                                              asn=asn, router_id=router_id)
            return frr, True
        self.gobgp[node] = gobgp = GoBGPSpeaker(namespace, self.folder / f"{namespace}-gobgp",
                                                asn=asn, router_id=router_id)
        return gobgp, True

    def configure(self, node: str, old: Speaker | None, new: Speaker | None) -> None:
        """Take one daemon of ``node`` from ``old`` to ``new`` (the same stack and AS, or either
        None)."""
        either = new or old
        if either is None:
            return
        speaker, fresh = self._daemon(node, either.stack, either.local_asn)
        before = None if fresh else old
        if isinstance(speaker, FRRSpeaker):
            speaker.run(frr_commands(before, new))
        else:
            speaker.run(gobgp_commands(before, new))

    def apply(self, wanted: Mapping[str, Speaker | None]) -> None:
        """Make each node's daemons do what ``wanted`` says (no waiting for the router): a
        speaker that stops, or hands the node to the other daemon, is deconfigured first."""
        with self._lock:
            for node in self.lab_nodes:
                old, new = self.applied.get(node), wanted.get(node)
                if old == new:
                    continue
                if old is not None and (new is None or (old.stack, old.local_asn) != (
                        new.stack, new.local_asn)):
                    self.configure(node, old, None)
                    self.applied[node] = old = None
                if new is not None:
                    self.configure(node, old, new)
                self.applied[node] = new
            for daemon in self.daemons():
                daemon.check()

    def wait_shows(self, wanted: Mapping[str, Speaker | None],
                   timeout: float = SYNC_TIMEOUT) -> None:
        """Return once the router shows ``wanted`` (raises after ``timeout`` seconds)."""
        deadline = time.monotonic() + timeout
        while not self.shows(wanted):
            for daemon in self.daemons():
                daemon.check()
            if time.monotonic() > deadline:
                raise BGPWireError(
                    f"the router does not show what the speakers were told: sessions"
                    f" {self.sessions()}, routes {self.table()}, wanted"
                    f" {sorted(peering(wanted))} and {expected_table(wanted)}")
            time.sleep(0.03)


# =========================================================================== following the lab


class _Background:
    """A loop in a daemon thread of its own: :meth:`_loop` runs until :meth:`stop`; what it
    raises is kept and raised again by :meth:`check` (and :meth:`stop`)."""

    what = "a background thread"

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._guarded, name=self.what, daemon=True)

    def _loop(self) -> None:
        raise NotImplementedError

    def _guarded(self) -> None:
        try:
            self._loop()
        except BaseException as error:  # re-raised by check / stop
            self._error = error

    def _start(self) -> None:
        self._thread.start()

    def check(self) -> None:
        """Raise what stopped the loop, if anything did."""
        if self._error is not None:
            raise BGPWireError(f"{self.what} failed: {self._error!r}") from self._error

    def _halt(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=30)
        self.check()


class BGPFollower(_Background):
    """Keeps the wire's daemons doing what the lab's BGP view says (``view`` returns it:
    :func:`wanted_speakers` over ``Controllers.bgp_sessions``), one change at a time: what goes
    goes first (:func:`break_step`), and the router must show it before what comes is added;
    then the router must show the new state. :attr:`history` keeps every state followed
    (:class:`Target`), which :func:`allowed_next_hops` reads."""

    what = "the BGP follower"

    def __init__(self, wire: BGPWire, view: Callable[[], Wanted], *, poll: float = 0.02) -> None:
        super().__init__()
        self.wire = wire
        self._view = view
        self.poll = poll
        self.history: list[Target] = []
        self.confirmed: Wanted | None = None

    def start(self) -> BGPFollower:
        """Follow in a background thread."""
        self._start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            wanted = self._view()
            if wanted != self.confirmed:
                self._follow(wanted)
            self._stop.wait(self.poll)

    def _follow(self, wanted: Wanted) -> None:
        seen = time.monotonic()
        self.history.append(Target(seen, expected_table(wanted), peering(wanted)))
        current = self.confirmed if self.confirmed is not None else dict(self.wire.applied)
        between = break_step(current, wanted)
        if between != current:
            self.wire.apply(between)
            self.wire.wait_shows(between)
        self.wire.apply(wanted)
        self.wire.wait_shows(wanted)
        self.history[-1] = Target(seen, expected_table(wanted), peering(wanted),
                                  time.monotonic())
        self.confirmed = wanted

    def caught_up(self) -> bool:
        """True when the router shows the lab's view as it is now."""
        self.check()
        return self.confirmed is not None and self.confirmed == self._view()

    def wait_caught_up(self, timeout: float = SYNC_TIMEOUT) -> None:
        """Return once the router shows the lab's view as it is now."""
        _wait_for(self.caught_up, "the BGP wire to catch up with the lab", timeout)

    def stop(self) -> None:
        """Stop following (the daemons keep their configuration)."""
        self._halt()


class RouterPoller(_Background):
    """Reads the router's table every ``interval`` seconds in a background thread
    (:attr:`samples`), with the lab's time of each reading when ``lab_clock`` is given."""

    what = "the router poller"

    def __init__(self, wire: BGPWire, *, interval: float = 0.15,
                 lab_clock: Callable[[], float] | None = None) -> None:
        super().__init__()
        self.wire = wire
        self.interval = interval
        self.lab_clock = lab_clock
        self.samples: list[Sample] = []

    def start(self) -> RouterPoller:
        """Poll in a background thread."""
        self._start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            lab = self.lab_clock() if self.lab_clock else None
            table = self.wire.table()
            self.samples.append(Sample(started, time.monotonic(), table, lab))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> list[Sample]:
        """Stop polling; every reading taken."""
        self._halt()
        return self.samples


class LabPacer(_Background):
    """Drives a lab on a manual clock at ``rate`` lab seconds per real second, holding the
    lab's time while ``hold()`` is true (the wire has not caught up with it), so that the lab
    never runs ahead of what the real daemons show: each step is at most ``step`` lab seconds,
    and ``hold`` is asked after every one."""

    what = "the lab pacer"

    def __init__(self, controllers: Controllers, *, rate: float, hold: Callable[[], bool],
                 step: float = 0.1, tick: float = 0.01) -> None:
        super().__init__()
        self.controllers = controllers
        self.rate = rate
        self.hold = hold
        self.step = step
        self.tick = tick
        self.held = 0.0
        """Real seconds (about) the lab's time stood still for the wire."""

    def start(self) -> LabPacer:
        """Pace in a background thread."""
        self._start()
        return self

    def _loop(self) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            self._stop.wait(self.tick)
            now = time.monotonic()
            budget = (now - last) * self.rate
            last = now
            while budget > 0 and not self._stop.is_set():
                if self.hold():
                    self.controllers.run_until_idle()
                    self.held += self.tick
                    break
                moved = min(self.step, budget)
                self.controllers.advance(moved)
                budget -= moved

    def sleep(self, lab_seconds: float) -> None:
        """What a client waiting on the paced lab does: real time passes (the lab's
        ``lab_seconds`` at the pacing rate)."""
        self.check()
        time.sleep(lab_seconds / self.rate)

    def wait(self, lab_seconds: float, timeout: float = 120.0) -> None:
        """Return once ``lab_seconds`` of lab time have passed."""
        target = self.controllers.now() + lab_seconds

        def passed() -> bool:
            self.check()
            return self.controllers.now() >= target

        _wait_for(passed, f"{lab_seconds} s of lab time", timeout, poll=0.01)

    def stop(self) -> None:
        """Stop pacing."""
        self._halt()


def lab_view(controllers: Controllers, wire: BGPWire, *, router: str) -> Callable[[], Wanted]:
    """The follower's view of a lab: :func:`wanted_speakers` over its sessions to ``router``."""
    def view() -> Wanted:
        return wanted_speakers(controllers.bgp_sessions(), wire.lab_nodes, router=router,
                               router_asn=wire.router_asn, node_ips=wire.node_ips)
    return view


def dump_samples(samples: Sequence[Sample], path: Path) -> None:
    """Write the readings as JSON lines (for a person looking at a failure)."""
    with path.open("w") as handle:
        for sample in samples:
            handle.write(json.dumps({
                "started": sample.started, "ended": sample.ended, "lab": sample.lab_time,
                "table": {p: sorted(n) for p, n in sample.table.items()}}) + "\n")


__all__ = [
    "CILIUM", "METALLB", "OUTBOUND_MAP", "ROUTER_IP", "BGPFollower", "BGPWire", "BGPWireError",
    "LabPacer", "RouterPoller", "RouterRoute", "Sample", "ShortSpan", "Speaker", "Target",
    "WireRoute", "allowed_next_hops", "attribute_list", "bird_config", "break_step",
    "dump_samples", "expected_table", "frr_commands", "frr_config", "gobgp_commands",
    "gobgpd_config", "lab_view", "longest_short_span", "parse_protocols", "parse_routes",
    "peering", "sample_problems", "session_prefix", "short_spans", "wanted_speakers",
    "why_no_bgp_wire",
]
