"""ARP on the wire: who answers for each IP, and who announces it.

``probe`` sends a who-has for every IP at once on one interface (and only there), collects
every reply for a window and classifies each IP as ``ok`` (one MAC), ``conflict`` (several
MACs) or ``silent``. ``watch`` probes in rounds and yields what each round saw, gratuitous ARP
included, to follow a failover. ``verify_arp`` is the library call behind
``migrate verify --arp``. Standard library only (raw ``AF_PACKET`` sockets), so the command
starts fast; ``python -m migrate.verify.arp`` is a small JSON front end used in network
namespaces.

Invariant I2 (design §1): after cutover each IP is answered by exactly one MAC, that of the
lease holder, which sends a gratuitous ARP when it takes an IP over [C2][M8].
"""

from __future__ import annotations

import errno
import fcntl
import select
import socket
import struct
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from ipaddress import IPv4Address
from typing import Any, Literal, NamedTuple

from migrate.errors import CapabilityError, InputError, MigrateError
from migrate.verify.targets import parse_targets

Status = Literal["ok", "conflict", "silent"]

ETH_P_ARP = 0x0806
ARPHRD_ETHER = 1
OP_REQUEST = 1
OP_REPLY = 2
FRAME_SIZE = 60
"""Minimum Ethernet frame without FCS; shorter frames are dropped by some NICs and switches."""
BROADCAST_MAC = b"\xff" * 6
ZERO_MAC = b"\x00" * 6
ANY_IP = IPv4Address("0.0.0.0")

DEFAULT_WINDOW = 1.0
"""Seconds to wait for replies in one round when some IP is still silent."""
DEFAULT_QUIET = 0.02
"""Once every IP answered, stop after this many seconds without a new MAC for any IP.

LAN responders answer within a few milliseconds, and every new MAC restarts the wait; a second
announcer slower than that by more is missed by one probe (``watch`` waits whole rounds).
arp-scan itself stops as soon as every host answered once, without waiting for duplicates.
"""
SOCKET_BUFFER = 16 * 1024 * 1024
"""Receive/send buffer asked for; the default (~200 KiB) drops replies at 1,000 IPs."""

_SO_SNDBUFFORCE = 32  # not exported by the socket module
_SO_RCVBUFFORCE = 33
_SIOCGIFADDR = 0x8915
_ARP_HEADER = struct.pack("!HHBB", ARPHRD_ETHER, 0x0800, 6, 4)  # Ethernet / IPv4
_ETHERTYPE = struct.pack("!H", ETH_P_ARP)
_PADDING = bytes(FRAME_SIZE - 42)
_EXIT_NOT_OK = 4
_DRAIN_EVERY = 512  # requests sent between two reads of the replies while sending


# --------------------------------------------------------------------------- frames


class ArpPacket(NamedTuple):
    """One ARP packet for IPv4 over Ethernet, addresses as raw bytes."""

    eth_source: bytes
    op: int
    sender_mac: bytes
    sender_ip: bytes
    target_mac: bytes
    target_ip: bytes

    @property
    def gratuitous(self) -> bool:
        """Request- or reply-style gratuitous ARP: sender IP equals target IP [M8]."""
        return self.sender_ip == self.target_ip and self.sender_ip != ANY_IP.packed


def build_frame(
    *,
    eth_destination: bytes,
    eth_source: bytes,
    op: int,
    sender_mac: bytes,
    sender_ip: bytes,
    target_mac: bytes,
    target_ip: bytes,
) -> bytes:
    """An Ethernet frame carrying one ARP packet, padded to 60 bytes."""
    return b"".join(
        (
            eth_destination,
            eth_source,
            _ETHERTYPE,
            _ARP_HEADER,
            struct.pack("!H", op),
            sender_mac,
            sender_ip,
            target_mac,
            target_ip,
            _PADDING,
        )
    )


def request_frame(source_mac: bytes, source_ip: bytes, target_ip: bytes) -> bytes:
    """A broadcast who-has for ``target_ip`` (an ARP probe when ``source_ip`` is 0.0.0.0)."""
    return build_frame(
        eth_destination=BROADCAST_MAC,
        eth_source=source_mac,
        op=OP_REQUEST,
        sender_mac=source_mac,
        sender_ip=source_ip,
        target_mac=ZERO_MAC,
        target_ip=target_ip,
    )


