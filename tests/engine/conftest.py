"""A running emulated cluster per test: the lab API server over a scenario snapshot, with the
controller models, and migrate's client for it.

``cluster_factory`` runs the models on the real clock in a background thread, with the instant
timing by default (what the engine tests that predate the asynchronous lab rely on).
``virtual_cluster_factory`` runs them on virtual time: a manual clock that only moves when the
engine waits (its ``WaitOptions`` clock and sleep are the lab's, see ``Cluster.options``), so a
30 s grace period costs no wall time and a run is the same for the same seed; its timing is
realistic by default.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from migrate.apply.executor import ApplyOptions, apply_stage
from migrate.apply.waits import WaitOptions
from migrate.guards import Guards, disabled
from migrate.kube import Kube, RetryPolicy
from migrate.lab.models import Controllers, Timing, build_controllers
from migrate.lab.server import LabServer
from migrate.lab.store import Clock, StatusWrite, Store
from migrate.plan.model import Plan
from migrate.plan.views import ingress_ips
from tests.conftest import TESTDATA

CLUSTERS = TESTDATA / "clusters"
SCENARIOS = sorted(p.name for p in CLUSTERS.iterdir() if p.is_dir())


@dataclass
class Cluster:
    """An emulated cluster and a Kube client for it."""

    store: Store
    server: LabServer
    controllers: Controllers
    kube: Kube
    kubeconfig: Path
    scenario: Path
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    virtual: bool = False
    """True when the lab runs on virtual time (nothing moves unless someone waits)."""

    def settle(self, seconds: float = 0.3) -> None:
        """Let the controllers catch up (on virtual time: let ``seconds`` of lab time pass)."""
        if self.virtual:
            self.controllers.advance(seconds)
            return
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            self.controllers.run_until_idle()
            time.sleep(0.02)

    def waits(self, *, poll: float = 0.5, timeout_scale: float = 1.0) -> WaitOptions:
        """Wait options for the engine on this lab: on virtual time its clock is the lab's and
        its sleep moves the lab's clock."""
        if not self.virtual:
            return WaitOptions(poll=0.05, timeout_scale=0.1)
        return WaitOptions(poll=poll, timeout_scale=timeout_scale, clock=self.controllers.now,
                           sleep=self.controllers.sleep)

    def options(self, **kwargs: object) -> ApplyOptions:
        """Apply options whose waits run on this lab's time (see :meth:`waits`)."""
        return ApplyOptions(waits=self.waits(), **kwargs)  # type: ignore[arg-type]

    def ip_changes(self, expected: Mapping[str, list[str]]) -> list[StatusWrite]:
        """Every status write that changed or emptied the IPs of one of these Services."""
        return [write for write in self.store.status_writes
                if f"{write.namespace}/{write.name}" in expected and write.before
                and sorted(write.after) != sorted(expected[f"{write.namespace}/{write.name}"])]

    def assert_ips_kept(self, expected: Mapping[str, list[str]], *, now: bool = True) -> None:
        """I1 as the lab saw it: no status write ever changed or emptied one of these Services'
        IPs, and (``now``) each has exactly them at this moment."""
        assert self.ip_changes(expected) == []
        if not now:
            return
        services = {f"{s['metadata']['namespace']}/{s['metadata']['name']}": s
                    for s in self.store.list("", "Service")}
        for key, ips in expected.items():
            assert ingress_ips(services[key]) == ips, key

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.kube.close()
        self.server.stop()
        self.controllers.close()


def altered_scenario(folder: Path, base: str,
                     edits: Mapping[str, Sequence[tuple[str, str]]]) -> Path:
    """A copy of testdata/clusters/``base`` in ``folder``, with each file's ``(old, new)``
    replacements made (each ``old`` must be there); a file that does not exist is written
    from the ``new`` of its one ``("", new)`` edit."""
    shutil.copytree(CLUSTERS / base, folder)
    for name, changes in edits.items():
        path = folder / name
        text = path.read_text() if path.exists() else ""
        for old, new in changes:
            assert old in text, (name, old)
            text = text.replace(old, new) if old else text + new
        path.write_text(text)
    return folder


