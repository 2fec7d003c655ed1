"""``migrate rehearse --wire``: the twin's nodes answer ARP in network namespaces of ours, as
the models say, while a prober watches every IP.

One namespace per node of the twin, with two responders each (MetalLB's speaker and Cilium's
lease holder, so both stacks of a node, or of two nodes, can answer at once when the models
say so), kept in line with the models by ``migrate.lab.wire.LabFollower``; a client namespace
where ``python -m migrate.verify.arp --watch`` asks for every IPv4 Service IP in rounds.
Everything is in namespaces created here (``mgr<pid>`` prefix) and deleted by name at the end;
no frame goes to the host's interfaces. Needs root (namespaces, raw sockets) and a real clock.
"""

from __future__ import annotations

import contextlib
import os
import queue
import tempfile
from collections.abc import Iterator, Sequence
from ipaddress import IPv4Address, ip_address
from pathlib import Path
from typing import Any

from migrate.errors import CapabilityError
from migrate.rehearse.model import IpCutover, Problem
from migrate.rehearse.twin import Twin

ROUND = 0.05
"""Seconds per probe round."""


def wire_prefix() -> str:
    """``mgr<pid % 10000>``: this process's namespaces (the tests use ``mgt``)."""
    return f"mgr{os.getpid() % 10000}"


class WireWatch:
    """The wire around a twin, from :meth:`start` to :meth:`finish`."""

    def __init__(self, twin: Twin, ips: Sequence[str]) -> None:
        self.twin = twin
        self.ips = sorted({ip for ip in ips if isinstance(ip_address(ip), IPv4Address)},
                          key=lambda text: int(IPv4Address(text)))
        self.observations: list[dict[str, Any]] = []
        self.node_of_mac: dict[str, str] = {}
        self._stack = contextlib.ExitStack()
        self._watcher: Any = None

    def start(self) -> WireWatch:
        """Build the namespaces, start the responders, the follower and the prober."""
        from migrate.lab.wire import LabFollower, Watcher, Wire, why_no_wire

        reason = why_no_wire()
        if reason:
            raise CapabilityError(f"--wire: {reason}")
        nodes = sorted(n["metadata"]["name"] for n in self.twin.store.list("", "Node"))
        if not nodes:
            raise CapabilityError("--wire: the snapshot has no Node to put on the wire")
        folder = Path(self._stack.enter_context(tempfile.TemporaryDirectory(
            prefix="migrate-wire-")))
        wire = Wire(wire_prefix(), nodes=len(nodes))
        self._stack.callback(wire.destroy)
        wire.build()
        namespace_of = dict(zip(nodes, wire.nodes, strict=True))
        self.node_of_mac = {wire.macs[ns]: node for node, ns in namespace_of.items()}
        responders = {}
        for node, namespace in namespace_of.items():
            for stack in ("metallb", "cilium"):
                responder = wire.responder(namespace, folder / f"{namespace}-{stack}.ips")
                self._stack.callback(responder.stop)
                responders[(node, stack)] = responder
        follower = LabFollower(self.twin.records.announcers_view, responders).start()
        self._stack.callback(follower.stop)
        follower.wait_synced()
        self._watcher = Watcher(wire, [IPv4Address(ip) for ip in self.ips], seconds=24 * 3600,
                                interval=ROUND)
        self._stack.callback(self._watcher.stop)
        return self

    def finish(self) -> None:
        """Stop everything (namespaces deleted by name) and keep what the prober saw."""
        try:
            if self._watcher is not None:
                self._watcher.stop()
                self.observations = list(_drain(self._watcher.observations))
        finally:
            self._stack.close()

    def __enter__(self) -> WireWatch:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.finish()

    # -- what the prober saw ----------------------------------------------------------------
    def rounds(self, ip: str) -> list[tuple[float, tuple[str, ...]]]:
        """(start of the round, the nodes whose MACs answered ``ip``) per round."""
        out = []
        for seen in self.observations:
            macs = seen.get("macs", {}).get(ip) or []
            out.append((float(seen["started"]), tuple(sorted(
                self.node_of_mac.get(mac, mac) for mac in macs))))
        return out

    def attach(self, cutover: list[IpCutover], window: tuple[float, float] | None) -> None:
        """Add what the wire showed to each IP's cutover (times relative to the window)."""
        start, end = window if window is not None else (0.0, 0.0)
        for item in cutover:
            if item.ip not in self.ips:
                continue
            rounds = self.rounds(item.ip)
            changes: list[dict[str, Any]] = []
            for at, nodes in rounds:
                if start <= at <= end and (not changes or changes[-1]["nodes"] != list(nodes)):
                    changes.append({"at": round(at - start, 3), "nodes": list(nodes)})
            item.wire = {"rounds": len(rounds),
                         "doubledRounds": sum(1 for _, nodes in rounds if len(nodes) > 1),
                         "longestSilence": round(_longest_silence(rounds), 3),
                         "cutoverSilence": round(_longest_silence(
                             [(at, n) for at, n in rounds if start <= at <= end]), 3),
                         "answers": changes}

    def problems(self) -> list[Problem]:
        """I2 on the wire: rounds with two MACs for one IP, IPs silent at the end."""
        found = []
        for ip in self.ips:
            rounds = self.rounds(ip)
            doubled = [nodes for _, nodes in rounds if len(nodes) > 1]
            if doubled:
                found.append(Problem("I2", f"IP {ip}", f"answered by {', '.join(doubled[0])} at"
                                     f" once in {len(doubled)} probe round(s) on the wire",
                                     "Two announcers on the wire: see the stage where the"
                                     " models had two (the table), and its remedy.", "wire"))
            if rounds and not rounds[-1][1]:
                found.append(Problem("I2", f"IP {ip}", "nobody answered it on the wire at the"
                                     " end", "See `migrate verify` in the table.", "wire"))
        return found

    def summary(self) -> dict[str, Any]:
        """Rounds, and per IP the doubled rounds and the longest silence."""
        return {"rounds": len(self.observations), "interval": ROUND,
                "ips": {ip: {"doubledRounds": sum(1 for _, n in self.rounds(ip) if len(n) > 1),
                             "longestSilence": round(_longest_silence(self.rounds(ip)), 3)}
                        for ip in self.ips}}


def _longest_silence(rounds: Sequence[tuple[float, tuple[str, ...]]]) -> float:
    """The longest run of rounds nobody answered in, after one that was answered."""
    longest = 0.0
    since: float | None = None
    answered = False
    for at, nodes in rounds:
        if nodes:
            if since is not None:
                longest = max(longest, at - since)
            since = None
            answered = True
        elif answered and since is None:
            since = at
    if since is not None and rounds:
        longest = max(longest, rounds[-1][0] - since)
    return longest


def _drain(observations: queue.Queue[dict[str, Any] | None]) -> Iterator[dict[str, Any]]:
    while True:
        try:
            item = observations.get(timeout=2.0)
        except queue.Empty:
            return
        if item is None:
            return
        yield item