def parse_frame(frame: bytes) -> ArpPacket | None:
    """Decode an Ethernet/ARP frame for IPv4; None for anything else."""
    if len(frame) < 42 or frame[12:14] != _ETHERTYPE or frame[14:20] != _ARP_HEADER:
        return None
    op = frame[20] << 8 | frame[21]
    if op not in (OP_REQUEST, OP_REPLY):
        return None
    return ArpPacket(
        frame[6:12], op, frame[22:28], frame[28:32], frame[32:38], frame[38:42]
    )


def format_mac(mac: bytes) -> str:
    """``aa:bb:cc:dd:ee:ff``."""
    return mac.hex(":")


def parse_mac(text: str) -> bytes:
    """Six bytes from ``aa:bb:cc:dd:ee:ff`` (``-`` also accepted); InputError otherwise."""
    pieces = text.strip().replace("-", ":").split(":")
    try:
        if len(pieces) != 6 or any(len(piece) != 2 for piece in pieces):
            raise ValueError(text)
        return bytes(int(piece, 16) for piece in pieces)
    except ValueError:
        raise InputError(f"{text!r} is not a MAC address like aa:bb:cc:dd:ee:ff") from None


# --------------------------------------------------------------------------- socket


def interface_ipv4(interface: str) -> IPv4Address | None:
    """The (primary) IPv4 address of ``interface``, or None when it has none."""
    request = struct.pack("256s", interface.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
        except OSError as error:
            if error.errno in (errno.EADDRNOTAVAIL, errno.ENODEV):
                return None
            raise
    return IPv4Address(answer[20:24])  # struct ifreq: name[16], sockaddr_in (family, port, addr)


class ArpSocket:
    """A raw packet socket bound to one interface, receiving ARP only, sending only there."""

    def __init__(self, interface: str, *, buffer_size: int = SOCKET_BUFFER) -> None:
        self.interface = interface
        try:
            # Protocol 0 receives nothing until bind, so no frame of another interface queues.
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        except PermissionError:
            raise CapabilityError(
                "ARP needs raw sockets (CAP_NET_RAW): run as root, or grant the capability "
                "with `sudo setcap cap_net_raw+ep $(readlink -f $(command -v python3))`"
            ) from None
        try:
            try:
                sock.bind((interface, ETH_P_ARP))
            except OSError as error:
                if error.errno in (errno.ENODEV, errno.EINVAL):  # EINVAL: name too long
                    raise InputError(f"no network interface named {interface!r}") from None
                raise
            hardware_type, mac = sock.getsockname()[3:5]
            if hardware_type != ARPHRD_ETHER:
                raise InputError(f"interface {interface!r} is not an Ethernet interface")
            _raise_buffer(sock, _SO_RCVBUFFORCE, socket.SO_RCVBUF, buffer_size)
            _raise_buffer(sock, _SO_SNDBUFFORCE, socket.SO_SNDBUF, buffer_size)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self.mac: bytes = mac

    def fileno(self) -> int:
        """The socket's descriptor (for select)."""
        return self._sock.fileno()

    def send(self, frame: bytes, *, patience: float = 1.0) -> bool:
        """Send one frame on the bound interface; False when the queue stayed full."""
        deadline = time.monotonic() + patience
        while True:
            try:
                self._sock.send(frame)
                return True
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                select.select([], [self._sock], [], min(remaining, 0.05))
            except OSError as error:
                if error.errno == errno.ENETDOWN:
                    raise InputError(f"interface {self.interface!r} is down") from None
                if error.errno != errno.ENOBUFS:
                    raise
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.001)  # the device queue is full: let it drain

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for a frame; a signal only shortens the wait."""
        try:
            readable, _, _ = select.select([self._sock], [], [], max(timeout, 0.0))
        except InterruptedError:  # only when a handler raised it; the caller loops anyway
            return False
        return bool(readable)

    def receive(self) -> Iterator[ArpPacket]:
        """Every queued ARP packet that is not one of our own frames."""
        own = self.mac
        while True:
            try:
                frame, address = self._sock.recvfrom(128)
            except (BlockingIOError, InterruptedError):
                return
            if address[2] == socket.PACKET_OUTGOING:
                continue
            packet = parse_frame(frame)
            if packet is None or packet.eth_source == own or packet.sender_mac == own:
                continue
            yield packet

    def close(self) -> None:
        """Close the socket."""
        self._sock.close()

    def __enter__(self) -> ArpSocket:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _raise_buffer(sock: socket.socket, forced: int, plain: int, size: int) -> None:
    """Ask for ``size`` bytes, beyond the sysctl limit when privileged (root)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, forced, size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, plain, size)


