"""ARP frames, classification and the prober's front ends, without any network."""

from __future__ import annotations

import json
import socket
from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import Any

import pytest

from migrate.errors import CapabilityError, InputError
from migrate.verify import arp
from migrate.verify.arp import (
    FRAME_SIZE,
    OP_REPLY,
    OP_REQUEST,
    ArpResult,
    build_frame,
    classify,
    format_mac,
    parse_frame,
    parse_mac,
    request_frame,
    verify_arp,
)

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
IP_1 = IPv4Address("192.0.2.1").packed
IP_2 = IPv4Address("192.0.2.2").packed


def test_requests_are_broadcast_and_padded_to_the_ethernet_minimum() -> None:
    frame = request_frame(MAC_A, IP_1, IP_2)
    assert len(frame) == FRAME_SIZE == 60
    assert frame[:6] == b"\xff" * 6
    packet = parse_frame(frame)
    assert packet is not None
    assert (packet.op, packet.sender_mac, packet.sender_ip, packet.target_ip) == (
        OP_REQUEST, MAC_A, IP_1, IP_2
    )
    assert not packet.gratuitous


def test_unpadded_frames_of_other_senders_are_still_read() -> None:
    frame = request_frame(MAC_B, IP_2, IP_1)[:42]
    assert parse_frame(frame) is not None


@pytest.mark.parametrize("op", [OP_REQUEST, OP_REPLY])
def test_gratuitous_arp_is_recognised_in_request_and_reply_style(op: int) -> None:
    frame = build_frame(
        eth_destination=b"\xff" * 6, eth_source=MAC_B, op=op, sender_mac=MAC_B,
        sender_ip=IP_2, target_mac=b"\xff" * 6 if op == OP_REPLY else bytes(6), target_ip=IP_2,
    )
    packet = parse_frame(frame)
    assert packet is not None and packet.gratuitous


def test_an_rfc5227_probe_is_not_an_announcement() -> None:
    probe = parse_frame(request_frame(MAC_A, IPv4Address("0.0.0.0").packed, IP_1))
    assert probe is not None and not probe.gratuitous


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        request_frame(MAC_A, IP_1, IP_2)[:41],
        request_frame(MAC_A, IP_1, IP_2)[:12] + b"\x86\xdd" + bytes(46),  # IPv6, not ARP
        request_frame(MAC_A, IP_1, IP_2)[:20] + b"\x00\x03" + bytes(38),  # RARP opcode
    ],
)
def test_frames_that_are_not_ipv4_arp_are_ignored(frame: bytes) -> None:
    assert parse_frame(frame) is None


def test_macs_are_read_and_written_lower_case_with_colons() -> None:
    assert format_mac(parse_mac("02-00-00-00-00-0A")) == "02:00:00:00:00:0a"
    for bad in ("02:00:00:00:00", "zz:00:00:00:00:00", "0200.0000.000a", ""):
        with pytest.raises(InputError):
            parse_mac(bad)


def test_classification_by_number_of_macs() -> None:
    assert classify(()) == "silent"
    assert classify(("02:00:00:00:00:01",)) == "ok"
    assert classify(("02:00:00:00:00:01", "02:00:00:00:00:02")) == "conflict"


def test_without_cap_net_raw_the_prober_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_: Any, **__: Any) -> socket.socket:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(socket, "socket", refuse)
    with pytest.raises(CapabilityError) as caught:
        arp.probe("eth0", [IPv4Address("192.0.2.1")])
    assert "CAP_NET_RAW" in str(caught.value)
    assert "setcap cap_net_raw+ep" in str(caught.value)


class FakeWire:
    """Stands in for ``probe``: answers from a table IP -> MACs and records what was asked."""

    def __init__(self, answers: dict[str, tuple[str, ...]]) -> None:
        self.answers = answers
        self.asked: list[IPv4Address] = []

    def probe(self, interface: str, ips: Sequence[IPv4Address], **_: Any) -> list[ArpResult]:
        self.asked = list(ips)
        results = []
        for ip in ips:
            macs = self.answers.get(str(ip), ())
            results.append(ArpResult(ip, classify(macs), macs))
        return results


MAC_N1, MAC_N2 = "02:00:00:00:00:01", "02:00:00:00:00:02"


@pytest.fixture
def fake_wire(monkeypatch: pytest.MonkeyPatch) -> FakeWire:
    fake = FakeWire(
        {
            "192.0.2.10": (MAC_N1,),
            "192.0.2.11": (MAC_N1, MAC_N2),
            "198.51.100.2": (MAC_N2,),  # node n2's InternalIP
            "192.0.2.13": ("02:00:00:00:00:99",),  # nobody we know
        }
    )
    monkeypatch.setattr(arp, "probe", fake.probe)
    return fake


def test_verify_arp_names_the_nodes_behind_each_mac(fake_wire: FakeWire) -> None:
    report = verify_arp(
        "eth0",
        ["192.0.2.10-192.0.2.13"],
        node_macs={"n1": MAC_N1.upper()},
        node_ips={"n2": "198.51.100.2"},
    )
    assert IPv4Address("198.51.100.2") in fake_wire.asked  # node IPs go out in the same round
    assert report.to_json() == {
        "arp": [
            {"ip": "192.0.2.10", "status": "ok", "macs": [MAC_N1], "nodes": ["n1"]},
            {"ip": "192.0.2.11", "status": "conflict", "macs": [MAC_N1, MAC_N2],
             "nodes": ["n1", "n2"]},
            {"ip": "192.0.2.12", "status": "silent", "macs": [], "nodes": []},
            {"ip": "192.0.2.13", "status": "ok", "macs": ["02:00:00:00:00:99"], "nodes": []},
        ]
    }
    assert not report.ok
    assert report.node_macs == {"n1": (MAC_N1,), "n2": (MAC_N2,)}


def test_module_front_end_prints_json_and_exits_4_unless_all_ok(
    fake_wire: FakeWire, capsys: pytest.CaptureFixture[str]
) -> None:
    assert arp.main(["--interface", "eth0", "--ip", "192.0.2.10"]) == 0
    assert json.loads(capsys.readouterr().out)["arp"][0]["status"] == "ok"
    assert arp.main(["--interface", "eth0", "--ip", "192.0.2.10", "--ip", "192.0.2.12"]) == 4
    statuses = [entry["status"] for entry in json.loads(capsys.readouterr().out)["arp"]]
    assert statuses == ["ok", "silent"]


def test_module_front_end_reports_bad_input_on_stderr(
    fake_wire: FakeWire, capsys: pytest.CaptureFixture[str]
) -> None:
    assert arp.main(["--interface", "eth0", "--ip", "192.0.2.9-192.0.2.1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "reversed" in captured.err
    assert arp.main(["--interface", "eth0", "--ip", "192.0.2.1", "--node-mac", "n1"]) == 1
    assert "NODE=MAC" in capsys.readouterr().err
