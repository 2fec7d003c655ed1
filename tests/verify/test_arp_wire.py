"""The ARP prober on the test wire: classification, failover, own frames, scale, cross-checks.

Every frame stays inside the namespaces of ``tests/wire.py``; the prober runs in the client
namespace, responders of ours in the node namespaces.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest

from migrate.verify.arp import OP_REPLY, ArpSocket, format_mac, request_frame
from migrate.verify.responder import ArpResponder, IpsFile
from tests.wire import (
    CLIENT_IP,
    INTERFACE,
    PREFIX_LENGTH,
    Responder,
    Watcher,
    Wire,
    python_env,
    run_in_namespace,
    vips,
)

pytestmark = pytest.mark.wire

MAC_PATTERN = re.compile(r"\b[0-9a-fA-F]{2}(?::[0-9a-fA-F]{2}){5}\b")
# Silent IPs need not wait the default second, twice; a generous quiet period keeps the tests
# deterministic on a loaded machine (the default is tuned for speed: benchmarks/arp_scale.py).
SHORT = ("--window", "0.3", "--quiet", "0.3")
PATIENT = ("--quiet", "0.5")


def by_ip(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["ip"]: entry for entry in result["arp"]}


def three(responders: dict[str, Responder], wire: Wire) -> tuple[Responder, ...]:
    return tuple(responders[node] for node in wire.nodes[:3])


def test_one_conflicting_and_one_silent_ip_are_told_apart(
    wire: Wire, responders: dict[str, Responder]
) -> None:
    n1, n2, _ = three(responders, wire)
    alone, shared, nobody = vips(3)
    n1.set_ips([alone, shared])
    n2.set_ips([shared])

    code, result = wire.probe(
        [alone, shared, nobody],
        f"--node-mac={wire.nodes[0]}={n1.mac}",
        f"--node-ip={wire.nodes[1]}={wire.node_ips[wire.nodes[1]]}",  # its kernel answers
        *SHORT,
    )

    entries = by_ip(result)
    assert code == 4
    assert entries[str(alone)] == {
        "ip": str(alone), "status": "ok", "macs": [n1.mac], "nodes": [wire.nodes[0]]
    }
    assert entries[str(shared)]["status"] == "conflict"
    assert set(entries[str(shared)]["macs"]) == {n1.mac, n2.mac}
    assert set(entries[str(shared)]["nodes"]) == {wire.nodes[0], wire.nodes[1]}
    assert entries[str(nobody)] == {"ip": str(nobody), "status": "silent", "macs": [], "nodes": []}


def test_all_ok_exits_zero(wire: Wire, responders: dict[str, Responder]) -> None:
    n1, n2, _ = three(responders, wire)
    first, second = vips(2, offset=10)
    n1.set_ips([first])
    n2.set_ips([second])

    code, result = wire.probe([first, second], *PATIENT)

    assert code == 0
    assert [entry["macs"] for entry in result["arp"]] == [[n1.mac], [n2.mac]]


def test_failover_is_seen_with_the_new_mac_and_its_gratuitous_arp(
    wire: Wire, responders: dict[str, Responder]
) -> None:
    old, new, _ = three(responders, wire)
    (vip,) = vips(1, offset=20)
    old.set_ips([vip])
    watcher = Watcher(wire, [vip], seconds=30)
    try:
        watcher.until(lambda seen: seen["macs"][str(vip)] == [old.mac])
        old.set_ips([])  # break before make, as the migration does
        new.set_ips([vip])
        watcher.until(lambda seen: seen["macs"][str(vip)] == [new.mac])
        for _ in range(3):  # an announcement read just after the first answer
            watcher.next()
    finally:
        watcher.stop()

    answered = [seen["macs"][str(vip)] for seen in watcher.seen]
    assert all(len(macs) <= 1 for macs in answered), "two MACs answered at the same moment"
    first_new = answered.index([new.mac])
    assert [old.mac] in answered[:first_new]
    assert [old.mac] not in answered[first_new:]
    announcements = [g for seen in watcher.seen for g in seen["gratuitous"]]
    by_new = {g["style"] for g in announcements if g["mac"] == new.mac and g["ip"] == str(vip)}
    assert by_new == {"request", "reply"}


def test_watch_shows_two_announcers_answering_at_once(
    wire: Wire, responders: dict[str, Responder]
) -> None:
    first, second, _ = three(responders, wire)
    (vip,) = vips(1, offset=30)
    first.set_ips([vip])
    watcher = Watcher(wire, [vip], seconds=30)
    try:
        watcher.until(lambda seen: seen["macs"][str(vip)] == [first.mac])
        second.set_ips([vip])  # make before break: what invariant I2 forbids
        both = watcher.until(lambda seen: len(seen["macs"][str(vip)]) > 1)
    finally:
        watcher.stop()
    assert set(both["macs"][str(vip)]) == {first.mac, second.mac}


def switch_reflects(wire: Wire) -> bool:
    """Whether a frame the client sends comes back to it from the switch."""
    code = (
        "import select, socket, sys\n"
        "from migrate.verify.arp import ArpSocket, request_frame, parse_frame\n"
        "s = ArpSocket(sys.argv[1])\n"
        "s._sock.send(request_frame(s.mac, bytes(4), bytes([198, 18, 255, 254])))\n"
        "while select.select([s._sock], [], [], 1.0)[0]:\n"
        "    frame, address = s._sock.recvfrom(128)\n"
        "    if address[2] != socket.PACKET_OUTGOING and frame[6:12] == s.mac:\n"
        "        sys.exit(0)\n"
        "sys.exit(1)\n"
    )
    argv = wire.exec_argv(wire.client, [sys.executable, "-c", code, INTERFACE])
    return subprocess.run(argv, env=python_env(), check=False, timeout=30).returncode == 0


@pytest.fixture
def reflecting_switch(wire: Wire) -> Iterator[None]:
    """The switch sends the client's frames back to it (hairpin), as some switches do."""
    wire.set_hairpin(wire.client, True)
    try:
        assert switch_reflects(wire), "hairpin mode did not reflect the client's frames"
        yield
    finally:
        wire.set_hairpin(wire.client, False)