# --------------------------------------------------------------------------- probe


class ArpResult(NamedTuple):
    """What the wire said about one IP: its status and the MACs that claimed it, first first."""

    ip: IPv4Address
    status: Status
    macs: tuple[str, ...]


def classify(macs: Sequence[str]) -> Status:
    """``silent`` for no MAC, ``ok`` for one, ``conflict`` for several."""
    return "silent" if not macs else "ok" if len(macs) == 1 else "conflict"


def _source(
    sock: ArpSocket, source_ip: IPv4Address | None, source_mac: str | None
) -> tuple[bytes, bytes]:
    """Sender MAC and IP for our requests; 0.0.0.0 (an RFC 5227 probe) when unaddressed."""
    mac = parse_mac(source_mac) if source_mac else sock.mac
    ip = source_ip or interface_ipv4(sock.interface) or ANY_IP
    return mac, ip.packed


def probe(
    interface: str,
    ips: Sequence[IPv4Address],
    *,
    window: float = DEFAULT_WINDOW,
    quiet: float = DEFAULT_QUIET,
    retries: int = 1,
    source_ip: IPv4Address | None = None,
    source_mac: str | None = None,
) -> list[ArpResult]:
    """Ask who has each IP on ``interface`` (only there) and classify the answers.

    All requests go out at once; replies are collected until ``window`` seconds passed or,
    once every IP answered, ``quiet`` seconds went by without a new MAC. Silent IPs are
    asked again ``retries`` times. A gratuitous ARP for an IP counts as its sender's claim.
    """
    targets = list(dict.fromkeys(ips))
    if not targets:
        return []
    claims: dict[bytes, dict[bytes, None]] = {ip.packed: {} for ip in targets}
    with ArpSocket(interface) as sock:
        mac, ip = _source(sock, source_ip, source_mac)
        ignored = {mac, sock.mac}
        pending = list(claims)
        for _ in range(1 + max(retries, 0)):
            for count, packed in enumerate(pending, 1):
                sock.send(request_frame(mac, ip, packed))
                if count % _DRAIN_EVERY == 0:  # keep the receive buffer from filling up
                    _record(sock, claims, ignored)
            _collect(sock, claims, ignored, window=window, quiet=quiet)
            pending = [packed for packed, macs in claims.items() if not macs]
            if not pending:
                break
    results = []
    for target in targets:
        macs = tuple(format_mac(claimer) for claimer in claims[target.packed])
        results.append(ArpResult(target, classify(macs), macs))
    return results


def _collect(
    sock: ArpSocket,
    claims: dict[bytes, dict[bytes, None]],
    ignored: set[bytes],
    *,
    window: float,
    quiet: float,
) -> None:
    """Wait for replies until the window closes or, all IPs answered, the wire went quiet."""
    start = time.monotonic()
    deadline = start + window
    last_news = start
    unanswered = sum(1 for macs in claims.values() if not macs)
    while True:
        now = time.monotonic()
        if now >= deadline or (unanswered == 0 and now - last_news >= quiet):
            return
        until = deadline if unanswered else min(deadline, last_news + quiet)
        if not sock.wait(until - now):
            continue
        first_answers, news = _record(sock, claims, ignored)
        unanswered -= first_answers
        if news:
            last_news = time.monotonic()


def _record(
    sock: ArpSocket, claims: dict[bytes, dict[bytes, None]], ignored: set[bytes]
) -> tuple[int, bool]:
    """Drain the socket into ``claims``: (IPs answered for the first time, any new MAC)."""
    first_answers = 0
    news = False
    for packet in sock.receive():
        if packet.op != OP_REPLY and not packet.gratuitous:
            continue  # somebody else's question
        macs = claims.get(packet.sender_ip)
        if macs is None or packet.sender_mac in ignored or packet.sender_mac in macs:
            continue
        if not macs:
            first_answers += 1
        macs[packet.sender_mac] = None
        news = True
    return first_answers, news


# --------------------------------------------------------------------------- watch


class Gratuitous(NamedTuple):
    """A gratuitous ARP seen on the wire: ``mac`` announced ``ip`` at ``at`` (epoch seconds)."""

    at: float
    ip: IPv4Address
    mac: str
    style: Literal["request", "reply"]


