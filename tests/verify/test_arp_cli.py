"""``migrate verify --arp``: options, output and exit codes (the wire replaced by a table)."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from ipaddress import IPv4Address
from typing import Any

import pytest

from migrate.render import arp_table, verify_tables
from migrate.verify import arp, run_verify
from migrate.verify.arp import ArpResult, classify
from tests.helpers import run_cli

MAC_N1, MAC_N2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
ANSWERS = {"192.0.2.1": (MAC_N1,), "192.0.2.2": (MAC_N1, MAC_N2)}


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[IPv4Address]]]:
    """Replace the wire by ANSWERS; record the interface and IPs each probe asked for."""
    calls: list[tuple[str, list[IPv4Address]]] = []

    def fake_probe(interface: str, ips: Sequence[IPv4Address], **_: Any) -> list[ArpResult]:
        calls.append((interface, list(ips)))
        return [ArpResult(ip, classify(ANSWERS.get(str(ip), ())), ANSWERS.get(str(ip), ()))
                for ip in ips]

    monkeypatch.setattr(arp, "probe", fake_probe)
    return calls


def test_all_answered_once_exits_zero_with_json(asked: list[Any]) -> None:
    result = run_cli("verify", "--arp", "--interface", "eth1", "--ip", "192.0.2.1",
                     "--node-mac", f"n1={MAC_N1}", "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {
        "arp": [{"ip": "192.0.2.1", "status": "ok", "macs": [MAC_N1], "nodes": ["n1"]}]
    }
    assert asked == [("eth1", [IPv4Address("192.0.2.1")])]


def test_a_conflict_or_a_silent_ip_exits_4_and_says_how_many(asked: list[Any]) -> None:
    result = run_cli("verify", "--arp", "--interface", "eth1", "--ip", "192.0.2.1-192.0.2.3")
    assert result.exit_code == 4
    assert "2 of 3 IPs are not answered by exactly one MAC" in result.stderr
    for word in ("192.0.2.2", "conflict", MAC_N2, "192.0.2.3", "silent"):
        assert word in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interface", "eth1", "--ip", "192.0.2.1"], "--arp"),
        (["--arp", "--ip", "192.0.2.1"], "--interface"),
        (["--arp", "--interface", "eth1"], "--ip"),
    ],
)
def test_missing_options_are_usage_errors(asked: list[Any], args: list[str], message: str) -> None:
    result = run_cli("verify", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert asked == []


def test_bad_ip_or_node_mac_is_an_input_error(asked: list[Any]) -> None:
    reversed_range = run_cli("verify", "--arp", "--interface", "eth1", "--ip", "10.0.0.9-10.0.0.1")
    assert reversed_range.exit_code == 1
    assert "reversed" in reversed_range.stderr
    bad_mac = run_cli("verify", "--arp", "--interface", "eth1", "--ip", "10.0.0.1",
                      "--node-mac", "n1=not-a-mac")
    assert bad_mac.exit_code == 1
    assert "not a MAC address" in bad_mac.stderr
    assert asked == []


def test_the_table_gives_each_ip_one_line_with_all_its_macs(asked: list[Any]) -> None:
    result = run_cli("verify", "--arp", "--interface", "eth1", "--ip", "192.0.2.1-192.0.2.3",
                     "--node-mac", f"node-two={MAC_N2}")
    lines = result.stdout.splitlines()
    assert lines[0] == "ARP on eth1"
    assert [line.split() for line in lines[1:-1]] == [
        ["IP", "STATUS", "MACS", "NODES"],
        ["192.0.2.1", "ok", MAC_N1, "-"],
        ["192.0.2.2", "conflict", f"{MAC_N1},{MAC_N2}", "node-two"],
        ["192.0.2.3", "silent", "-", "-"],
    ]
    assert len({line.index(line.split()[2]) for line in lines[1:-1]}) == 1  # aligned
    assert not any(line.endswith(" ") for line in lines)
    assert lines[-1] == "3 IPs: 1 ok, 1 conflict, 1 silent"
    assert "\x1b[" not in result.stdout  # not a terminal: no colour


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_verdicts_are_coloured_on_a_terminal_unless_no_color(
    asked: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    result = run_verify(None, None, interface="eth1", ip_specs=["192.0.2.1-192.0.2.3"])
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    terminal = Terminal()
    verify_tables(result, terminal)
    painted = terminal.getvalue()
    assert "\x1b[32mok" in painted and "\x1b[31mconflict" in painted
    assert "\x1b[33msilent" in painted
    assert re.sub("\x1b\\[[0-9]*m", "", painted) == arp_table(result)  # same columns

    monkeypatch.setenv("NO_COLOR", "1")
    plain = Terminal()
    verify_tables(result, plain)
    assert plain.getvalue() == arp_table(result)
