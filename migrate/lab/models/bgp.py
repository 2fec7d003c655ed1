"""BGP in the lab: the upstream routers the nodes peer with, the sessions MetalLB's speakers and
Cilium's agents open to them, and what each router learns (the view and the record a test reads).

The routers stand for the ones a MetalLB BGP cluster already peers with: one per BGPPeer
address of the snapshot, configured as MetalLB used them (its AS, the AS it expects from the
nodes, port, TCP MD5 password). A speaker's session to a router comes up after the
``bgp_connect`` delay when the router accepts it (RFC 4271 §8: TCP, OPEN, KEEPALIVE), else it
stays ``active`` and tries again after its connect-retry time:

- no router at that address, another port, or another TCP MD5 password (RFC 2385: segments
  with a wrong or missing signature are dropped): no connection;
- another AS than the router expects, or a router AS other than the one the speaker expects
  (``peerASN`` 0: any): the OPEN is refused (NOTIFICATION, OPEN Message Error);
- a session from the same source address already Established: the new connection is closed
  (RFC 4271 §6.8, "collision with existing BGP connection that is in the Established state
  causes closing of the newly created connection"). The router keeps one session per
  neighbour address; the record keeps every such collision (:class:`Collision`).

A router's routes per prefix come from its Established sessions: the next hop is the node the
session comes from. A session that ends withdraws them at once, except when it ends without a
NOTIFICATION (the speaker's process killed) and graceful restart was negotiated: the router
then keeps them, stale, for the restart time (RFC 4724 §4.2) or until the same neighbour is back.

:class:`BGPSession` and :class:`BGPNextHops` are the lab's BGP view (``Controllers.bgp_sessions``
and ``Controllers.bgp_announcements``), :class:`BGPRecord` its history (``Controllers.bgp_record``:
every change of a prefix's next hops at each router, and every collision).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migrate.lab.runtime import Timer

if TYPE_CHECKING:
    from migrate.lab.models import Runtime

Obj = dict[str, Any]
STACKS = ("metallb", "cilium")
ESTABLISHED = "established"
ACTIVE = "active"
CONNECT = "connect"
IDLE = "idle"
DEFAULT_PORT = 179
DEFAULT_CONNECT_RETRY = 120.0
"""Seconds before a failed connection is tried again: FRR's and Cilium's default connect-retry
(CiliumBGPPeerConfig ``timers.connectRetryTimeSeconds``)."""
DEFAULT_RESTART_TIME = 120.0


# --------------------------------------------------------------------------- the view


@dataclass(frozen=True)
class BGPRoute:
    """One prefix a speaker advertises to one peer, with its path attributes."""

    prefix: str
    """``203.0.113.0/24`` (aggregated) or ``203.0.113.5/32``."""
    services: tuple[str, ...] = ()
    """The ``namespace/name`` Services whose IPs it carries."""
    communities: tuple[str, ...] = ()
    """Standard communities (``64512:10``) and well-known ones (``no-export``), sorted."""
    large_communities: tuple[str, ...] = ()
    """Large communities (``64512:1:2``), sorted."""
    local_pref: int | None = None
    """LOCAL_PREF (sent to iBGP peers only; None when not set or not sent)."""

    @property
    def length(self) -> int:
        """The prefix length."""
        return int(self.prefix.rsplit("/", 1)[1])

    @property
    def family(self) -> str:
        """``ipv4`` or ``ipv6``."""
        return "ipv6" if ":" in self.prefix else "ipv4"


@dataclass(frozen=True)
class BGPSession:
    """One BGP session a node's speaker (MetalLB's or Cilium's) is configured to run, as the lab
    sees it now: the peer, how it connects, its state, and what it advertises.

    A password is never here: only where it lives (``password_secret``, a Secret's
    ``namespace/name`` with key ``password``; ``password_inline`` for a plain-text MetalLB
    ``spec.password``)."""

    node: str
    stack: str
    """``metallb`` or ``cilium``."""
    peer: str
    """MetalLB's BGPPeer name, or the peer's name in the CiliumBGPNodeConfig."""
    peer_address: str
    peer_port: int
    peer_asn: int
    """The AS the speaker expects from the router; 0: whatever the router sends."""
    local_asn: int
    source_address: str | None
    """The node address the session comes from (None: the node has none the lab knows)."""
    router_id: str | None
    password_secret: str | None
    password_inline: bool
    ebgp_multihop: int | None
    """TTL for eBGP multihop; None: directly connected (TTL 1)."""
    hold_time: float
    keepalive_time: float
    connect_retry: float
    graceful_restart: bool
    state: str
    """``established``, ``active`` (connecting, refused, or no router), ``idle`` (OPEN refused)."""
    established_since: float | None
    advertised: tuple[BGPRoute, ...]
    """What the speaker sends this peer now (empty unless Established)."""
    instance: str = ""
    """Cilium's BGP instance name (empty for MetalLB)."""
    routes: tuple[BGPRoute, ...] = ()
    """What the speaker is configured to send this peer, whatever the session's state (what a
    real daemon standing in for it would be given)."""

    @property
    def established(self) -> bool:
        """True when the session is up."""
        return self.state == ESTABLISHED