class Observation(NamedTuple):
    """One round of ``watch``: who answered that round's who-has, and what was announced."""

    started: float
    ended: float
    macs: Mapping[IPv4Address, frozenset[str]]
    gratuitous: tuple[Gratuitous, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (one line of ``python -m migrate.verify.arp --watch``)."""
        return {
            "started": self.started,
            "ended": self.ended,
            "macs": {str(ip): sorted(macs) for ip, macs in self.macs.items()},
            "gratuitous": [
                {"at": g.at, "ip": str(g.ip), "mac": g.mac, "style": g.style}
                for g in self.gratuitous
            ],
        }


def watch(
    interface: str,
    ips: Sequence[IPv4Address],
    duration: float,
    interval: float = 0.2,
    *,
    source_ip: IPv4Address | None = None,
) -> Iterator[Observation]:
    """Probe ``ips`` every ``interval`` seconds for ``duration`` seconds, one Observation a round.

    ``macs`` holds, per IP, the MACs that answered the who-has sent at the start of that round,
    so two MACs there mean two announcers at the same moment. Gratuitous ARPs for the IPs are
    listed in the round they were read in, with their time.
    """
    targets = list(dict.fromkeys(ips))
    wanted = {target.packed: target for target in targets}
    with ArpSocket(interface) as sock:
        mac, source = _source(sock, source_ip, None)
        ignored = {mac, sock.mac}
        requests = [request_frame(mac, source, target) for target in wanted]
        end = time.monotonic() + duration
        leftover: list[Gratuitous] = []
        while time.monotonic() < end:
            # Replies still queued belong to the previous round; announcements are kept.
            leftover.extend(_read_round(sock, wanted, ignored, {}))
            started = time.time()
            round_end = min(time.monotonic() + interval, end)
            for frame in requests:
                sock.send(frame)
            answers: dict[bytes, set[bytes]] = {}
            announced = leftover
            leftover = []
            while (remaining := round_end - time.monotonic()) > 0:
                if sock.wait(remaining):
                    announced.extend(_read_round(sock, wanted, ignored, answers))
            yield Observation(
                started=started,
                ended=time.time(),
                macs={
                    wanted[target]: frozenset(format_mac(m) for m in answers.get(target, ()))
                    for target in wanted
                },
                gratuitous=tuple(announced),
            )


def _read_round(
    sock: ArpSocket,
    wanted: Mapping[bytes, IPv4Address],
    ignored: set[bytes],
    answers: dict[bytes, set[bytes]],
) -> list[Gratuitous]:
    """Drain the socket: replies go into ``answers``, gratuitous ARPs are returned."""
    announced = []
    for packet in sock.receive():
        if packet.sender_ip not in wanted or packet.sender_mac in ignored:
            continue
        if packet.gratuitous:
            style: Literal["request", "reply"] = "request" if packet.op == OP_REQUEST else "reply"
            announced.append(
                Gratuitous(time.time(), wanted[packet.sender_ip], format_mac(packet.sender_mac),
                           style)
            )
        elif packet.op == OP_REPLY:
            answers.setdefault(packet.sender_ip, set()).add(packet.sender_mac)
    return announced


# --------------------------------------------------------------------------- verify_arp


class ArpEntry(NamedTuple):
    """One probed IP with the nodes its MACs belong to (known MACs only)."""

    ip: IPv4Address
    status: Status
    macs: tuple[str, ...]
    nodes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """``{"ip", "status", "macs", "nodes"}``."""
        return {
            "ip": str(self.ip),
            "status": self.status,
            "macs": list(self.macs),
            "nodes": list(self.nodes),
        }


class ArpReport(NamedTuple):
    """The result of ``verify_arp``: one entry per IP, in the order asked."""

    interface: str
    entries: tuple[ArpEntry, ...]
    node_macs: Mapping[str, tuple[str, ...]]

    @property
    def ok(self) -> bool:
        """True when every IP is answered by exactly one MAC."""
        return all(entry.status == "ok" for entry in self.entries)

    def to_json(self) -> dict[str, Any]:
        """``{"arp": [{"ip", "status", "macs", "nodes"}, ...]}``."""
        return {"arp": [entry.to_json() for entry in self.entries]}


def verify_arp(
    interface: str,
    ip_specs: Iterable[str | IPv4Address],
    *,
    node_macs: Mapping[str, str] | None = None,
    node_ips: Mapping[str, str | IPv4Address] | None = None,
    window: float = DEFAULT_WINDOW,
    quiet: float = DEFAULT_QUIET,
    retries: int = 1,
    source_ip: IPv4Address | None = None,
) -> ArpReport:
    """Probe the IPs of ``ip_specs`` (IPs, CIDRs, ranges a-b) on ``interface`` and name the nodes.

    MACs are mapped to nodes with ``node_macs`` (node → MAC) and by probing ``node_ips``
    (node → InternalIP) in the same round; an explicit MAC wins over a probed one.
    """
    targets = parse_targets(ip_specs)
    given_macs = {node: format_mac(parse_mac(mac)) for node, mac in (node_macs or {}).items()}
    node_addresses = {
        node: address if isinstance(address, IPv4Address) else parse_targets([address])[0]
        for node, address in (node_ips or {}).items()
    }
    probed = set(targets)
    extra = [address for address in node_addresses.values() if address not in probed]
    results = probe(
        interface,
        [*targets, *extra],
        window=window,
        quiet=quiet,
        retries=retries,
        source_ip=source_ip,
    )
    by_ip = {result.ip: result for result in results}
    macs_of_node: dict[str, tuple[str, ...]] = {
        node: by_ip[address].macs for node, address in node_addresses.items()
    }
    for node, mac in given_macs.items():
        macs_of_node[node] = (mac,)
    owners: dict[str, list[str]] = {}
    for node, macs in macs_of_node.items():
        for mac in macs:
            owners.setdefault(mac, []).append(node)
    entries = []
    for target in targets:
        result = by_ip[target]
        nodes = dict.fromkeys(node for mac in result.macs for node in owners.get(mac, ()))
        entries.append(ArpEntry(target, result.status, result.macs, tuple(nodes)))
    return ArpReport(interface, tuple(entries), macs_of_node)


# --------------------------------------------------------------------------- __main__


def node_pairs(values: Iterable[str], what: str = "MAC") -> dict[str, str]:
    """``NODE=VALUE`` options (``--node-mac``, ``--node-ip``) as a dict; InputError if malformed."""
    pairs = {}
    for value in values:
        node, sep, rest = value.partition("=")
        if not sep or not node or not rest:
            raise InputError(f"{value!r} is not NODE={what}", field=f"--node-{what.lower()}")
        pairs[node] = rest
    return pairs


def main(argv: Sequence[str] | None = None) -> int:
    """JSON front end: ``python -m migrate.verify.arp --interface IF --ip SPEC...``."""
    import argparse
    import json

    parser = argparse.ArgumentParser(
        prog="python -m migrate.verify.arp",
        description="Probe IPs over ARP on one interface and print the result as JSON.",
    )
    parser.add_argument("--interface", "-i", required=True)
    parser.add_argument("--ip", action="append", required=True, help="IP, CIDR or range a-b")
    parser.add_argument("--node-mac", action="append", default=[], metavar="NODE=MAC")
    parser.add_argument("--node-ip", action="append", default=[], metavar="NODE=IP")
    parser.add_argument("--window", type=float, default=DEFAULT_WINDOW)
    parser.add_argument("--quiet", type=float, default=DEFAULT_QUIET)
    parser.add_argument("--retries", type=int, default=1)
    parser.add_argument("--source-ip", type=IPv4Address, help="default: the interface's IPv4")
    parser.add_argument("--watch", type=float, metavar="SECONDS", help="watch instead of probe")
    parser.add_argument("--interval", type=float, default=0.2)
    options = parser.parse_args(argv)
    try:
        if options.watch is not None:
            targets = parse_targets(options.ip)
            for observation in watch(
                options.interface,
                targets,
                options.watch,
                options.interval,
                source_ip=options.source_ip,
            ):
                print(json.dumps(observation.to_json()), flush=True)
            return 0
        report = verify_arp(
            options.interface,
            options.ip,
            node_macs=node_pairs(options.node_mac, "MAC"),
            node_ips=node_pairs(options.node_ip, "IP"),
            window=options.window,
            quiet=options.quiet,
            retries=options.retries,
            source_ip=options.source_ip,
        )
    except MigrateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(json.dumps(report.to_json()))
    return 0 if report.ok else _EXIT_NOT_OK


if __name__ == "__main__":
    sys.exit(main())
