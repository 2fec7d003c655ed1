"""Property test: for random pools, the addresses Cilium can hand out are exactly MetalLB's.

Both sides are computed here by brute force from each project's documented rules, independently
of the translator's own address math: MetalLB [M2] (every address of a CIDR or range; with
avoidBuggyIPs no IPv4 address ending in .0 or .255) and Cilium [C1] (cidr blocks minus first and
last only when allowFirstLastIPs is "No" and the block is wider than /31; start/stop inclusive).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrate.sources.files import SourceDocument
from migrate.sources.snapshot import build_snapshot
from migrate.translate.translator import translate

BASE_V4 = int(ipaddress.IPv4Address("10.0.0.0"))
BASE_V6 = int(ipaddress.IPv6Address("fd00::"))


@st.composite
def entry(draw: st.DrawFn) -> str:
    """One MetalLB address: a CIDR or a range, IPv4 (mostly) or IPv6, within a small space."""
    v6 = draw(st.booleans()) and draw(st.booleans())
    base, bits = (BASE_V6, 128) if v6 else (BASE_V4, 32)
    cls = ipaddress.IPv6Address if v6 else ipaddress.IPv4Address
    if draw(st.booleans()):
        prefix = draw(st.integers(min_value=bits - 11, max_value=bits))
        size = 1 << (bits - prefix)
        start = base + draw(st.integers(min_value=0, max_value=(1 << 12) // size - 1)) * size
        return f"{cls(start)}/{prefix}"
    first = base + draw(st.integers(min_value=0, max_value=4000))
    last = first + draw(st.integers(min_value=0, max_value=700))
    return f"{cls(first)}-{cls(last)}"


def metallb_set(addresses: list[str], avoid_buggy: bool) -> set[int | tuple[int, int]]:
    out: set[Any] = set()
    for text in addresses:
        if "-" in text:
            a, b = (ipaddress.ip_address(p) for p in text.split("-"))
            values = range(int(a), int(b) + 1)
            version = a.version
        else:
            net = ipaddress.ip_network(text)
            values = range(int(net.network_address), int(net.broadcast_address) + 1)
            version = net.version
        for value in values:
            if avoid_buggy and version == 4 and value & 0xFF in (0, 255):
                continue
            out.add((version, value))
    return out


def cilium_set(spec: dict[str, Any]) -> set[Any]:
    allow = spec.get("allowFirstLastIPs") != "No"
    out: set[Any] = set()
    for block in spec["blocks"]:
        if "cidr" in block:
            net = ipaddress.ip_network(block["cidr"])
            lo, hi = int(net.network_address), int(net.broadcast_address)
            if not allow and net.max_prefixlen - net.prefixlen > 1:
                lo, hi = lo + 1, hi - 1
            version = net.version
        else:
            a = ipaddress.ip_address(block["start"])
            b = ipaddress.ip_address(block.get("stop", block["start"]))
            lo, hi, version = int(a), int(b), a.version
        out.update((version, v) for v in range(lo, hi + 1))
    return out


def _disjoint(entries: list[str]) -> list[str]:
    kept: list[str] = []
    taken: set[Any] = set()
    for text in entries:
        addresses = metallb_set([text], False)
        if addresses & taken:
            continue
        kept.append(text)
        taken |= addresses
    return kept


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    entries=st.lists(entry(), min_size=1, max_size=8),
    pool_count=st.integers(min_value=1, max_value=3),
    avoid=st.lists(st.booleans(), min_size=3, max_size=3),
    assignment=st.lists(st.integers(min_value=0, max_value=2), min_size=8, max_size=8),
)
def test_address_sets_are_equal_and_pools_never_overlap(
    entries: list[str], pool_count: int, avoid: list[bool], assignment: list[int]
) -> None:
    entries = _disjoint(entries)
    pools: dict[str, list[str]] = {}
    for index, text in enumerate(entries):
        pools.setdefault(f"pool-{assignment[index] % pool_count}", []).append(text)
    docs = [
        SourceDocument(f"gen#{i}", {
            "apiVersion": "metallb.io/v1beta1",
            "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": {"addresses": addresses, "avoidBuggyIPs": avoid[i]},
        })
        for i, (name, addresses) in enumerate(sorted(pools.items()))
    ]
    translation = translate(build_snapshot(docs))
    by_name = {pool["metadata"]["name"]: pool["spec"] for pool in translation.pools}
    assert set(by_name) == set(pools)
    seen: set[Any] = set()
    for i, (name, addresses) in enumerate(sorted(pools.items())):
        spec = by_name[name]
        assert spec["allowFirstLastIPs"] in ("Yes", "No")
        cilium = cilium_set(spec)
        assert cilium == metallb_set(addresses, avoid[i])
        assert not cilium & seen, "two Cilium pools overlap"
        seen |= cilium