@pytest.mark.usefixtures("reflecting_switch")
def test_own_reflected_requests_are_not_taken_for_announcements(
    wire: Wire, responders: dict[str, Responder]
) -> None:
    n1, _, _ = three(responders, wire)
    owned, unowned = vips(2, offset=40)
    n1.set_ips([owned])

    # Asking for `unowned` from `unowned` makes our own request look like a gratuitous ARP
    # when the switch sends it back.
    _, result = wire.probe([owned, unowned], f"--source-ip={unowned}", *SHORT)

    entries = by_ip(result)
    assert entries[str(owned)]["macs"] == [n1.mac]
    assert entries[str(unowned)]["status"] == "silent"


@pytest.mark.usefixtures("reflecting_switch")
def test_frames_sent_from_our_own_interface_are_ignored_by_watch(
    wire: Wire, responders: dict[str, Responder], tmp_path: Any
) -> None:
    _, n2, _ = three(responders, wire)
    (vip,) = vips(1, offset=50)
    watcher = Watcher(wire, [vip], seconds=30)
    local = None
    try:
        watcher.next()
        # Another program on the client's own interface announces the IP with our MAC.
        local = wire.responder(wire.client, tmp_path / "client.ips")
        local.set_ips([vip])
        n2.set_ips([vip])  # and a real node announces it too: this one must be seen
        watcher.until(lambda seen: seen["macs"][str(vip)] == [n2.mac])
        for _ in range(3):
            watcher.next()
    finally:
        watcher.stop()
        if local:
            local.stop()

    announcers = {g["mac"] for seen in watcher.seen for g in seen["gratuitous"]}
    answerers = {mac for seen in watcher.seen for mac in seen["macs"][str(vip)]}
    assert announcers == {n2.mac}
    assert answerers == {n2.mac}
    assert wire.macs[wire.client] not in announcers | answerers


def test_a_thousand_ips_with_three_replies_each_lose_none(
    wire: Wire, responders: dict[str, Responder]
) -> None:
    nodes = three(responders, wire)
    targets = vips(1000, offset=1000)
    for responder in nodes:
        responder.set_ips(targets)

    code, result = wire.probe([f"{targets[0]}-{targets[-1]}"], *PATIENT)

    assert code == 4
    assert len(result["arp"]) == 1000
    expected = {responder.mac for responder in nodes}
    wrong = [entry for entry in result["arp"] if set(entry["macs"]) != expected]
    assert not wrong, f"{len(wrong)} IPs without all three replies, e.g. {wrong[:3]}"
    assert {entry["status"] for entry in result["arp"]} == {"conflict"}


