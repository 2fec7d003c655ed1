"""Parse the ``--ip`` values of ``migrate verify --arp`` into IPv4 addresses.

A value is one IPv4 address (``10.0.0.5``), a CIDR (``10.0.0.0/28``) or an inclusive range
(``10.0.0.5-10.0.0.9``); several may be given, separated by commas or repeated. The result keeps
the order of first appearance and holds each address once. Standard library only: this module
sits on the start-up path of the ARP prober.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv4Network

from migrate.errors import InputError

MAX_TARGETS = 65_536
"""The most addresses one call may expand to (a /16); more is almost certainly a typo."""

_FIELD = "--ip"


def parse_targets(
    specs: Iterable[str | IPv4Address], *, limit: int = MAX_TARGETS
) -> list[IPv4Address]:
    """Expand IP, CIDR and ``a-b`` range specs into an ordered list of distinct IPv4 addresses.

    Raises InputError for an empty, malformed, IPv6, reversed or too large spec.
    """
    seen: set[IPv4Address] = set()
    ordered: list[IPv4Address] = []
    for spec in specs:
        parts = [spec] if isinstance(spec, IPv4Address) else _split(spec)
        for part in parts:
            first, last = (part, part) if isinstance(part, IPv4Address) else _bounds(part)
            size = int(last) - int(first) + 1
            if size > limit:
                raise InputError(
                    f"{part!s} expands to {size} addresses; at most {limit} may be probed at once",
                    field=_FIELD,
                )
            for value in range(int(first), int(last) + 1):
                address = IPv4Address(value)
                if address not in seen:
                    seen.add(address)
                    ordered.append(address)
            if len(ordered) > limit:
                raise InputError(
                    f"the --ip values expand to more than {limit} addresses", field=_FIELD
                )
    if not ordered:
        raise InputError("no IP address given", field=_FIELD)
    return ordered


def _split(spec: str) -> list[str]:
    """Split one option value on commas; refuse empty pieces."""
    pieces = [piece.strip() for piece in spec.split(",")]
    if not spec.strip() or any(not piece for piece in pieces):
        raise InputError(f"empty address in {spec!r}", field=_FIELD)
    return pieces


def _bounds(part: str) -> tuple[IPv4Address, IPv4Address]:
    """First and last address of one IP, CIDR or range."""
    if "/" in part:
        network = _network(part)
        # Every address of a CIDR is probed, network and broadcast included: MetalLB hands
        # them out unless avoidBuggyIPs is set [M2].
        return network.network_address, network.broadcast_address
    if "-" in part:
        low_text, _, high_text = part.partition("-")
        low, high = _address(low_text.strip(), part), _address(high_text.strip(), part)
        if high < low:
            raise InputError(
                f"range {part!r} is reversed: {low} comes after {high}; write {high}-{low}",
                field=_FIELD,
            )
        return low, high
    address = _address(part, part)
    return address, address


def _network(part: str) -> IPv4Network:
    """Parse a CIDR, naming the problem (IPv6, host bits set, bad prefix)."""
    try:
        network = ipaddress.ip_network(part, strict=True)
    except ValueError as error:
        try:
            loose = ipaddress.ip_network(part, strict=False)
        except ValueError:
            raise InputError(f"{part!r} is not an IPv4 CIDR: {error}", field=_FIELD) from None
        if isinstance(loose, IPv4Network):
            raise InputError(
                f"{part!r} has host bits set; did you mean {loose}?", field=_FIELD
            ) from None
        raise _ipv6(part) from None
    if not isinstance(network, IPv4Network):
        raise _ipv6(part)
    return network


def _address(text: str, part: str) -> IPv4Address:
    """Parse one IPv4 address of ``part``."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise InputError(
            f"{part!r} is not an IPv4 address, CIDR or range a-b", field=_FIELD
        ) from None
    if not isinstance(address, IPv4Address):
        raise _ipv6(part)
    return address


def _ipv6(part: str) -> InputError:
    return InputError(
        f"{part!r} is IPv6; ARP is IPv4 only (IPv6 uses NDP, which this check does not probe)",
        field=_FIELD,
    )