@dataclass(frozen=True)
class BGPNextHops:
    """What the routers hold for one prefix now: the nodes that are next hops, per stack."""

    prefix: str
    metallb_nodes: tuple[str, ...] = ()
    cilium_nodes: tuple[str, ...] = ()
    routers: tuple[str, ...] = ()
    """The routers that have a route for it."""
    stale_nodes: tuple[str, ...] = ()
    """Next hops kept through a graceful restart (their session is down)."""

    @property
    def nodes(self) -> frozenset[str]:
        """Every next-hop node, whichever stack advertises from it."""
        return frozenset(self.metallb_nodes) | frozenset(self.cilium_nodes)


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class NextHopChange:
    """The next hops one router has for one prefix from ``time`` on."""

    time: float
    router: str
    prefix: str
    metallb: tuple[str, ...]
    cilium: tuple[str, ...]

    @property
    def nodes(self) -> frozenset[str]:
        """Every next-hop node."""
        return frozenset(self.metallb) | frozenset(self.cilium)


@dataclass(frozen=True)
class PrefixSpan:
    """A stretch of time for one prefix at one router (``end`` None: still going)."""

    router: str
    prefix: str
    start: float
    end: float | None
    nodes: tuple[str, ...] = ()

    def length(self, until: float) -> float:
        """Its length, an open span counted up to ``until``."""
        return (self.end if self.end is not None else until) - self.start


@dataclass(frozen=True)
class Collision:
    """A speaker tried to peer with a router from an address that already has an Established
    session there (RFC 4271 §6.8: the router closed the new connection)."""

    time: float
    router: str
    source_address: str
    node: str
    held_by: str
    """The stack whose session the router kept."""
    refused: str
    """The stack whose connection was closed."""


