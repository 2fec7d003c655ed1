"""Address math for MetalLB and Cilium pools (standard library ``ipaddress``).

MetalLB [M2]: an address is a CIDR (``10.0.0.0/24``, a single address is ``/32``) or an
inclusive range ``a-b``; a bare IP is invalid; every address of a CIDR is allocatable unless
``avoidBuggyIPs`` excludes IPv4 addresses ending in .0 or .255.

Cilium [C1]: a block is ``{cidr}`` or ``{start, stop}``; ``allowFirstLastIPs: "No"`` reserves the
first and last address of each ``cidr`` block except /31, /32, /127, /128; ranges are never
trimmed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class AddressError(ValueError):
    """An address string MetalLB would refuse; the message says why."""


@dataclass(frozen=True, order=True)
class AddressRange:
    """An inclusive range of addresses of one family."""

    first: IPAddress
    last: IPAddress

    @property
    def version(self) -> int:
        return self.first.version

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return ip.version == self.version and int(self.first) <= int(ip) <= int(self.last)

    def overlaps(self, other: AddressRange) -> bool:
        """True when both ranges share at least one address."""
        return (
            self.version == other.version
            and int(self.first) <= int(other.last)
            and int(other.first) <= int(self.last)
        )

    def networks(self) -> list[IPNetwork]:
        """The minimal list of CIDRs covering exactly this range."""
        return list(ipaddress.summarize_address_range(self.first, self.last))  # type: ignore[type-var,arg-type,unused-ignore]

    def __str__(self) -> str:
        return f"{self.first}-{self.last}"


@dataclass(frozen=True)
class MetalLBAddress:
    """One entry of an IPAddressPool's ``spec.addresses``, parsed."""

    text: str
    range: AddressRange
    is_cidr: bool


def parse_ip(text: str) -> IPAddress:
    """Parse one IP address, raising AddressError with a readable reason."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise AddressError(f"{text.strip()!r} is not an IP address") from None


def parse_metallb_address(text: Any) -> MetalLBAddress:
    """Parse a MetalLB pool address as ``ParseCIDR`` does [M2]."""
    if not isinstance(text, str):
        raise AddressError(f"{text!r} is not a string (expected a CIDR or a range a-b)")
    raw = text.strip()
    if "-" in raw:
        start_text, _, end_text = raw.partition("-")
        start, end = parse_ip(start_text), parse_ip(end_text)
        if start.version != end.version:
            raise AddressError(f"{raw!r} mixes IPv4 and IPv6")
        if int(start) > int(end):
            raise AddressError(f"{raw!r} is reversed: {start} is after {end}")
        return MetalLBAddress(raw, AddressRange(start, end), is_cidr=False)
    if "/" not in raw:
        hint = "/32" if ":" not in raw else "/128"
        raise AddressError(
            f"{raw!r} is a bare IP; MetalLB needs a CIDR or a range (write {raw}{hint})"
        )
    try:
        network = ipaddress.ip_network(raw, strict=False)
    except ValueError:
        raise AddressError(f"{raw!r} is not a valid CIDR") from None
    return MetalLBAddress(
        raw,
        AddressRange(network.network_address, network.broadcast_address),
        is_cidr=True,
    )


def is_buggy(ip: IPAddress) -> bool:
    """An IPv4 address MetalLB skips with ``avoidBuggyIPs`` (last octet 0 or 255)."""
    return ip.version == 4 and int(ip) & 0xFF in (0x00, 0xFF)


def split_avoiding_buggy(rng: AddressRange) -> list[AddressRange]:
    """The sub-ranges of an IPv4 range with every .0 and .255 address removed."""
    if rng.version != 4:
        return [rng]
    out: list[AddressRange] = []
    lo, hi = int(rng.first), int(rng.last)
    base = lo & ~0xFF
    while base <= hi:
        start = max(lo, base + 1)
        stop = min(hi, base + 254)
        if start <= stop:
            out.append(
                AddressRange(ipaddress.IPv4Address(start), ipaddress.IPv4Address(stop))
            )
        base += 256
    return out


def merge_ranges(ranges: Iterable[AddressRange]) -> list[AddressRange]:
    """Sort and merge overlapping or adjacent ranges (per family)."""
    ordered = sorted(ranges, key=lambda r: (r.version, int(r.first), int(r.last)))
    out: list[AddressRange] = []
    for rng in ordered:
        if out and out[-1].version == rng.version and int(rng.first) <= int(out[-1].last) + 1:
            if int(rng.last) > int(out[-1].last):
                out[-1] = AddressRange(out[-1].first, rng.last)
        else:
            out.append(rng)
    return out


def metallb_allocatable(addresses: Iterable[MetalLBAddress], avoid_buggy_ips: bool) -> list[
    AddressRange
]:
    """The addresses MetalLB can hand out from a pool, as merged ranges [M2]."""
    ranges: list[AddressRange] = []
    for address in addresses:
        ranges.extend(
            split_avoiding_buggy(address.range) if avoid_buggy_ips else [address.range]
        )
    return merge_ranges(ranges)


def cilium_block_range(block: dict[str, Any], allow_first_last: bool) -> list[AddressRange]:
    """The addresses LB-IPAM can hand out from one pool block [C1]."""
    if "cidr" in block:
        network = ipaddress.ip_network(str(block["cidr"]), strict=False)
        first, last = network.network_address, network.broadcast_address
        tiny = network.max_prefixlen - network.prefixlen <= 1
        if not allow_first_last and not tiny:
            first, last = first + 1, last - 1
        return [AddressRange(first, last)]
    start = ipaddress.ip_address(str(block["start"]))
    stop = ipaddress.ip_address(str(block.get("stop") or block["start"]))
    return [AddressRange(start, stop)]


def cilium_allocatable(spec: dict[str, Any]) -> list[AddressRange]:
    """The addresses a CiliumLoadBalancerIPPool spec can hand out, as merged ranges [C1]."""
    allow = spec.get("allowFirstLastIPs", "Yes") != "No"
    ranges: list[AddressRange] = []
    for block in spec.get("blocks") or []:
        ranges.extend(cilium_block_range(block, allow))
    return merge_ranges(ranges)


def iter_addresses(ranges: Iterable[AddressRange]) -> Iterator[IPAddress]:
    """Every address of the given ranges (for tests on small sets)."""
    for rng in ranges:
        for value in range(int(rng.first), int(rng.last) + 1):
            yield ipaddress.ip_address(value)


class RangeIndex:
    """Which value owns an address, for many disjoint ranges (binary search, not a scan)."""

    def __init__(self, entries: Iterable[tuple[AddressRange, str]]) -> None:
        ordered = sorted(entries, key=lambda e: (e[0].version, int(e[0].first)))
        self._keys = [(rng.version, int(rng.first)) for rng, _ in ordered]
        self._entries = ordered

    def find(self, ip: IPAddress) -> str | None:
        """The value whose range holds ``ip``, or None."""
        import bisect

        position = bisect.bisect_right(self._keys, (ip.version, int(ip))) - 1
        if position < 0:
            return None
        rng, value = self._entries[position]
        return value if ip in rng else None