def test_an_interface_without_ipv4_sends_rfc5227_probes(
    wire: Wire, responders: dict[str, Responder]
) -> None:
    n1, n2, _ = three(responders, wire)
    unaddressed = wire.nodes[2]
    (vip,) = vips(1, offset=60)
    n1.set_ips([vip])
    address = f"{wire.node_ips[unaddressed]}/{PREFIX_LENGTH}"
    subprocess.run(["ip", "-n", unaddressed, "addr", "del", address, "dev", INTERFACE],
                   check=True)
    try:
        # n2's kernel answers a probe from 0.0.0.0 for its own address, as RFC 5227 wants.
        node_ip = wire.node_ips[wire.nodes[1]]
        code, result = wire.probe([vip, node_ip], *PATIENT, namespace=unaddressed)
    finally:
        subprocess.run(["ip", "-n", unaddressed, "addr", "add", address, "dev", INTERFACE],
                       check=True)
    assert code == 0
    assert [entry["macs"] for entry in result["arp"]] == [[n1.mac], [n2.mac]]


def run_in_client(wire: Wire, argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        wire.exec_argv(wire.client, argv), capture_output=True, text=True,
        env=python_env(), check=False, timeout=60,
    )


def test_without_cap_net_raw_it_stops_with_a_clear_message(wire: Wire) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    argv = ["setpriv", "--bounding-set", "-net_raw", "--inh-caps", "-net_raw",
            *wire.prober_argv(["--ip", str(vips(1)[0])])[4:]]
    done = run_in_client(wire, argv)
    assert done.returncode == 1
    assert done.stdout == ""
    assert "CAP_NET_RAW" in done.stderr


def test_an_unknown_interface_is_named(wire: Wire) -> None:
    argv = wire.prober_argv(["--ip", str(vips(1)[0])])
    argv[argv.index(INTERFACE)] = "nosuch0"
    done = run_in_client(wire, argv[4:])
    assert done.returncode == 1
    assert "no network interface named 'nosuch0'" in done.stderr


# --------------------------------------------------------------------------- cross-checks


@pytest.fixture
def small_scene(wire: Wire, responders: dict[str, Responder]) -> dict[IPv4Address, set[str]]:
    """One ok, one conflicting and one silent IP; what our prober says about them."""
    n1, n2, _ = three(responders, wire)
    alone, shared, nobody = vips(3, offset=70)
    n1.set_ips([alone, shared])
    n2.set_ips([shared])
    _, result = wire.probe([alone, shared, nobody], *SHORT)
    ours = {IPv4Address(entry["ip"]): set(entry["macs"]) for entry in result["arp"]}
    assert ours == {alone: {n1.mac}, shared: {n1.mac, n2.mac}, nobody: set()}
    return ours


def test_arp_scan_sees_what_we_see(wire: Wire, small_scene: dict[IPv4Address, set[str]]) -> None:
    if shutil.which("arp-scan") is None:
        pytest.skip("arp-scan is not installed")
    done = run_in_client(
        wire, ["arp-scan", "-I", INTERFACE, "-r", "3", "-x", "-q", *map(str, small_scene)]
    )
    assert done.returncode == 0, done.stderr
    theirs: dict[IPv4Address, set[str]] = {ip: set() for ip in small_scene}
    for line in done.stdout.splitlines():
        ip, mac = line.split()[:2]
        theirs[IPv4Address(ip)].add(mac.lower())
    assert theirs == small_scene


def arping_argv(ip: IPv4Address) -> list[str]:
    """``arping -b`` for one IP, three requests, in the flavour installed."""
    usage = subprocess.run(["arping", "--help"], capture_output=True, text=True, check=False)
    if "Habets" in usage.stdout + usage.stderr:  # Debian's `arping`: -b = source 255.255.255.255
        return ["arping", "-b", "-i", INTERFACE, "-c", "3", "-W", "0.2", str(ip)]
    return ["arping", "-b", "-I", INTERFACE, "-c", "3", "-w", "3", str(ip)]  # iputils


def test_arping_sees_what_we_see(wire: Wire, small_scene: dict[IPv4Address, set[str]]) -> None:
    if shutil.which("arping") is None:
        pytest.skip("arping is not installed")
    for ip, macs in small_scene.items():
        done = run_in_client(wire, arping_argv(ip))
        assert {mac.lower() for mac in MAC_PATTERN.findall(done.stdout)} == macs, done.stdout


