"""The namespace wire: network namespaces joined by a bridge, with ARP responders of ours.

Topology (all inside namespaces this module creates; nothing touches the host's interfaces)::

    <p>cl (client, 198.18.0.2/15) ─┐
    <p>n1 (node, 198.18.0.11/15) ──┼── br0 in <p>sw (the switch)
    <p>n2, <p>n3 ...             ──┘

``<p>`` is a short prefix unique to the process (``mgt<pid % 10000>`` for the tests); every
namespace is deleted by name on exit (``Wire.destroy``, also registered with atexit), and
leftovers with the same prefix are deleted first. Each member has one interface ``eth0``; its
peer ``p<member>`` sits on the bridge. The prober runs in the client namespace through ``ip
netns exec`` (``python -m migrate.verify.arp``), responders in the node namespaces (``python -m
migrate.verify.responder``). ``LabFollower`` keeps the responders answering what the lab's
controller models announce.

Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking) and exist only in these namespaces;
the IPs the responders answer for (a cluster's Service IPs) exist only there too. Used by the
tests (``tests/wire.py`` adds their fixtures), ``migrate rehearse --wire`` and the benchmarks.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

from migrate.errors import MigrateError

PACKAGE_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the ``migrate`` package (put on PYTHONPATH in the namespaces)."""
CLIENT_IP = IPv4Address("198.18.0.2")
NODE_IP_BASE = IPv4Address("198.18.0.10")
PREFIX_LENGTH = 15
VIP_BASE = IPv4Address("198.18.1.0")
INTERFACE = "eth0"
_CLONE_NEWNET = 0x40000000
_T = TypeVar("_T")


class WireError(MigrateError):
    """The wire, a responder or the prober failed."""



def session_prefix() -> str:
    """``mgt<pid % 10000>``: short enough for namespace and interface names."""
    return f"mgt{os.getpid() % 10000}"


def vips(count: int, *, offset: int = 0) -> list[IPv4Address]:
    """``count`` test VIPs from 198.18.1.0 on, skipping ``offset`` first ones."""
    return [VIP_BASE + offset + index for index in range(count)]


def why_no_wire() -> str | None:
    """The reason the wire cannot be built here, or None."""
    if os.geteuid() != 0:
        return "the test wire needs root (network namespaces, CAP_NET_RAW)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) is not installed"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def python_env() -> dict[str, str]:
    """The environment for ``python -m migrate...`` in a namespace: this package on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE_ROOT), env.get("PYTHONPATH")]))
    return env


class Responder:
    """A ``python -m migrate.verify.responder`` process in one namespace, driven by a file."""

    def __init__(self, namespace: str, ips_file: Path, *, garp_count: int = 1) -> None:
        self.namespace = namespace
        self.ips_file = ips_file
        self._write([])
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._ips: list[IPv4Address] = []
        self.process = subprocess.Popen(
            [
                "ip", "netns", "exec", namespace,
                sys.executable, "-m", "migrate.verify.responder",
                "--interface", INTERFACE, "--ips-file", str(ips_file),
                "--garp-count", str(garp_count),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=python_env(),
        )
        threading.Thread(target=self._read_events, daemon=True).start()
        ready = self._next_event("ready")
        self.mac: str = ready["mac"]

    def _read_events(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with contextlib.suppress(json.JSONDecodeError):
                self._events.put(json.loads(line))
        self._events.put({"event": "exited"})

    def _next_event(self, kind: str, timeout: float = 15.0) -> dict[str, Any]:
        while True:
            try:
                event = self._events.get(timeout=timeout)
            except queue.Empty:
                raise WireError(f"responder in {self.namespace}: no {kind!r} event") from None
            if event["event"] == kind:
                return event
            if event["event"] in ("exited", "error"):
                stderr = self.process.stderr.read() if self.process.stderr else ""
                raise WireError(f"responder in {self.namespace}: {event} {stderr}")

    def _write(self, ips: Sequence[IPv4Address]) -> None:
        temporary = self.ips_file.with_suffix(".tmp")
        temporary.write_text("".join(f"{ip}\n" for ip in ips))
        os.replace(temporary, self.ips_file)  # atomic: the responder never reads half a file

    def set_ips(self, ips: Sequence[IPv4Address]) -> None:
        """Answer for exactly ``ips``; returns once the change (and its gratuitous ARP) is out."""
        wanted = list(dict.fromkeys(ips))
        changed = set(wanted) != set(self._ips)
        self._write(wanted)
        self._ips = wanted
        if changed:
            event = self._next_event("ips")
            if event["count"] != len(wanted):
                raise WireError(f"responder in {self.namespace} answers for {event['count']}"
                                f" IPs, not {len(wanted)}")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL)."""
        stop_process(self.process)