class BGPRecord:
    """Every change of a prefix's next hops at each router, and every collision, over a run."""

    def __init__(self) -> None:
        self.changes: list[NextHopChange] = []
        self.collisions: list[Collision] = []

    def note(self, change: NextHopChange) -> None:
        """A router's next hops for a prefix changed."""
        self.changes.append(change)

    def _by_key(self) -> dict[tuple[str, str], list[NextHopChange]]:
        out: dict[tuple[str, str], list[NextHopChange]] = {}
        for change in self.changes:
            out.setdefault((change.router, change.prefix), []).append(change)
        return out

    def prefixes(self) -> list[str]:
        """Every prefix that ever had a route."""
        return sorted({c.prefix for c in self.changes})

    def current(self) -> dict[tuple[str, str], NextHopChange]:
        """(router, prefix) -> its last change."""
        return {key: changes[-1] for key, changes in self._by_key().items()}

    def no_next_hop(self, prefix: str | None = None, router: str | None = None) -> list[
            PrefixSpan]:
        """Every stretch, after a prefix was first routed at a router, in which that router had
        no next hop for it (the prefix was withdrawn there)."""
        spans = []
        for (each_router, each_prefix), changes in self._by_key().items():
            if (prefix is not None and each_prefix != prefix) or (
                    router is not None and each_router != router):
                continue
            for index, change in enumerate(changes):
                if change.nodes:
                    continue
                following = changes[index + 1] if index + 1 < len(changes) else None
                spans.append(PrefixSpan(each_router, each_prefix, change.time,
                                        following.time if following else None))
        return sorted(spans, key=lambda s: (s.start, s.router, s.prefix))

    def fewer_next_hops(self, count: int, prefix: str | None = None) -> list[PrefixSpan]:
        """Every stretch in which a router had fewer than ``count`` next hops for a prefix it
        had routed before (the longest one is how long the network ran short)."""
        spans = []
        for (router, each_prefix), changes in self._by_key().items():
            if prefix is not None and each_prefix != prefix:
                continue
            for index, change in enumerate(changes):
                if len(change.nodes) >= count:
                    continue
                following = changes[index + 1] if index + 1 < len(changes) else None
                spans.append(PrefixSpan(router, each_prefix, change.time,
                                        following.time if following else None,
                                        tuple(sorted(change.nodes))))
        return sorted(spans, key=lambda s: (s.start, s.router, s.prefix))

    def both_stacks(self) -> list[PrefixSpan]:
        """Every stretch in which a router had next hops from both stacks for one prefix (fine
        for ECMP, recorded for the reports)."""
        spans = []
        for (router, each_prefix), changes in self._by_key().items():
            for index, change in enumerate(changes):
                if change.metallb and change.cilium:
                    following = changes[index + 1] if index + 1 < len(changes) else None
                    spans.append(PrefixSpan(router, each_prefix, change.time,
                                            following.time if following else None,
                                            tuple(sorted(change.nodes))))
        return spans


# --------------------------------------------------------------------------- sessions


def password_digest(value: str | None) -> str | None:
    """What the lab compares TCP MD5 passwords by (never the password itself); None for none."""
    if not value:
        return None
    return hashlib.sha256(value.encode()).hexdigest()[:16]


def secret_password(secret: Obj | None) -> str | None:
    """The ``password`` key of a Secret (``data`` base64, or ``stringData``); None when absent."""
    if not secret:
        return None
    string_data = secret.get("stringData") or {}
    if isinstance(string_data, dict) and string_data.get("password"):
        return str(string_data["password"])
    data = secret.get("data") or {}
    encoded = data.get("password") if isinstance(data, dict) else None
    if not encoded:
        return None
    try:
        return base64.b64decode(str(encoded)).decode()
    except (ValueError, UnicodeDecodeError):
        return None


@dataclass(frozen=True)
class SessionSpec:
    """What a speaker asks for: one session to one peer (everything a router checks, and what
    the view shows)."""

    node: str
    stack: str
    peer: str
    peer_address: str
    local_asn: int
    peer_asn: int = 0
    peer_port: int = DEFAULT_PORT
    source_address: str | None = None
    router_id: str | None = None
    password_secret: str | None = None
    password_inline: bool = False
    password: str | None = field(default=None, repr=False, compare=True)
    """A digest of the password (:func:`password_digest`), never the password."""
    ebgp_multihop: int | None = None
    hold_time: float = 90.0
    keepalive_time: float = 30.0
    connect_retry: float = DEFAULT_CONNECT_RETRY
    graceful_restart: bool = False
    restart_time: float = DEFAULT_RESTART_TIME
    instance: str = ""

    @property
    def key(self) -> tuple[str, str, str, str]:
        """(node, stack, instance, peer): one session of one speaker."""
        return self.node, self.stack, self.instance, self.peer