def test_signals_arriving_all_the_time_do_not_disturb_a_probe(
    wire: Wire, responders: dict[str, Responder]
) -> None:
    n1, _, _ = three(responders, wire)
    answered, silent = vips(2, offset=80)
    n1.set_ips([answered])
    code = (
        "import json, signal, sys\n"
        "from ipaddress import IPv4Address\n"
        "from migrate.verify.arp import probe\n"
        "signal.signal(signal.SIGALRM, lambda *_: None)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)  # a signal every millisecond\n"
        "results = probe(sys.argv[1], [IPv4Address(a) for a in sys.argv[2:]], window=0.3)\n"
        "signal.setitimer(signal.ITIMER_REAL, 0)\n"
        "print(json.dumps([[r.status, list(r.macs)] for r in results]))\n"
    )
    argv = [sys.executable, "-c", code, INTERFACE, str(answered), str(silent)]
    done = run_in_client(wire, argv)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [["ok", [n1.mac]], ["silent", []]]


@pytest.mark.parametrize("module", ["migrate", "migrate.cli"],
                         ids=["migrate (the lean lane)", "migrate.cli (click)"])
def test_migrate_verify_arp_on_the_wire(
    wire: Wire, responders: dict[str, Responder], module: str
) -> None:
    n1, n2, _ = three(responders, wire)
    alone, shared = vips(2, offset=90)
    n1.set_ips([alone, shared])
    n2.set_ips([shared])
    argv = [sys.executable, "-m", module, "verify", "--arp", "--interface", INTERFACE,
            "--ip", f"{alone}-{shared}", "--node-mac", f"{wire.nodes[1]}={n2.mac}", "-o", "json"]

    done = run_in_client(wire, argv)

    assert done.returncode == 4, done.stderr
    entries = by_ip(json.loads(done.stdout))
    assert entries[str(alone)]["macs"] == [n1.mac]
    assert entries[str(alone)]["nodes"] == []
    assert entries[str(shared)]["status"] == "conflict"
    assert entries[str(shared)]["nodes"] == [wire.nodes[1]]
    assert "1 of 2 IPs" in done.stderr


def test_a_responder_keeps_its_ips_when_its_file_turns_bad(
    wire: Wire, responders: dict[str, Responder]
) -> None:
    n1, _, _ = three(responders, wire)
    (vip,) = vips(1, offset=95)
    n1.set_ips([vip])
    n1.ips_file.write_text("198.18.9.9-198.18.9.1\n")  # a reversed range

    error = n1._next_event("error")

    assert "reversed" in error["message"]
    code, result = wire.probe([vip], *PATIENT)
    assert (code, result["arp"][0]["macs"]) == (0, [n1.mac])


def test_a_responder_answers_a_request_for_what_it_held_when_the_request_came(
        wire: Wire, tmp_path: Path) -> None:
    """However late the responder process gets to run, a request that arrived before it took
    an IP over gets no answer from it, and one that arrived before it gave the IP up does.
    (A slow responder would otherwise answer in the same prober round as the node it took the
    IP from, which the prober reports as two MACs.)"""
    vip = vips(1, offset=40)[0]
    node = wire.nodes[0]
    responder = run_in_namespace(node, lambda: ArpResponder(INTERFACE, garp_count=0))
    client = run_in_namespace(wire.client, lambda: ArpSocket(INTERFACE))
    ips = IpsFile(tmp_path / "ips")
    request = request_frame(client.mac, CLIENT_IP.packed, vip.packed)

    def replies() -> list[str]:
        """The MACs that answered a who-has for the VIP within 0.3 s."""
        seen, deadline = [], time.monotonic() + 0.3
        while (left := deadline - time.monotonic()) > 0:
            if client.wait(left):
                seen += [format_mac(p.sender_mac) for p in client.receive()
                         if p.op == OP_REPLY and not p.gratuitous and p.sender_ip == vip.packed]
        return seen

    try:
        responder.serve_round(ips, 0.0)  # reads the empty file
        client.send(request)  # queued while the responder does not run
        (tmp_path / "ips").write_text(f"{vip}\n")
        responder.serve_round(ips, 0.1)
        assert replies() == []  # it came before the responder held the VIP
        client.send(request)
        responder.serve_round(ips, 0.1)
        assert replies() == [format_mac(responder.mac)]
        client.send(request)  # queued: the responder still holds the VIP
        (tmp_path / "ips").write_text("")
        responder.serve_round(ips, 0.1)
        assert replies() == [format_mac(responder.mac)]
        client.send(request)
        responder.serve_round(ips, 0.1)
        assert replies() == []
    finally:
        client.close()
        responder.close()
