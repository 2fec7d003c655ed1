"""``migrate verify --arp --watch``: the rounds of the wire turned into events and a summary
(``follow``, from made-up rounds), and the command on the test wire while an IP moves."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Sequence
from ipaddress import IPv4Address

import pytest

from migrate.render import watch_line, watch_summary
from migrate.verify.arp import Gratuitous, Observation
from migrate.verify.watching import WatchReport, follow
from tests.wire import INTERFACE, Responder, Wire, json_lines_of, python_env, vips

IP = "192.0.2.7"
MAC_1, MAC_2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
OWNERS = {MAC_1: ["worker-1"], MAC_2: ["worker-2"]}


def rounds(*answers: Sequence[str], gratuitous_at: int | None = None) -> list[Observation]:
    """One Observation per answer (0.2 s apart, from t=100), the MACs answering IP."""
    out = []
    for number, macs in enumerate(answers):
        started = 100.0 + number * 0.2
        announced = ((Gratuitous(started + 0.01, IPv4Address(IP), MAC_2, "reply"),)
                     if number == gratuitous_at else ())
        out.append(Observation(started, started + 0.2, {IPv4Address(IP): frozenset(macs)},
                               announced))
    return out


def test_a_move_with_a_gap_is_told_with_its_silence_and_the_gratuitous_arp() -> None:
    report = WatchReport("eth0", [IP])
    events = list(follow(rounds([MAC_1], [MAC_1], [], [], [], [MAC_2], [MAC_2],
                                gratuitous_at=5), report, OWNERS))
    assert [(e.kind, e.macs, e.nodes) for e in events] == [
        ("answered", (MAC_1,), ("worker-1",)),
        ("silent", (), ()),
        ("answered", (MAC_2,), ("worker-2",)),
        ("gratuitous", (MAC_2,), ("worker-2",)),
    ]
    assert events[2].silent_for == pytest.approx(0.6)
    history = report.ips[IP]
    assert (history.moves, history.conflict_rounds) == (1, 0)
    assert history.longest_silence == pytest.approx(0.6)
    assert report.ok and report.rounds == 7
    assert watch_line(events[2]).endswith(
        f"{IP}  answered by {MAC_2} (worker-2) after 0.60s of silence")
    assert watch_line(events[3]).endswith(f"gratuitous ARP (reply) from {MAC_2} (worker-2)")


def test_two_macs_at_once_count_every_round_and_fail() -> None:
    report = WatchReport("eth0", [IP])
    events = list(follow(rounds([MAC_1], [MAC_1, MAC_2], [MAC_1, MAC_2], [MAC_2]), report,
                         OWNERS))
    assert [e.kind for e in events] == ["answered", "conflict", "answered"]
    assert report.ips[IP].conflict_rounds == 2 and report.ips[IP].moves == 1
    assert report.problems == [f"1 IP(s) answered by two MACs at once in some round: {IP}"
                               " (2 round(s))"]
    assert "CONFLICT: answered by" in watch_line(events[1])


def test_an_ip_silent_at_the_end_fails_and_its_silence_counts_to_the_end() -> None:
    report = WatchReport("eth0", [IP])
    list(follow(rounds([MAC_1], [], [], []), report, OWNERS))
    assert report.ips[IP].longest_silence == pytest.approx(0.6)  # until the last round ended
    assert report.problems == [f"1 IP(s) answered by nobody at the end: {IP}"]
    summary = watch_summary(report)
    assert summary.startswith("Watched 1 IP(s) on eth0 for 0.8s (4 rounds):")
    assert "now nobody; moved 0 time(s); longest silence 0.60s" in summary


def test_a_watch_stopped_early_still_sums_up() -> None:
    report = WatchReport("eth0", [IP])
    events = follow(rounds([MAC_1], [], [], [MAC_1]), report, OWNERS)
    assert [next(events).kind, next(events).kind] == ["answered", "silent"]
    events.close()  # Ctrl-C
    report.finish()
    assert report.rounds == 2 and report.ips[IP].longest_silence == pytest.approx(0.2)
    assert json.loads(json.dumps(report.to_json()))["summary"]["ips"][IP]["macs"] == []


@pytest.mark.wire
def test_migrate_verify_watch_on_the_wire(wire: Wire, responders: dict[str, Responder]
                                          ) -> None:
    n1, n2 = (responders[node] for node in wire.nodes[:2])
    (vip,) = vips(1, offset=120)
    n1.set_ips([vip])
    argv = wire.exec_argv(wire.client, [
        sys.executable, "-m", "migrate", "verify", "--arp", "--interface", INTERFACE,
        "--ip", str(vip), "--node-mac", f"{wire.nodes[0]}={n1.mac}",
        "--node-mac", f"{wire.nodes[1]}={n2.mac}", "--watch", "4", "-o", "json"])
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=python_env())
    try:
        time.sleep(1.2)
        n1.set_ips([])
        n2.set_ips([vip])  # takes the IP over, with a gratuitous ARP
        time.sleep(1.0)
        n1.set_ips([vip])  # a second announcer: I2 broken for a while
        time.sleep(0.8)
        n1.set_ips([])
    finally:
        code, lines, err = json_lines_of(process)
    assert code == 4, err
    summary = lines[-1]["summary"]
    events = [(e["event"], e["macs"], e["nodes"]) for e in lines[:-1]]
    assert events[0] == ("answered", [n1.mac], [wire.nodes[0]])
    assert ("answered", [n2.mac], [wire.nodes[1]]) in events
    assert ("gratuitous", [n2.mac], [wire.nodes[1]]) in events
    assert ("conflict", sorted([n1.mac, n2.mac]), sorted(wire.nodes[:2])) in [
        (kind, sorted(macs), sorted(nodes)) for kind, macs, nodes in events]
    history = summary["ips"][str(vip)]
    assert history["macs"] == [n2.mac] and history["moves"] >= 1
    assert history["conflictRounds"] >= 1
    assert "two MACs at once" in err


@pytest.mark.parametrize("args", [
    ["--watch", "3", "--failover", "a/b", "--yes"],
    ["--watch", "3", "--arp", "--interface", "eth1", "--failover", "a/b", "--yes"],
])
def test_watch_needs_arp_and_no_failover(args: list[str]) -> None:
    from tests.helpers import run_cli

    result = run_cli("verify", *args)
    assert result.exit_code == 2
    assert "--watch needs --arp --interface IF, and no --failover" in result.stderr
