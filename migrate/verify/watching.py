"""``migrate verify --arp --watch SECONDS``: the wire followed over time.

An operator runs it in a second terminal while ``migrate apply --stage l2-cutover`` (or a
failover) runs in the first. ``follow`` turns the rounds of ``arp.watch`` into the events a
person reads as they happen: an IP answered by a MAC (and its node), gone silent, answered by
two MACs at once (I2 broken), announced by a gratuitous ARP. ``WatchReport`` sums them up: per
IP the longest silence, the moves from one MAC to another and the rounds with two MACs.
Standard library only, as the prober.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping, Sequence
from ipaddress import IPv4Address
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from migrate.verify.arp import Observation, format_mac, parse_mac, probe, watch

if TYPE_CHECKING:
    from migrate.kube import Kube
    from migrate.plan.model import Plan

EventKind = Literal["answered", "silent", "conflict", "gratuitous"]
DEFAULT_INTERVAL = 0.2
"""Seconds per round: each round asks every IP once and listens until the next."""


class WireEvent(NamedTuple):
    """Something that changed on the wire for one IP."""

    at: float
    """Epoch seconds: the start of the round that saw it, or when the gratuitous ARP came."""
    ip: str
    kind: EventKind
    macs: tuple[str, ...]
    nodes: tuple[str, ...] = ()
    silent_for: float | None = None
    """For ``answered`` after a silence: how long nobody answered."""
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        """One JSON line of ``migrate verify --watch -o json``."""
        return {"at": round(self.at, 3), "ip": self.ip, "event": self.kind,
                "macs": list(self.macs), "nodes": list(self.nodes),
                "silentFor": None if self.silent_for is None else round(self.silent_for, 3),
                "detail": self.detail}


class IpHistory:
    """What one IP did while watched."""

    def __init__(self) -> None:
        self.macs: tuple[str, ...] | None = None
        """The MACs of the last round (None before the first)."""
        self.silent_since: float | None = None
        self.longest_silence = 0.0
        self.last_single: tuple[str, ...] | None = None
        """The last MAC that answered alone (moves are counted between those)."""
        self.moves = 0
        self.conflict_rounds = 0


class WatchReport:
    """The sum of a watch: per IP its history, and what breaks the promise (``problems``)."""

    def __init__(self, interface: str, ips: Sequence[str]) -> None:
        self.interface = interface
        self.ips = {ip: IpHistory() for ip in ips}
        self.rounds = 0
        self.started: float | None = None
        self.ended: float | None = None

    def finish(self) -> None:
        """Count the silences still running at the end (also after a watch stopped early)."""
        for history in self.ips.values():
            if history.silent_since is not None and self.ended is not None:
                history.longest_silence = max(history.longest_silence,
                                              self.ended - history.silent_since)

    @property
    def problems(self) -> list[str]:
        """Rounds with two MACs for one IP (I2), and IPs nobody answers at the end."""
        found = []
        doubled = {ip: h.conflict_rounds for ip, h in self.ips.items() if h.conflict_rounds}
        if doubled:
            found.append(f"{len(doubled)} IP(s) answered by two MACs at once in some round: "
                         + ", ".join(f"{ip} ({n} round(s))" for ip, n in doubled.items()))
        silent = [ip for ip, h in self.ips.items() if h.macs is not None and not h.macs]
        if silent:
            found.append(f"{len(silent)} IP(s) answered by nobody at the end: "
                         + ", ".join(silent))
        return found

    @property
    def ok(self) -> bool:
        """True when no round had two MACs for an IP and every IP is answered at the end."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """The summary line of ``-o json``: ``{"summary": {...}}``."""
        return {"summary": {
            "interface": self.interface,
            "rounds": self.rounds,
            "seconds": round((self.ended or 0.0) - (self.started or 0.0), 3),
            "ips": {ip: {"macs": list(h.macs or ()), "moves": h.moves,
                         "longestSilence": round(h.longest_silence, 3),
                         "conflictRounds": h.conflict_rounds}
                    for ip, h in self.ips.items()},
            "problems": self.problems,
        }}


def follow(observations: Iterable[Observation], report: WatchReport,
           owners: Mapping[str, Sequence[str]] | None = None
           ) -> Generator[WireEvent, None, None]:
    """The events of successive watch rounds, recorded in ``report`` as they go.

    ``owners``: MAC → the nodes it belongs to. The first round states each IP's answer; later
    rounds yield only changes, and a gratuitous ARP each time one is seen.
    """
    owners = owners or {}

    def nodes_of(macs: Iterable[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(node for mac in macs for node in owners.get(mac, ())))

    for seen in observations:
        report.rounds += 1
        if report.started is None:
            report.started = seen.started
        report.ended = seen.ended
        answers = {str(ip): tuple(sorted(macs)) for ip, macs in seen.macs.items()}
        for ip, history in report.ips.items():
            macs = answers.get(ip, ())
            if len(macs) > 1:
                history.conflict_rounds += 1
            if macs == history.macs:
                continue
            silent_for = None
            if not macs:
                history.silent_since = seen.started
                event: EventKind = "silent"
            else:
                if history.silent_since is not None:
                    silent_for = seen.started - history.silent_since
                    history.longest_silence = max(history.longest_silence, silent_for)
                    history.silent_since = None
                event = "conflict" if len(macs) > 1 else "answered"
                if event == "answered":
                    if history.last_single is not None and history.last_single != macs:
                        history.moves += 1  # another MAC answers now, silence or not between
                    history.last_single = macs
            history.macs = macs
            yield WireEvent(seen.started, ip, event, macs, nodes_of(macs), silent_for)
        for announced in seen.gratuitous:
            if str(announced.ip) in report.ips:
                yield WireEvent(announced.at, str(announced.ip), "gratuitous", (announced.mac,),
                                nodes_of((announced.mac,)), detail=announced.style)
    report.finish()


def node_owners(interface: str, node_macs: Mapping[str, str] | None = None,
                node_ips: Mapping[str, IPv4Address] | None = None) -> dict[str, list[str]]:
    """MAC → nodes: the given ``--node-mac`` pairs, and the MACs answering for the nodes'
    InternalIPs on ``interface`` (probed once)."""
    owners: dict[str, list[str]] = {}
    addresses = dict(node_ips or {})
    if addresses:
        answers = {result.ip: result.macs
                   for result in probe(interface, list(addresses.values()))}
        for node, address in addresses.items():
            for mac in answers.get(address, ()):
                owners.setdefault(mac, []).append(node)
    for node, mac in (node_macs or {}).items():
        owners.setdefault(format_mac(parse_mac(mac)), []).append(node)
    return owners


def watch_wire(interface: str, targets: Sequence[IPv4Address], seconds: float, *,
               interval: float = DEFAULT_INTERVAL,
               owners: Mapping[str, Sequence[str]] | None = None
               ) -> tuple[WatchReport, Generator[WireEvent, None, None]]:
    """Watch ``targets`` on ``interface`` for ``seconds``: the report, and the events to
    iterate (the report is complete once they are exhausted, or ``finish`` after a stop)."""
    report = WatchReport(interface, [str(ip) for ip in targets])
    rounds = watch(interface, targets, seconds, interval)
    return report, follow(rounds, report, owners)


def start_watch(kube: Kube | None, plan: Plan | None, interface: str, seconds: float, *,
                ip_specs: Sequence[str] = (), node_macs: Mapping[str, str] | None = None
                ) -> tuple[WatchReport, Generator[WireEvent, None, None]]:
    """``migrate verify --arp --watch``: the IPs of ``ip_specs`` (else the plan's IPv4 ones),
    their MACs named after the nodes (``node_macs``, and the nodes' InternalIPs probed when
    there is a cluster), watched as ``watch_wire`` does."""
    from migrate.verify.announcers import ipv4_targets
    from migrate.verify.targets import parse_targets

    if ip_specs:
        targets = parse_targets(ip_specs)
    elif plan is not None:
        targets, _ = ipv4_targets(ip for ips in plan.expected_ips.values() for ip in ips)
    else:
        raise ValueError("give ip_specs or a plan")
    node_ips: Mapping[str, IPv4Address] = {}
    if kube is not None:
        from migrate.verify.api import node_internal_ips

        node_ips = node_internal_ips(kube)
    return watch_wire(interface, targets, seconds,
                      owners=node_owners(interface, node_macs, node_ips))
