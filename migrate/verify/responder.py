"""An ARP responder of ours: answers who-has for a set of IPs with one MAC, on one interface.

It stands in for an announcing node (MetalLB speaker or Cilium L2 announcer) on the test wire
and in the lab: it answers ARP *requests* for the IPs it holds (never gratuitous ones), and when
it takes an IP over it sends a broadcast gratuitous ARP request and reply with sender = target =
the IP and its own MAC, like both announcers do [M8][C2]. It sends nothing when it gives an IP up
(neither does MetalLB [M8]).

The set of IPs can change while it runs: ``ArpResponder.set_ips`` from a thread, or, for
``python -m migrate.verify.responder --interface IF --ips-file PATH``, by replacing the file
(re-read when it changes, or at once on SIGHUP). The command prints one JSON line per event on
stdout (``ready``, ``ips``, ``error``) so a test knows when a change is on the wire. Run it inside
a network namespace with ``ip netns exec NS python -m migrate.verify.responder ...``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from types import FrameType
from typing import Any

from migrate.errors import MigrateError
from migrate.verify.arp import (
    BROADCAST_MAC,
    OP_REPLY,
    OP_REQUEST,
    ZERO_MAC,
    ArpSocket,
    build_frame,
    format_mac,
    parse_mac,
)
from migrate.verify.targets import parse_targets

Event = dict[str, Any]


class ArpResponder:
    """Answers ARP for a changing set of IPs on one interface; ``serve`` runs the loop."""

    def __init__(
        self,
        interface: str,
        *,
        mac: str | None = None,
        garp_count: int = 1,
        garp_interval: float = 1.0,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self._sock = ArpSocket(interface)
        self.interface = interface
        self.mac = parse_mac(mac) if mac else self._sock.mac
        self.garp_count = garp_count
        self.garp_interval = garp_interval
        self.answered = 0
        self.announced = 0
        self._on_event = on_event or (lambda event: None)
        self._lock = threading.Lock()
        self._owned: set[bytes] = set()
        self._changes: list[tuple[set[bytes], set[bytes]]] = []
        self._garps: dict[bytes, tuple[float, int]] = {}  # ip -> (next due, rounds left)
        self._stop = threading.Event()
        self._reload = threading.Event()

    @property
    def ips(self) -> list[IPv4Address]:
        """The IPs answered for now."""
        with self._lock:
            return sorted(IPv4Address(ip) for ip in self._owned)

    def set_ips(self, ips: Iterable[IPv4Address]) -> None:
        """Answer for exactly ``ips`` from now on; new ones are announced by gratuitous ARP."""
        wanted = {ip.packed for ip in ips}
        with self._lock:
            added, removed = wanted - self._owned, self._owned - wanted
            self._owned = wanted
            if added or removed:
                self._changes.append((added, removed))

    def reload(self) -> None:
        """Re-read the IPs file at once (SIGHUP), even if it looks unchanged."""
        self._reload.set()

    def stop(self) -> None:
        """Make ``serve`` return soon (from another thread or a signal handler)."""
        self._stop.set()

    def close(self) -> None:
        """Close its socket (``serve`` does when it returns)."""
        self._sock.close()

    def serve(self, *, ips_file: Path | None = None, poll: float = 0.05) -> None:
        """Answer requests until ``stop``; re-read ``ips_file`` when it changes."""
        watcher = IpsFile(ips_file) if ips_file else None
        try:
            while not self._stop.is_set():
                self.serve_round(watcher, poll)
        finally:
            self.close()

    def serve_round(self, ips_file: IpsFile | None, poll: float) -> None:
        """One round of :meth:`serve`: a change of ``ips_file``, the requests that came (for
        up to ``poll`` seconds), the gratuitous ARPs due.

        Requests already queued when the file changes are answered first, for the IPs held
        before the change: an announcer answers a request when it arrives, so a reply must
        not depend on how late this process reads it. (Otherwise a responder that is slow to
        run, on a loaded machine, answers a request that came before it took an IP over, in
        the same prober round as the reply of the responder that had it.)"""
        if ips_file and self._reload.is_set():
            self._reload.clear()
            ips_file.force = True
        if ips_file and (ips := ips_file.changed(self._on_event)) is not None:
            if self._sock.wait(0.0):
                self._answer()
            self.set_ips(ips)
        self._apply_changes()
        now = time.monotonic()
        due = min((when for when, _ in self._garps.values()), default=now + poll)
        if self._sock.wait(min(poll, max(due - now, 0.0))):
            self._answer()
        self._send_due_garps()

    def _apply_changes(self) -> None:
        with self._lock:
            changes, self._changes = self._changes, []
        for added, removed in changes:
            for ip in removed:
                self._garps.pop(ip, None)
            now = time.monotonic()
            for ip in added:
                self._garps[ip] = (now, self.garp_count)
            self._send_due_garps()
            self._on_event(
                {
                    "event": "ips",
                    "added": sorted(str(IPv4Address(ip)) for ip in added),
                    "removed": sorted(str(IPv4Address(ip)) for ip in removed),
                    "count": len(self._owned),
                }
            )

    def _answer(self) -> None:
        owned = self._owned  # replaced, never mutated, so reading it needs no lock
        mac = self.mac
        for packet in self._sock.receive():
            if packet.op != OP_REQUEST or packet.gratuitous or packet.target_ip not in owned:
                continue
            reply = build_frame(
                eth_destination=packet.sender_mac,
                eth_source=mac,
                op=OP_REPLY,
                sender_mac=mac,
                sender_ip=packet.target_ip,
                target_mac=packet.sender_mac,
                target_ip=packet.sender_ip,
            )
            if self._sock.send(reply):
                self.answered += 1

    def _send_due_garps(self) -> None:
        now = time.monotonic()
        for ip, (when, left) in list(self._garps.items()):
            if when > now:
                continue
            for op, target_mac in ((OP_REQUEST, ZERO_MAC), (OP_REPLY, BROADCAST_MAC)):
                frame = build_frame(
                    eth_destination=BROADCAST_MAC,
                    eth_source=self.mac,
                    op=op,
                    sender_mac=self.mac,
                    sender_ip=ip,
                    target_mac=target_mac,
                    target_ip=ip,
                )
                if self._sock.send(frame):
                    self.announced += 1
            if left > 1:
                self._garps[ip] = (now + self.garp_interval, left - 1)
            else:
                del self._garps[ip]


class IpsFile:
    """A file of IP specs (one per line, ``#`` comments), re-read when it changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._signature: tuple[int, int, int] | None = None
        self.force = True

    def changed(self, report: Callable[[Event], None]) -> list[IPv4Address] | None:
        """The IPs the file now lists, or None when it has not changed (or cannot be read:
        then ``report`` gets an ``error`` event and the responder keeps its IPs)."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            signature = (0, 0, 0)
        else:
            signature = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if signature == self._signature and not self.force:
            return None
        self._signature, self.force = signature, False
        if signature == (0, 0, 0):
            return []
        lines = self.path.read_text().splitlines()
        specs = [line.split("#", 1)[0].strip() for line in lines]
        specs = [spec for spec in specs if spec]
        try:
            return parse_targets(specs) if specs else []
        except MigrateError as error:
            report({"event": "error", "message": str(error)})
            return None  # keep the IPs we have


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m migrate.verify.responder --interface IF --ips-file PATH [--ip SPEC...]``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m migrate.verify.responder",
        description="Answer ARP for a set of IPs on one interface (test wire and lab).",
    )
    parser.add_argument("--interface", "-i", required=True)
    parser.add_argument("--ips-file", type=Path, help="IPs/CIDRs/ranges, one a line; re-read")
    parser.add_argument("--ip", action="append", default=[], help="fixed IPs (without a file)")
    parser.add_argument("--mac", help="answer with this MAC instead of the interface's")
    parser.add_argument("--garp-count", type=int, default=1)
    parser.add_argument("--garp-interval", type=float, default=1.0)
    options = parser.parse_args(argv)

    def emit(event: Event) -> None:
        print(json.dumps(event), flush=True)

    try:
        responder = ArpResponder(
            options.interface,
            mac=options.mac,
            garp_count=options.garp_count,
            garp_interval=options.garp_interval,
            on_event=emit,
        )
        if options.ip:
            responder.set_ips(parse_targets(options.ip))
    except MigrateError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            responder.reload()
        else:
            responder.stop()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, on_signal)
    emit({"event": "ready", "interface": options.interface, "mac": format_mac(responder.mac),
          "pid": os.getpid()})
    responder.serve(ips_file=options.ips_file)
    emit({"event": "stopped", "answered": responder.answered, "announced": responder.announced})
    return 0


if __name__ == "__main__":
    sys.exit(main())
