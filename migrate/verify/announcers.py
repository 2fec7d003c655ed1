"""ARP answers held to the API's expected announcers (invariant I2), and the IPv4 targets.

Kept apart from ``migrate.verify.api`` so that ``migrate verify --arp --ip`` (no cluster)
imports neither dataclasses nor the plan model: that command starts in a few milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from ipaddress import IPv4Address, ip_address
from typing import TYPE_CHECKING, Any, NamedTuple

from migrate.verify.arp import ArpEntry, ArpReport

if TYPE_CHECKING:
    from migrate.verify.api import ApiReport

__all__ = ["AnnouncerMatch", "ipv4_targets", "match_announcers"]


class AnnouncerMatch(NamedTuple):
    """One probed IP held to the node the API says should answer it."""

    entry: ArpEntry
    expected: tuple[str, ...]
    ok: bool
    detail: str

    def to_json(self) -> dict[str, Any]:
        """The ARP entry's JSON plus ``expected`` nodes and ``announcer`` ok/failed/detail."""
        return {**self.entry.to_json(), "expected": list(self.expected),
                "announcer": "ok" if self.ok else "failed", "detail": self.detail}


def match_announcers(arp: ArpReport, api: ApiReport | None) -> list[AnnouncerMatch]:
    """Per probed IP: answered by exactly one MAC, and that MAC is the expected node's (I2).

    Without an API report only the MAC count matters. A MAC of no known node fails when a node
    is expected: give the nodes' MACs with ``--node-mac`` when their InternalIPs are not on
    the probed segment.
    """
    matches = []
    for entry in arp.entries:
        expected = tuple(api.announcers.get(str(entry.ip), ())) if api is not None else ()
        if entry.status == "silent":
            matches.append(AnnouncerMatch(entry, expected, False, "nobody answers"))
        elif entry.status == "conflict":
            who = ", ".join(entry.nodes) or "unknown nodes"
            matches.append(AnnouncerMatch(entry, expected, False,
                                          f"{len(entry.macs)} MACs answer ({who})"))
        elif not expected:
            matches.append(AnnouncerMatch(entry, expected, True, "one MAC answers"))
        elif not entry.nodes:
            known = [node for node in expected if arp.node_macs.get(node)]
            what = (f"{', '.join(expected)} has MAC {', '.join(arp.node_macs[known[0]])}"
                    if known else f"the MAC of {', '.join(expected)} is unknown"
                    " (give --node-mac)")
            matches.append(AnnouncerMatch(entry, expected, False,
                                          f"answered by {entry.macs[0]}, no known node's; {what}"))
        elif set(entry.nodes) & set(expected):
            matches.append(AnnouncerMatch(entry, expected, True,
                                          f"answered by {', '.join(entry.nodes)}, as expected"))
        else:
            matches.append(AnnouncerMatch(entry, expected, False,
                                          f"answered by {', '.join(entry.nodes)}, expected"
                                          f" {', '.join(expected)}"))
    return matches


def ipv4_targets(ips: Iterable[str]) -> tuple[list[IPv4Address], list[str]]:
    """The IPv4 addresses among ``ips`` (ARP is IPv4 only), and the others, each once."""
    v4: dict[IPv4Address, None] = {}
    other: dict[str, None] = {}
    for ip in ips:
        parsed = ip_address(ip)
        if isinstance(parsed, IPv4Address):
            v4[parsed] = None
        else:
            other[ip] = None
    return sorted(v4), list(other)
