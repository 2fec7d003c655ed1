"""The twin: the user's cluster, emulated in-process from a snapshot folder.

Everything that constructs it sits here, behind :func:`start_twin`: the store loaded from the
snapshot, the controller models (their timing, seed and version bands), the clock, the API
server, and the Kube clients the rehearsal and its "operators" use. The rest of the rehearsal
sees a :class:`Twin` only.

Time comes in two kinds:

- **virtual** (the default): the store's clock is a manual one and only moves when a client
  waits: every ``sleep`` of the engine (its polls, its retry back-offs) advances the twin's
  clock and runs the models up to the new moment, so a 30 s wait costs no wall time, and a run
  with the same seed repeats exactly (clients are single-threaded).
- **real**: the wall clock, the models driven in a background thread, and polls scaled by the
  time scale; the only way the ARP wire (``--wire``) can follow the models as they go.

Every client of the twin is a :class:`TwinKube`: after each request it lets the models handle
what is due at that moment, before the client sends the next one. On the lab of today, whose
models react in the tick of a change, that is a reaction to every single write (a wrong order
of two writes shows, as on a real cluster, where controllers react in milliseconds); on the
asynchronous lab nothing is due yet but what a zero delay makes so.

Each operator of the rehearsal (the apply, a resuming apply after a kill, a rollback) is a
:class:`TwinClient` with an API door of its own: a second API server over the same store, so
its requests are logged apart and faults can be injected into that client alone (a killed
client's requests never reach the store again).
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.apply.executor import ApplyOptions
from migrate.apply.waits import WaitOptions
from migrate.kube import Kube, RetryPolicy
from migrate.lab.faults import FaultSet
from migrate.lab.models import Controllers, build_controllers
from migrate.lab.server import LabServer
from migrate.lab.store import Clock, Store
from migrate.rehearse.records import LabRecords, Request, door_requests

POLL = 0.5
"""Seconds between two looks of a wait: the CLI's default, so the twin's time is a real run's."""
MODELS_TICK = 0.02
"""Seconds between two rounds of the models on a real clock."""


class TwinKube(Kube):
    """A Kube that lets the twin's models run after each of its requests."""

    after_request: Callable[[], None] = staticmethod(lambda: None)

    def request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return super().request(method, path, **kwargs)
        finally:
            self.after_request()


@dataclass
class TwinClient:
    """One operator's client: a Kube over its own API door."""

    name: str
    kube: Kube
    door: LabServer
    twin: Twin
    killed: bool = False
    """Set once the process is "killed": from then on nothing it sends reaches the twin."""

    def sleep(self, seconds: float) -> None:
        """Waiting, as this client does it: the twin's time passes (not after a kill)."""
        if not self.killed:
            self.twin.sleep(seconds)

    def options(self, *, poll: float | None = None) -> ApplyOptions:
        """Apply and rollback options that wait on the twin's clock, one write at a time
        (the same order on every run of a seed)."""
        scale = self.twin.time_scale if not self.twin.virtual else 1.0
        waits = WaitOptions(poll=(poll or POLL) * scale, timeout_scale=1.0,
                            clock=self.twin.now, sleep=self.sleep)
        return ApplyOptions(waits=waits, concurrency=1)

    @property
    def request_count(self) -> int:
        """How many requests its door served."""
        return self.door.request_count

    def requests(self, since: int = 0) -> list[Request]:
        """The requests of this client from its ``since``-th on."""
        return door_requests(self.door, since)

    def close(self) -> None:
        """Release the client and its door."""
        self.kube.close()
        self.door.stop()