class Wire:
    """A switch namespace with a bridge, a client namespace and ``nodes`` node namespaces."""

    def __init__(self, prefix: str | None = None, *, nodes: int = 3) -> None:
        self.prefix = prefix or session_prefix()
        self.switch = f"{self.prefix}sw"
        self.client = f"{self.prefix}cl"
        self.nodes = [f"{self.prefix}n{index}" for index in range(1, nodes + 1)]
        self.node_ips = {node: NODE_IP_BASE + index for index, node in enumerate(self.nodes, 1)}
        self.macs: dict[str, str] = {}
        self._built = False

    @property
    def namespaces(self) -> list[str]:
        """Every namespace of this wire, switch last."""
        return [self.client, *self.nodes, self.switch]

    def build(self) -> None:
        """Create the namespaces, bridge and links (deleting leftovers of the same prefix)."""
        self.destroy()
        self._built = True
        atexit.register(self.destroy)
        for namespace in self.namespaces:
            _ip("netns", "add", namespace)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge", "stp_state", "0")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        members = {self.client: CLIENT_IP, **self.node_ips}
        for namespace, address in members.items():
            port = "p" + namespace.removeprefix(self.prefix)
            _ip("-n", self.switch, "link", "add", port, "type", "veth",
                "peer", "name", INTERFACE, "netns", namespace)
            _ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            _ip("-n", namespace, "addr", "add", f"{address}/{PREFIX_LENGTH}", "dev", INTERFACE)
            _ip("-n", namespace, "link", "set", INTERFACE, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            self.macs[namespace] = self.interface_mac(namespace)

    def interface_mac(self, namespace: str) -> str:
        """The MAC of ``eth0`` in ``namespace``."""
        links = json.loads(_ip("-j", "-n", namespace, "link", "show", INTERFACE).stdout)
        return str(links[0]["address"])

    def destroy(self) -> None:
        """Kill every process in our namespaces (by pid) and delete them (by name)."""
        existing = set(_ip("netns", "list", check=False).stdout.split())
        for namespace in self.namespaces:
            if namespace not in existing:
                continue
            pids = _ip("netns", "pids", namespace, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), signal.SIGKILL)
            _ip("netns", "del", namespace, check=False)
        self._built = False

    def set_hairpin(self, member: str, on: bool) -> None:
        """Make the switch send frames back out of ``member``'s port (a reflecting switch)."""
        port = "p" + member.removeprefix(self.prefix)
        _ip("-n", self.switch, "link", "set", port, "type", "bridge_slave",
            "hairpin", "on" if on else "off")

    def exec_argv(self, namespace: str, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside ``namespace``."""
        return ["ip", "netns", "exec", namespace, *argv]

    def prober_argv(self, args: Sequence[str], namespace: str | None = None) -> list[str]:
        """``python -m migrate.verify.arp --interface eth0 ARGS`` in the client namespace."""
        return self.exec_argv(
            namespace or self.client,
            [sys.executable, "-m", "migrate.verify.arp", "--interface", INTERFACE, *args],
        )

    def probe(
        self, ips: Sequence[IPv4Address | str], *args: str, namespace: str | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Run the prober in the client namespace; (exit code, parsed JSON)."""
        argv = self.prober_argv([*(f"--ip={ip}" for ip in ips), *args], namespace)
        done = subprocess.run(argv, capture_output=True, text=True, env=python_env(), timeout=60)
        if done.returncode not in (0, 4):
            raise WireError(f"prober failed ({done.returncode}): {done.stderr}")
        return done.returncode, json.loads(done.stdout)

    def responder(self, namespace: str, ips_file: Path, *, garp_count: int = 1) -> Responder:
        """Start a responder of ours on ``eth0`` of ``namespace``, answering for nothing yet."""
        return Responder(namespace, ips_file, garp_count=garp_count)


class Watcher:
    """``python -m migrate.verify.arp --watch`` in the client namespace, lines collected."""

    def __init__(self, wire: Wire, ips: Sequence[IPv4Address], *, seconds: float,
                 interval: float = 0.05) -> None:
        argv = wire.prober_argv(
            [*(f"--ip={ip}" for ip in ips), "--watch", str(seconds), "--interval", str(interval)]
        )
        self.process = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env()
        )
        self.observations: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.seen: list[dict[str, Any]] = []

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.observations.put(json.loads(line))
        self.observations.put(None)

    def next(self, timeout: float = 15.0) -> dict[str, Any]:
        """The next observation (raises when the watcher ended or stalled)."""
        item = self.observations.get(timeout=timeout)
        if item is None:
            stderr = self.process.stderr.read() if self.process.stderr else ""
            raise WireError(f"watcher ended: {stderr}")
        self.seen.append(item)
        return item

    def until(self, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        """Read observations until ``predicate(observation)`` holds."""
        while True:
            observation = self.next(timeout)
            if predicate(observation):
                return observation

    def stop(self) -> None:
        """Stop the watcher process."""
        stop_process(self.process)


# --------------------------------------------------------------------------- processes


def stop_process(process: subprocess.Popen[str]) -> None:
    """Stop a process we started, by its pid (SIGTERM, then SIGKILL), and close its pipes."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for stream in (process.stdout, process.stderr):
        if stream:
            stream.close()


def json_lines_of(process: subprocess.Popen[str], timeout: float = 30.0
                  ) -> tuple[int, list[dict[str, Any]], str]:
    """Wait for ``process`` (stopped if it hangs): its exit code, its stdout as JSON lines, its
    stderr."""
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        stop_process(process)
    return process.returncode, [json.loads(line) for line in out.splitlines()], err


# --------------------------------------------------------------------------- lab helpers

STACKS = ("metallb", "cilium")


def run_in_namespace(namespace: str, function: Callable[[], _T]) -> _T:
    """Call ``function`` in a helper thread that has entered network namespace ``namespace``.

    Only that thread changes namespace (``setns`` acts on the calling thread), so sockets it
    creates (a listening one, say) live in ``namespace`` while the rest of the process stays
    where it was. Threads it starts stay in ``namespace`` too.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    outcome: dict[str, Any] = {}

    def enter_and_call() -> None:
        try:
            with open(f"/run/netns/{namespace}") as handle:
                if libc.setns(handle.fileno(), _CLONE_NEWNET) != 0:
                    error = ctypes.get_errno()
                    raise OSError(error, f"setns {namespace}: {os.strerror(error)}")
            outcome["value"] = function()
        except BaseException as error:  # handed to the caller
            outcome["error"] = error

    helper = threading.Thread(target=enter_and_call, name=f"in-{namespace}")
    helper.start()
    helper.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]  # type: ignore[no-any-return]


