"""The test wire's fixtures: ``wire`` (a session's namespaces) and ``responders``.

The wire itself (namespaces, responders, the prober, the lab follower) lives in
``migrate.lab.wire``, which ``migrate rehearse --wire`` uses too; this module re-exports it for
the tests and ``benchmarks/arp_scale.py``, and adds what only pytest needs. Fixtures ``wire`` and
``responders`` are imported by ``tests/verify/conftest.py``; import them the same way elsewhere
(``from tests.wire import responders, wire``).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from migrate.lab.wire import (
    CLIENT_IP,
    INTERFACE,
    NODE_IP_BASE,
    PREFIX_LENGTH,
    STACKS,
    VIP_BASE,
    LabFollower,
    Responder,
    Watcher,
    Wire,
    WireError,
    json_lines_of,
    python_env,
    run_in_namespace,
    session_prefix,
    stop_process,
    vips,
    why_no_wire,
)

__all__ = [
    "CLIENT_IP", "INTERFACE", "NODE_IP_BASE", "PREFIX_LENGTH", "STACKS", "VIP_BASE",
    "LabFollower", "Responder", "Watcher", "Wire", "WireError", "built_wire", "json_lines_of",
    "python_env", "responders", "run_in_namespace", "session_prefix", "stop_process", "vips",
    "why_no_wire", "wire",
]


class _Buildable(Protocol):
    def build(self) -> Any: ...

    def destroy(self) -> None: ...


_W = TypeVar("_W", bound=_Buildable)


def built_wire(wire: _W, why_not: Callable[[], str | None] = why_no_wire) -> Iterator[_W]:
    """Build a wire (``Wire``, or anything with ``build`` and ``destroy``, such as the BGP
    wire with ``why_not=why_no_bgp_wire``) for a fixture to yield, skip when ``why_not`` gives
    a reason or namespaces cannot be made, and always tear it down by name."""
    reason = why_not()
    if reason:
        pytest.skip(reason)
    try:
        wire.build()
    except subprocess.CalledProcessError as error:
        wire.destroy()
        pytest.skip(f"cannot build network namespaces here: {error.stderr.strip()}")
    try:
        yield wire
    finally:
        wire.destroy()


@pytest.fixture(scope="session")
def wire() -> Iterator[Wire]:
    """The session's test wire (3 nodes); skips when it cannot be built here."""
    yield from built_wire(Wire())


@pytest.fixture
def responders(wire: Wire, tmp_path: Path) -> Iterator[dict[str, Responder]]:
    """One responder per node namespace, answering for nothing; stopped after the test."""
    started: dict[str, Responder] = {}
    try:
        for node in wire.nodes:
            started[node] = wire.responder(node, tmp_path / f"{node}.ips")
        yield started
    finally:
        for responder in started.values():
            responder.stop()