@dataclass
class Twin:
    """A running twin (see the module docstring); stop it with :meth:`close`."""

    store: Store
    controllers: Controllers
    server: LabServer
    records: LabRecords
    virtual: bool
    time_scale: float
    seed: int
    skipped: list[str]
    """Snapshot documents the twin could not load (one line each)."""
    workdir: Path
    _cleanup: tempfile.TemporaryDirectory[str]
    clients: list[TwinClient] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    kube: TwinKube = field(init=False)
    """The rehearsal's own client (its reads and checks)."""
    waited: float = 0.0
    """Seconds the clients have waited in all (polls, back-offs; the models' time)."""

    def now(self) -> float:
        """The twin's clock (seconds)."""
        return self.store.clock.now()

    @property
    def lag(self) -> float:
        """The most seconds the models ran behind the real clock, beyond the wait between two
        of their rounds (:data:`MODELS_TICK`); 0 on virtual time."""
        if self.virtual:
            return 0.0
        return max(0.0, self.controllers.lateness - MODELS_TICK)

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` pass in the twin: virtual time moves the clock and runs the models
        up to then; real time sleeps while the models run."""
        self.waited += max(seconds, 0.0)
        if self.virtual:
            self.controllers.advance(max(seconds, 0.0))
            self.records.sample()
        else:
            time.sleep(max(seconds, 0.0))

    def settle(self, seconds: float) -> None:
        """Let the models converge for ``seconds`` of twin time (scaled on a real clock)."""
        if self.virtual:
            remaining = seconds
            while remaining > 0:
                step = min(1.0, remaining)
                self.sleep(step)
                remaining -= step
        else:
            self.sleep(seconds * self.time_scale)

    def client(self, name: str, *, faults: FaultSet | None = None) -> TwinClient:
        """A new operator client with its own API door (and the faults of that door)."""
        door = LabServer(self.store)
        if faults is not None:
            door.faults = faults
        door.start()
        config = door.write_kubeconfig(self.workdir / f"kubeconfig-{len(self.clients)}")
        client = TwinClient(name, self._kube(config), door, self)
        client.kube.retry = RetryPolicy(sleep=client.sleep)
        self.clients.append(client)
        return client

    def react(self) -> None:
        """The models handle what is due now (after a client's request, on virtual time)."""
        if self.virtual:
            self.controllers.run_until_idle()
            self.records.sample()

    def _kube(self, kubeconfig: Path) -> TwinKube:
        kube = TwinKube.from_kubeconfig(str(kubeconfig))
        assert isinstance(kube, TwinKube)
        kube.after_request = self.react
        return kube

    def close(self) -> None:
        """Stop the models' thread, every client and door, the server; remove the workdir."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for client in self.clients:
            client.close()
        self.kube.close()
        self.server.stop()
        self.controllers.close()
        self._cleanup.cleanup()

    def __enter__(self) -> Twin:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drive(twin: Twin) -> None:
    """The models on a real clock: settle, then tell them how much time passed."""
    last = time.monotonic()
    while not twin._stop.is_set():
        twin.controllers.run_until_idle()
        twin.records.sample()
        now = time.monotonic()
        twin.controllers.advance(now - last)
        twin.records.sample()
        last = now
        twin._stop.wait(MODELS_TICK)


def _controllers(store: Store, *, seed: int, time_scale: float) -> Controllers:
    """The models over ``store``: the asynchronous, versioned lab (each process with its own
    seeded delay, version bands read from the snapshot's images)."""
    return build_controllers(store, timing="realistic", seed=seed, time_scale=time_scale)


def start_twin(snapshot_dir: str | Path, *, seed: int = 0, time_scale: float = 1.0,
               virtual: bool = True) -> Twin:
    """Start a twin of the cluster saved in ``snapshot_dir`` (a folder of manifests, as
    ``--save-snapshot`` writes and ``python -m migrate.lab serve`` loads)."""
    if time_scale <= 0:
        raise ValueError("the time scale must be positive")
    clock = Clock.manual() if virtual else Clock.real()
    store, skipped = Store.from_snapshot([snapshot_dir], clock)
    controllers = _controllers(store, seed=seed, time_scale=1.0 if virtual else time_scale)
    records = LabRecords(store, controllers)
    server = LabServer(store).start()
    cleanup = tempfile.TemporaryDirectory(prefix="migrate-twin-")
    workdir = Path(cleanup.name)
    twin = Twin(store, controllers, server, records, virtual, time_scale, seed, skipped,
                workdir, cleanup)
    twin.kube = twin._kube(server.write_kubeconfig(workdir / "kubeconfig"))
    twin.kube.retry = RetryPolicy(sleep=twin.sleep)
    if not virtual:
        twin._thread = threading.Thread(target=_drive, args=(twin,), name="twin-models",
                                        daemon=True)
        twin._thread.start()
    controllers.run_until_idle()
    records.sample()
    return twin