class LabFollower:
    """Keeps node responders answering exactly what the lab's controller models announce.

    ``announcements`` is the lab's view (``Controllers.announcements``: IP → who answers, with
    ``metallb_nodes`` and ``cilium_nodes``); ``responders`` holds one responder per (lab node,
    stack), stack ``metallb`` (the speaker) or ``cilium`` (the lease holder), so both stacks of
    a node, or of two nodes, can answer at once when the models say so. Each change is applied
    break before make: every responder first drops what it loses, then takes what it gains, so
    the follower never puts two announcers on the wire that the models did not.
    """

    def __init__(self, announcements: Callable[[], Mapping[str, Any]],
                 responders: Mapping[tuple[str, str], Responder], *, poll: float = 0.05) -> None:
        self._announcements = announcements
        self.responders = dict(responders)
        self.poll = poll
        self.applied: dict[tuple[str, str], frozenset[IPv4Address]] = {
            key: frozenset() for key in self.responders}
        self.history: list[tuple[float, dict[tuple[str, str], frozenset[IPv4Address]]]] = []
        self._stop = threading.Event()
        self._synced = threading.Condition()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lab-follower", daemon=True)

    def view(self) -> dict[tuple[str, str], frozenset[IPv4Address]]:
        """What each (node, stack) should answer for, per the models now."""
        wanted: dict[tuple[str, str], set[IPv4Address]] = {key: set() for key in self.responders}
        for ip, announcers in self._announcements().items():
            for stack in STACKS:
                for node in getattr(announcers, f"{stack}_nodes"):
                    if (node, stack) in wanted:
                        wanted[(node, stack)].add(IPv4Address(ip))
        return {key: frozenset(ips) for key, ips in wanted.items()}

    def start(self) -> LabFollower:
        """Follow in a background thread."""
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                wanted = self.view()
                if wanted != self.applied:
                    self._apply(wanted)
                with self._synced:
                    self._synced.notify_all()
                self._stop.wait(self.poll)
        except BaseException as error:  # re-raised by wait_synced / stop
            self._error = error
            with self._synced:
                self._synced.notify_all()

    def _apply(self, wanted: dict[tuple[str, str], frozenset[IPv4Address]]) -> None:
        for key, responder in self.responders.items():
            kept = self.applied[key] & wanted[key]
            if kept != self.applied[key]:
                responder.set_ips(sorted(kept))
                self.applied[key] = kept
        for key, responder in self.responders.items():
            if wanted[key] != self.applied[key]:
                responder.set_ips(sorted(wanted[key]))
                self.applied[key] = wanted[key]
        self.history.append((time.time(), dict(wanted)))

    def wait_synced(self, timeout: float = 15.0) -> None:
        """Return once the responders answer what the models announce at this moment."""
        deadline = time.monotonic() + timeout
        with self._synced:
            while True:
                if self._error is not None:
                    raise WireError(f"lab follower failed: {self._error!r}")
                if self.applied == self.view():
                    return
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WireError("lab follower did not catch up with the models")
                self._synced.wait(min(remaining, self.poll * 4))

    def stop(self) -> None:
        """Stop following (responders keep their IPs until stopped)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=20)
        if self._error is not None:
            raise WireError(f"lab follower failed: {self._error!r}")