def apply_through(cluster: Cluster, plan: Plan, last: str | None = None, *,
                  settle: float = 5.0) -> None:
    """Apply the plan's stages in order on the lab's time, up to and including ``last`` (all
    when None), letting the lab settle ``settle`` seconds after each one applied now (those
    applied before are passed over)."""
    for stage in plan.stages:
        result = apply_stage(cluster.kube, plan, stage.name, options=cluster.options())
        assert result.outcome in ("applied", "already-applied"), stage.name
        if result.outcome == "applied":
            cluster.settle(settle)
        if stage.name == last:
            return


GUARDED = pytest.mark.parametrize("guarded", [True, False], ids=["guarded", "unguarded"])
"""Run a hazard test twice: as the engine is, and with the guard against the hazard off."""


def unless(guarded: bool, *names: str) -> AbstractContextManager[Guards | None]:
    """The guards ``names`` of :mod:`migrate.guards` turned off inside the block, unless
    ``guarded``."""
    return nullcontext() if guarded else disabled(*names)


def fast_options(**kwargs: object) -> ApplyOptions:
    """Apply options for tests: quick polls, short waits."""
    return ApplyOptions(waits=WaitOptions(poll=0.05, timeout_scale=0.1), **kwargs)  # type: ignore[arg-type]


def _run(controllers: Controllers, stop: threading.Event) -> None:
    last = time.monotonic()
    while not stop.is_set():
        controllers.run_until_idle()
        now = time.monotonic()
        controllers.advance(now - last)
        last = now
        stop.wait(0.02)


ClusterFactory = Callable[..., Cluster]


def _served(store: Store, controllers: Controllers, kubeconfig: Path, scenario: Path, *,
            virtual: bool) -> Cluster:
    """The lab API server over ``store`` and a client for it."""
    server = LabServer(store).start()
    server.write_kubeconfig(kubeconfig)
    kube = Kube.from_kubeconfig(str(kubeconfig), retry=RetryPolicy(attempts=4, base_delay=0.01))
    return Cluster(store, server, controllers, kube, kubeconfig, scenario, virtual=virtual)


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Start emulated clusters from testdata/clusters/<name> (or a folder of the test's own) on
    the real clock: ``start(name, timing="instant", seed=0, time_scale=1.0)``; all stopped at
    teardown."""
    started: list[Cluster] = []

    def start(name: str | Path, *, timing: str | Timing = "instant", seed: int = 0,
              time_scale: float = 1.0) -> Cluster:
        scenario = name if isinstance(name, Path) else CLUSTERS / name
        store, skipped = Store.from_snapshot([scenario], Clock.real())
        assert not skipped, skipped
        controllers = build_controllers(store, timing=timing, seed=seed, time_scale=time_scale)
        controllers.run_until_idle()
        cluster = _served(store, controllers, tmp_path / f"kubeconfig-{len(started)}",
                          scenario, virtual=False)
        cluster._thread = threading.Thread(target=_run, args=(controllers, cluster._stop),
                                           daemon=True)
        cluster._thread.start()
        started.append(cluster)
        cluster.settle()
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()


@pytest.fixture
def virtual_cluster_factory(tmp_path: Path) -> Iterator[ClusterFactory]:
    """Start emulated clusters from testdata/clusters/<name> on virtual time:
    ``start(name, timing="realistic", seed=0)``. Nothing runs in the background: the lab moves
    when the engine waits through ``cluster.options()`` / ``cluster.waits()``, or when the
    test calls ``cluster.settle(seconds)``. All stopped at teardown."""
    started: list[Cluster] = []

    def start(name: str | Path, *, timing: str | Timing = "realistic", seed: int = 0) -> Cluster:
        scenario = name if isinstance(name, Path) else CLUSTERS / name
        store, skipped = Store.from_snapshot([scenario], Clock.manual())
        assert not skipped, skipped
        controllers = build_controllers(store, timing=timing, seed=seed)
        cluster = _served(store, controllers, tmp_path / f"kubeconfig-virtual-{len(started)}",
                          scenario, virtual=True)
        started.append(cluster)
        cluster.settle(1.0)
        return cluster

    try:
        yield start
    finally:
        for cluster in started:
            cluster.stop()
