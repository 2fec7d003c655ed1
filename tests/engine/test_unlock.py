"""`migrate unlock` against the lab: it shows the lock, refuses while its holder renews it,
frees the lock of a run that died, and apply then works again."""

from __future__ import annotations

import threading
import time

import pytest

from migrate.apply.executor import apply_stage
from migrate.apply.lock import LOCK_NAME, MigrationLock, read_lock
from migrate.apply.state import STATE_LABELS, now_rfc3339
from migrate.errors import BlockedError
from migrate.plan.api import make_plan
from migrate.sources.live import read_live
from tests.engine.conftest import Cluster, ClusterFactory, fast_options
from tests.helpers import run_cli

DEAD = "bob@laptop (pid 4242) run 0badc0"


def _unlock(cluster: Cluster, *args: str) -> tuple[int, str, str]:
    result = run_cli("unlock", "--kubeconfig", str(cluster.kubeconfig), *args)
    return result.exit_code, result.stdout, result.stderr


def _dead_run_lock(cluster: Cluster, duration: int = 3) -> None:
    """The Lease a run leaves when it dies: held, renewed once, never again."""
    now = now_rfc3339()
    cluster.kube.create({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": LOCK_NAME, "namespace": "kube-system",
                     "labels": dict(STATE_LABELS)},
        "spec": {"holderIdentity": DEAD, "leaseDurationSeconds": duration,
                 "acquireTime": now, "renewTime": now}})


def test_a_free_lock_needs_no_unlock(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory("guide-single-pool")
    code, out, _ = _unlock(cluster)
    assert code == 0
    assert out == "The migration lock in namespace kube-system is free: nothing to unlock.\n"


def test_the_lock_of_a_run_that_died_is_shown_and_freed(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    _dead_run_lock(cluster)
    with pytest.raises(BlockedError, match="migrate unlock"):
        apply_stage(cluster.kube, plan, "pin", options=fast_options())
    status = run_cli("status", "--kubeconfig", str(cluster.kubeconfig))
    assert f"Lock: held by {DEAD}" in status.stdout and "migrate unlock" in status.stdout

    started = time.monotonic()
    code, out, err = _unlock(cluster, "--yes")
    assert code == 0, err
    assert time.monotonic() - started >= 1.5  # watched one and a half renew intervals
    lines = out.splitlines()
    assert lines[:2] == [f"Lock Lease kube-system/{LOCK_NAME}", f"  held by:  {DEAD}"]
    assert lines[2].startswith("  acquired: ") and lines[3].startswith("  renewed:  ")
    assert lines[4].startswith(("  expires:  ", "  expired:  ")) and "UTC (" in lines[4]
    assert lines[-1].startswith(f"Freed the migration lock held by {DEAD}.")
    assert "wait: no renewal of Lease kube-system/lbmigrate-lock for 2s: 2/2, done in" in err

    assert read_lock(cluster.kube, "kube-system") is None
    assert "Lock: free" in run_cli("status", "--kubeconfig", str(cluster.kubeconfig)).stdout
    assert apply_stage(cluster.kube, plan, "pin", options=fast_options()).outcome == "applied"


def test_a_lock_still_renewed_is_not_freed(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory("guide-single-pool")
    # renewed every 2 s, watched for 3 s: a renewal late by up to a second is still seen
    alive = MigrationLock(cluster.kube, "kube-system", duration=6, identity="alice@ws (pid 7)")
    alive.acquire()
    try:
        code, out, err = _unlock(cluster, "--yes", "--quiet")
        assert code == 3, (out, err)
        assert "held by:  alice@ws (pid 7)" in out
        assert "the lock is alive: alice@ws (pid 7) renewed it while we watched" in err
        assert err.count("\n") == 1  # --quiet: the error alone, no progress
        held = read_lock(cluster.kube, "kube-system")
        assert held is not None and held.holder == "alice@ws (pid 7)"
        alive.check()  # the run that holds it never noticed
    finally:
        alive.release()


def test_a_lock_released_while_watched_needs_no_unlock(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory("guide-single-pool")
    finishing = MigrationLock(cluster.kube, "kube-system", duration=30, identity="carol (pid 9)")
    finishing.acquire()
    timer = threading.Timer(1.0, finishing.release)
    timer.start()
    try:
        # 30 s lease: a 15 s watch, cut short when the holder releases the lock after 1 s
        code, out, err = _unlock(cluster, "--yes")
    finally:
        timer.join()
    assert code == 0, err
    assert out.endswith("Its holder released the lock meanwhile: nothing to unlock.\n")


def test_a_holder_that_runs_on_after_unlock_stops_before_its_next_write(
        cluster_factory: ClusterFactory) -> None:
    """Frozen for longer than the watch (a paused laptop), the run wakes up to a lock that is
    no longer its own: its next renewal fails, and its guard stops it."""
    cluster = cluster_factory("guide-single-pool")
    paused = MigrationLock(cluster.kube, "kube-system", duration=3, identity="dave (pid 11)")
    paused.acquire()
    paused._stop.set()  # its renewals pause
    assert paused._thread is not None
    paused._thread.join()
    code, _, err = _unlock(cluster, "--yes")
    assert code == 0, err
    paused._stop.clear()
    paused._renew_once()
    with pytest.raises(BlockedError, match="another run holds it now"):
        paused.check()


def test_unlock_asks_first(cluster_factory: ClusterFactory) -> None:
    cluster = cluster_factory("guide-single-pool")
    _dead_run_lock(cluster)
    code, _, err = _unlock(cluster)
    assert code == 2 and "confirm with --yes" in err
    assert read_lock(cluster.kube, "kube-system") is not None
