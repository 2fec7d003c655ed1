"""``--ip`` values: single IPs, CIDRs and ranges become one ordered list without repeats."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from hypothesis import given
from hypothesis import strategies as st

from migrate.errors import InputError
from migrate.verify.targets import MAX_TARGETS, parse_targets


def addresses(*texts: str) -> list[IPv4Address]:
    return [IPv4Address(text) for text in texts]


def test_single_ip() -> None:
    assert parse_targets(["192.0.2.10"]) == addresses("192.0.2.10")


def test_cidr_includes_network_and_broadcast_addresses() -> None:
    # MetalLB hands out .0 and .255 of a CIDR pool unless avoidBuggyIPs is set [M2].
    assert parse_targets(["192.0.2.0/30"]) == addresses(
        "192.0.2.0", "192.0.2.1", "192.0.2.2", "192.0.2.3"
    )


def test_slash_32_is_one_address() -> None:
    assert parse_targets(["192.0.2.7/32"]) == addresses("192.0.2.7")


def test_range_is_inclusive_and_may_cross_octets() -> None:
    assert parse_targets(["192.0.2.254-192.0.3.1"]) == addresses(
        "192.0.2.254", "192.0.2.255", "192.0.3.0", "192.0.3.1"
    )


def test_spaces_around_a_range_are_accepted() -> None:
    assert parse_targets([" 192.0.2.1 - 192.0.2.2 "]) == addresses("192.0.2.1", "192.0.2.2")


def test_repeated_values_and_commas_keep_first_order_without_repeats() -> None:
    result = parse_targets(["192.0.2.5", "192.0.2.4-192.0.2.6,192.0.2.1", "192.0.2.5/32"])
    assert result == addresses("192.0.2.5", "192.0.2.4", "192.0.2.6", "192.0.2.1")


def test_address_objects_are_accepted() -> None:
    assert parse_targets([IPv4Address("192.0.2.9"), "192.0.2.9"]) == addresses("192.0.2.9")


def test_reversed_range_is_refused_with_the_fix() -> None:
    with pytest.raises(InputError) as caught:
        parse_targets(["192.0.2.9-192.0.2.1"])
    message = str(caught.value)
    assert "reversed" in message
    assert "192.0.2.1-192.0.2.9" in message
    assert "--ip" in message


@pytest.mark.parametrize("spec", ["2001:db8::1", "2001:db8::/126", "2001:db8::1-2001:db8::2"])
def test_ipv6_is_refused_because_arp_is_ipv4(spec: str) -> None:
    with pytest.raises(InputError, match="ARP is IPv4 only"):
        parse_targets([spec])


def test_cidr_with_host_bits_suggests_the_network() -> None:
    with pytest.raises(InputError, match=r"did you mean 192\.0\.2\.0/24"):
        parse_targets(["192.0.2.1/24"])


@pytest.mark.parametrize(
    "spec", ["", " ", "192.0.2", "192.0.2.300", "host.example", "192.0.2.1-", "192.0.2.0/33", ","]
)
def test_malformed_values_are_refused(spec: str) -> None:
    with pytest.raises(InputError):
        parse_targets([spec])


def test_no_value_at_all_is_refused() -> None:
    with pytest.raises(InputError, match="no IP address"):
        parse_targets([])


def test_a_slash_16_is_the_most_accepted() -> None:
    assert len(parse_targets(["10.0.0.0/16"])) == MAX_TARGETS


def test_larger_expansions_are_refused() -> None:
    with pytest.raises(InputError, match="at most 65536"):
        parse_targets(["10.0.0.0/15"])
    with pytest.raises(InputError, match="more than 65536"):
        parse_targets(["10.0.0.0/16", "10.1.0.0/32"])


def test_the_limit_can_be_lowered() -> None:
    with pytest.raises(InputError):
        parse_targets(["192.0.2.0/29"], limit=4)


@given(st.integers(0, 2**32 - 1), st.integers(0, 300))
def test_a_range_has_exactly_the_addresses_between_its_ends(start: int, extra: int) -> None:
    end = min(start + extra, 2**32 - 1)
    low, high = IPv4Address(start), IPv4Address(end)
    result = parse_targets([f"{low}-{high}"])
    assert result == [IPv4Address(value) for value in range(start, end + 1)]