@dataclass
class Router:
    """An upstream router, configured as MetalLB's peers used it."""

    address: str
    asn: int | None = None
    """Its own AS (None: not known, any is accepted)."""
    remote_asns: frozenset[int] = frozenset()
    """The AS numbers it expects from the nodes (empty: any)."""
    port: int = DEFAULT_PORT
    password: str | None = None
    """Digest of the TCP MD5 password it expects (None: none)."""
    sessions: dict[str, tuple[str, str, str, str]] = field(default_factory=dict)
    """Source address -> the Established session from it."""
    rib: dict[str, dict[str, tuple[str, str, BGPRoute, bool]]] = field(default_factory=dict)
    """Prefix -> source address -> (node, stack, route, stale)."""

    def refuses(self, spec: SessionSpec) -> tuple[str, str] | None:
        """(state, why) when this router does not accept the session; None when it does."""
        if spec.peer_port != self.port:
            return ACTIVE, f"nothing answers on port {spec.peer_port} (the router listens on" \
                f" {self.port})"
        if spec.password != self.password:
            return ACTIVE, "TCP MD5 signature mismatch (RFC 2385: segments dropped)"
        if self.remote_asns and spec.local_asn not in self.remote_asns:
            return IDLE, f"OPEN refused: bad peer AS {spec.local_asn}"
        if spec.peer_asn and self.asn is not None and spec.peer_asn != self.asn:
            return IDLE, f"OPEN refused: the router is AS {self.asn}, not {spec.peer_asn}"
        return None


@dataclass
class _Session:
    spec: SessionSpec
    state: str = CONNECT
    since: float | None = None
    routes: tuple[BGPRoute, ...] = ()
    timer: Timer | None = None
    last_error: str = ""


