"""The migration lock: a coordination.k8s.io Lease with a holder and an expiry, renewed while
the tool works, so a second ``apply`` or ``rollback`` fails fast and names who holds it."""

from __future__ import annotations

import contextlib
import datetime as _dt
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType

from migrate.apply.state import STATE_LABELS, now_rfc3339, operator_identity
from migrate.errors import BlockedError
from migrate.kube import Kube, KubeError, Obj

LOCK_NAME = "lbmigrate-lock"


def _parse_time(text: str | None) -> _dt.datetime | None:
    if not text:
        return None
    try:
        return _dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def lock_holder(lease: Obj | None) -> tuple[str, _dt.datetime] | None:
    """Who holds the lock and until when, if it is held and not expired."""
    if lease is None:
        return None
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    renewed = _parse_time(spec.get("renewTime")) or _parse_time(spec.get("acquireTime"))
    if not holder or renewed is None:
        return None
    expiry = renewed + _dt.timedelta(seconds=int(spec.get("leaseDurationSeconds") or 30))
    if expiry <= _dt.datetime.now(_dt.UTC):
        return None
    return str(holder), expiry


class MigrationLock:
    """Hold the lock for the life of a ``with`` block; renew it in the background."""

    def __init__(self, kube: Kube, namespace: str, *, duration: int = 30,
                 identity: str | None = None) -> None:
        self.kube = kube
        self.namespace = namespace
        self.duration = duration
        # Each run is its own holder, even two in one process.
        self.identity = identity or f"{operator_identity()} run {secrets.token_hex(3)}"
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.renew_error: Exception | None = None
        self.lost = False
        self._renewed = time.monotonic()

    def _body(self, resource_version: str | None) -> Obj:
        now = now_rfc3339()
        metadata: Obj = {"name": LOCK_NAME, "namespace": self.namespace,
                         "labels": dict(STATE_LABELS)}
        if resource_version:
            metadata["resourceVersion"] = resource_version
        return {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                     "acquireTime": now, "renewTime": now},
        }

    def acquire(self) -> None:
        """Take the lock, or raise BlockedError naming the holder and the expiry."""
        lease = self.kube.try_get("coordination.k8s.io/v1", "Lease", LOCK_NAME, self.namespace)
        held = lock_holder(lease)
        if held is not None and held[0] != self.identity:
            raise BlockedError(
                f"another migrate run holds the lock: {held[0]}, until"
                f" {held[1].strftime('%H:%M:%S')} UTC (Lease {self.namespace}/{LOCK_NAME})"
            )
        try:
            if lease is None:
                self.kube.create(self._body(None))
            else:
                self.kube.replace(self._body(lease["metadata"].get("resourceVersion")))
        except KubeError as error:
            # A 409 can answer the retry of our own write whose first answer was lost (a
            # timeout after the server stored it): then the lock is ours, and refusing would
            # leave it held by nobody running until it expires.
            if error.status != 409:
                raise
        if not self._ours():
            raise BlockedError("another migrate run took the lock at the same moment; try again")
        self._renewed = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._renew, name="lbmigrate-lock",
                                        daemon=True)
        self._thread.start()

    def _ours(self) -> bool:
        """Whether the Lease names this run as its holder (read back after taking it: a create
        whose answer was lost is retried by looking, and finds whoever created it)."""
        lease = self.kube.try_get("coordination.k8s.io/v1", "Lease", LOCK_NAME, self.namespace)
        return ((lease or {}).get("spec") or {}).get("holderIdentity") == self.identity

    def _renew(self) -> None:
        while not self._stop.wait(self.duration / 3):
            try:
                # Renew only while the lease is still ours: after an expiry another run may
                # hold it, and a blind write would take it back from under that run.
                self.kube.patch("coordination.k8s.io/v1", "Lease", LOCK_NAME, [
                    {"op": "test", "path": "/spec/holderIdentity", "value": self.identity},
                    {"op": "replace", "path": "/spec/renewTime", "value": now_rfc3339()},
                ], namespace=self.namespace, json_patch=True)
                self._renewed = time.monotonic()
            except KubeError as error:
                self.renew_error = error
                if error.status == 422:  # the test failed: someone else holds the lease
                    self.lost = True
                    return
            except Exception as error:  # keep trying; check() tells when it is too late
                self.renew_error = error

    def check(self) -> None:
        """Raise BlockedError when the lock may no longer be ours (taken over, or not renewed
        for a whole lease duration): a run stops rather than write beside another."""
        stale = time.monotonic() - self._renewed > self.duration
        if self.lost or stale:
            why = "another run holds it now" if self.lost else (
                f"it could not be renewed for {self.duration}s ({self.renew_error})")
            raise BlockedError(f"lost the migration lock: {why}; stopped before the next write."
                               " Run the same command again to resume.")

    def release(self) -> None:
        """Stop renewing and free the lock."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.lost:
            return  # another run holds it now: leave its lease alone
        # Free it only if it is still ours (the test fails, 422, when another run took it);
        # if this fails for another reason the lock expires on its own.
        with contextlib.suppress(KubeError):
            self.kube.patch("coordination.k8s.io/v1", "Lease", LOCK_NAME, [
                {"op": "test", "path": "/spec/holderIdentity", "value": self.identity},
                {"op": "remove", "path": "/spec/holderIdentity"},
                {"op": "remove", "path": "/spec/renewTime"},
            ], namespace=self.namespace, json_patch=True)

    def __enter__(self) -> MigrationLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


@contextlib.contextmanager
def held_lock(kube: Kube, namespace: str, *, enabled: bool, duration: int) -> Iterator[
    Callable[[], None]
]:
    """Hold the migration lock inside the block and yield a guard to call before each write
    (it raises when the lock was lost). No lock at all when ``enabled`` is False, as for a dry
    run, which writes nothing."""
    if not enabled:
        yield lambda: None
        return
    with MigrationLock(kube, namespace, duration=duration) as lock:
        yield lock.check