class BGPFabric:
    """The routers, the sessions every speaker has opened to them, and the record."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.routers: dict[str, Router] = {}
        self.sessions: dict[tuple[str, str, str, str], _Session] = {}
        self.record = BGPRecord()
        self._stale: dict[tuple[str, str], Timer] = {}
        self.listeners: list[Callable[[], None]] = []
        """Called after every change of a session's state (what a status writer watches)."""

    # ----------------------------------------------------------------- routers

    def configure_routers(self, peers: Iterable[Obj], secrets: Mapping[str, Obj]) -> None:
        """One router per MetalLB BGPPeer address, as MetalLB peered with it: its AS
        (``peerASN``; unknown for ``dynamicASN``), the node AS it expects (``localASN`` or
        ``myASN``), the port, and the TCP MD5 password (``password`` or ``passwordSecret``;
        ``secrets`` by ``namespace/name``)."""
        for peer in peers:
            spec = peer.get("spec") or {}
            address = str(spec.get("peerAddress") or "")
            if not address:
                continue
            namespace = str((peer.get("metadata") or {}).get("namespace") or "")
            password = spec.get("password") or None
            ref = spec.get("passwordSecret") or {}
            if ref.get("name"):
                secret_key = f"{ref.get('namespace') or namespace}/{ref['name']}"
                password = secret_password(secrets.get(secret_key))
            local = int(spec.get("localASN") or spec.get("myASN") or 0)
            router = self.routers.get(address)
            if router is None:
                router = self.routers[address] = Router(
                    address, int(spec["peerASN"]) if spec.get("peerASN") else None,
                    frozenset(), int(spec.get("peerPort") or DEFAULT_PORT),
                    password_digest(password))
            if local:
                router.remote_asns = router.remote_asns | {local}

    def add_router(self, router: Router) -> None:
        """Put a router on the wire (tests; a scenario whose routers MetalLB does not name)."""
        self.routers[router.address] = router

    # ----------------------------------------------------------------- speakers' side

    def open(self, spec: SessionSpec) -> None:
        """A speaker configures a session (a changed spec resets the one it had)."""
        current = self.sessions.get(spec.key)
        if current is not None:
            if current.spec == spec:
                return
            self.close(spec.key, graceful=True)
        session = _Session(spec)
        self.sessions[spec.key] = session
        self._attempt_later(session, self.runtime.timing.bgp_connect.sample(self.runtime.rng))
        self._changed()

    def close(self, key: tuple[str, str, str, str], *, graceful: bool) -> None:
        """A speaker ends a session: ``graceful`` with a NOTIFICATION (deconfigured, process
        shutting down), else its process died (the TCP connection just drops)."""
        session = self.sessions.pop(key, None)
        if session is None:
            return
        if session.timer is not None:
            session.timer.cancel()
        if session.state == ESTABLISHED:
            self._down(session, graceful=graceful)
        self._changed()

    def advertise(self, key: tuple[str, str, str, str], routes: Iterable[BGPRoute]) -> None:
        """What a speaker sends on a session from now on (sent once it is Established)."""
        session = self.sessions.get(key)
        if session is None:
            return
        ordered = tuple(sorted(routes, key=lambda r: r.prefix))
        if ordered == session.routes:
            return
        old = {r.prefix: r for r in session.routes}
        session.routes = ordered
        if session.state != ESTABLISHED:
            return
        router = self.routers[session.spec.peer_address]
        source = self._source(session.spec)
        assert source is not None  # an Established session has one
        new = {r.prefix: r for r in ordered}
        for prefix in sorted(set(old) | set(new)):
            if prefix in new:
                self._install(router, prefix, source, session.spec, new[prefix])
            else:
                self._withdraw(router, prefix, source)
        self._changed()

    def state_of(self, key: tuple[str, str, str, str]) -> str | None:
        """The state of a session (None when not configured)."""
        session = self.sessions.get(key)
        return session.state if session is not None else None

    # ----------------------------------------------------------------- the FSM

    def _attempt_later(self, session: _Session, seconds: float) -> None:
        key = session.spec.key
        session.timer = self.runtime.scheduler.after(
            seconds, lambda: self._attempt(key, session),
            label=f"bgp {session.spec.node}/{session.spec.stack} -> {session.spec.peer_address}")

    def _attempt(self, key: tuple[str, str, str, str], session: _Session) -> None:
        self.runtime.processed += 1
        if self.sessions.get(key) is not session:
            return
        session.timer = None
        spec = session.spec
        router = self.routers.get(spec.peer_address)
        source = self._source(spec)
        refusal: tuple[str, str] | None
        if router is None:
            refusal = (ACTIVE, f"no router answers at {spec.peer_address}")
        elif source is None:
            refusal = (ACTIVE, f"node {spec.node} has no address to peer from")
        else:
            refusal = router.refuses(spec)
        if refusal is None and router is not None and source is not None:
            holder = router.sessions.get(source)
            held = self.sessions.get(holder) if holder is not None else None
            if held is not None and held.state == ESTABLISHED and holder != key:
                self.record.collisions.append(Collision(
                    self.runtime.now(), router.address, source, spec.node, held.spec.stack,
                    spec.stack))
                refusal = (ACTIVE, f"connection collision: {source} already has an"
                                   f" Established session ({held.spec.stack})")
        if refusal is not None:
            session.state, session.last_error = refusal
            self._attempt_later(session, spec.connect_retry)
            self._changed()
            return
        assert router is not None and source is not None
        session.state = ESTABLISHED
        session.since = self.runtime.now()
        session.last_error = ""
        router.sessions[source] = key
        self._unstale(router.address, source)
        for route in session.routes:
            self._install(router, route.prefix, source, spec, route)
        # Stale routes the restarted speaker does not send again go (RFC 4724 §4.2, End-of-RIB).
        for prefix in self._stale_prefixes(router, source):
            self._withdraw(router, prefix, source)
        self._changed()

    def _down(self, session: _Session, *, graceful: bool) -> None:
        spec = session.spec
        router = self.routers.get(spec.peer_address)
        source = self._source(spec)
        if router is None or source is None:
            return
        if router.sessions.get(source) == spec.key:
            del router.sessions[source]
        keep = spec.graceful_restart and not graceful
        for prefix in [p for p, by in router.rib.items() if source in by]:
            if keep:
                node, stack, route, _ = router.rib[prefix][source]
                router.rib[prefix][source] = (node, stack, route, True)
            else:
                self._withdraw(router, prefix, source)
        if keep:
            self._stale[(router.address, source)] = self.runtime.scheduler.after(
                spec.restart_time, lambda: self._restart_expired(router.address, source),
                label=f"bgp restart timer {router.address} {source}")

    def _restart_expired(self, address: str, source: str) -> None:
        self.runtime.processed += 1
        self._stale.pop((address, source), None)
        router = self.routers.get(address)
        if router is None:
            return
        for prefix in self._stale_prefixes(router, source):
            self._withdraw(router, prefix, source)
        self._changed()

    @staticmethod
    def _stale_prefixes(router: Router, source: str) -> list[str]:
        return [p for p, by in router.rib.items() if source in by and by[source][3]]

    def _unstale(self, address: str, source: str) -> None:
        timer = self._stale.pop((address, source), None)
        if timer is not None:
            timer.cancel()

    # ----------------------------------------------------------------- the RIB

    def _source(self, spec: SessionSpec) -> str | None:
        return spec.source_address

    def _install(self, router: Router, prefix: str, source: str, spec: SessionSpec,
                 route: BGPRoute) -> None:
        before = self._hops(router, prefix)
        router.rib.setdefault(prefix, {})[source] = (spec.node, spec.stack, route, False)
        self._note(router, prefix, before)

    def _withdraw(self, router: Router, prefix: str, source: str) -> None:
        by = router.rib.get(prefix)
        if not by or source not in by:
            return
        before = self._hops(router, prefix)
        del by[source]
        self._note(router, prefix, before)

    @staticmethod
    def _hops(router: Router, prefix: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
        by = router.rib.get(prefix) or {}
        metallb = tuple(sorted({n for n, s, _, _ in by.values() if s == "metallb"}))
        cilium = tuple(sorted({n for n, s, _, _ in by.values() if s == "cilium"}))
        return metallb, cilium

    def _note(self, router: Router, prefix: str,
              before: tuple[tuple[str, ...], tuple[str, ...]]) -> None:
        after = self._hops(router, prefix)
        if after != before:
            self.record.note(NextHopChange(self.runtime.now(), router.address, prefix, *after))

    def _changed(self) -> None:
        for listener in list(self.listeners):
            listener()

    # ----------------------------------------------------------------- views

    def view(self) -> list[BGPSession]:
        """Every configured session, by node, stack and peer."""
        out = []
        for key in sorted(self.sessions):
            session = self.sessions[key]
            spec = session.spec
            out.append(BGPSession(
                node=spec.node, stack=spec.stack, peer=spec.peer,
                peer_address=spec.peer_address, peer_port=spec.peer_port,
                peer_asn=spec.peer_asn, local_asn=spec.local_asn,
                source_address=spec.source_address, router_id=spec.router_id,
                password_secret=spec.password_secret, password_inline=spec.password_inline,
                ebgp_multihop=spec.ebgp_multihop, hold_time=spec.hold_time,
                keepalive_time=spec.keepalive_time, connect_retry=spec.connect_retry,
                graceful_restart=spec.graceful_restart, state=session.state,
                established_since=session.since if session.state == ESTABLISHED else None,
                advertised=session.routes if session.state == ESTABLISHED else (),
                instance=spec.instance, routes=session.routes,
            ))
        return out

    def next_hops(self) -> dict[str, BGPNextHops]:
        """Per prefix some router has a route for: its next hops, over every router."""
        merged: dict[str, dict[str, set[str]]] = {}
        for router in self.routers.values():
            for prefix, by in router.rib.items():
                if not by:
                    continue
                slot = merged.setdefault(prefix, {"metallb": set(), "cilium": set(),
                                                  "routers": set(), "stale": set()})
                slot["routers"].add(router.address)
                for node, stack, _, stale in by.values():
                    slot[stack].add(node)
                    if stale:
                        slot["stale"].add(node)
        return {prefix: BGPNextHops(prefix, tuple(sorted(s["metallb"])),
                                    tuple(sorted(s["cilium"])), tuple(sorted(s["routers"])),
                                    tuple(sorted(s["stale"])))
                for prefix, s in sorted(merged.items())}

    def since_of(self, key: tuple[str, str, str, str]) -> float | None:
        """When a session came up (None: not Established)."""
        session = self.sessions.get(key)
        return session.since if session is not None and session.state == ESTABLISHED else None

    def error_of(self, key: tuple[str, str, str, str]) -> str:
        """Why a session is not Established ("" when it is, or is not configured)."""
        session = self.sessions.get(key)
        return session.last_error if session is not None else ""

