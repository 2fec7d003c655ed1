"""The migration lock: a coordination.k8s.io Lease with a holder and an expiry, renewed while
the tool works, so a second ``apply`` or ``rollback`` fails fast and names who holds it."""

from __future__ import annotations

import contextlib
import datetime as _dt
import math
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType

from migrate.apply.state import STATE_LABELS, now_rfc3339, operator_identity
from migrate.apply.waits import Reporter
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
                f" {held[1].strftime('%H:%M:%S')} UTC (Lease {self.namespace}/{LOCK_NAME}); if"
                " that run died, `migrate unlock` frees it"
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
        while not self._stop.wait(renew_interval(self.duration)):
            if not self._renew_once():
                return

    def _renew_once(self) -> bool:
        """Renew the lease once; False when it is no longer ours (stop renewing)."""
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
                return False
        except Exception as error:  # keep trying; check() tells when it is too late
            self.renew_error = error
        return True

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


# ---------------------------------------------------------------------------- unlock

def renew_interval(duration: float) -> float:
    """How often a holder renews the lock (three times per lease duration)."""
    return duration / 3


@dataclass(frozen=True)
class LockState:
    """The lock as its Lease shows it: who holds it, since and until when."""

    namespace: str
    holder: str
    duration: int
    acquired: _dt.datetime | None
    renewed: _dt.datetime | None
    renew_time: str | None
    """``spec.renewTime`` as stored, to free the lock only if it has not been renewed since."""

    @property
    def expiry(self) -> _dt.datetime | None:
        """When the lock expires unless renewed."""
        last = self.renewed or self.acquired
        return None if last is None else last + _dt.timedelta(seconds=self.duration)

    def expired(self, now: _dt.datetime | None = None) -> bool:
        """True when the holder has not renewed the lock for a whole lease duration."""
        expiry = self.expiry
        return expiry is None or expiry <= (now or _dt.datetime.now(_dt.UTC))

    @property
    def watch_seconds(self) -> float:
        """How long to watch for a renewal before concluding the holder stopped: one and a
        half renew intervals, so that one renewal late by a round trip is still seen."""
        return renew_interval(self.duration) * 1.5


def read_lock(kube: Kube, namespace: str) -> LockState | None:
    """The lock's holder and times, or None when nobody holds it (no Lease, or no holder)."""
    lease = kube.try_get("coordination.k8s.io/v1", "Lease", LOCK_NAME, namespace)
    spec = (lease or {}).get("spec") or {}
    if not spec.get("holderIdentity"):
        return None
    return LockState(namespace=namespace, holder=str(spec["holderIdentity"]),
                     duration=int(spec.get("leaseDurationSeconds") or 30),
                     acquired=_parse_time(spec.get("acquireTime")),
                     renewed=_parse_time(spec.get("renewTime")),
                     renew_time=spec.get("renewTime"))


def _moved(before: LockState, now: LockState | None) -> bool:
    return now is not None and (now.holder, now.renew_time) != (before.holder, before.renew_time)


def await_no_renewal(kube: Kube, lock: LockState, reporter: Reporter, *,
                     seconds: float | None = None, poll: float = 0.5,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> LockState | None:
    """Watch the lock for ``seconds`` (default ``lock.watch_seconds``); raise BlockedError as
    soon as it moves (renewed, or taken by another run): its holder is alive. Returns the lock
    as last seen, or None when its holder released it meanwhile."""
    total = lock.watch_seconds if seconds is None else seconds
    shown = math.ceil(total)  # the progress counts whole seconds
    description = f"no renewal of Lease {lock.namespace}/{LOCK_NAME} for {shown}s"
    start = clock()
    ok = False
    try:
        while True:
            now = read_lock(kube, lock.namespace)
            if now is None:
                ok = True
                return None
            if _moved(lock, now):
                raise BlockedError(
                    f"the lock is alive: {now.holder} renewed it while we watched (at"
                    f" {_clock_text(now.renewed)}). Stop that run, or let it finish, rather"
                    " than unlock it; `migrate status` shows the stages.")
            elapsed = clock() - start
            reporter.progress(description, shown if elapsed >= total else int(elapsed), shown)
            if elapsed >= total:
                ok = True
                return now
            sleep(min(poll, max(total - elapsed, 0.0)))
    finally:
        reporter.finished(description, ok)


def free_lock(kube: Kube, lock: LockState) -> None:
    """Free the lock ``lock`` describes, only if nobody renewed or took it since (else
    BlockedError). A holder that still runs finds at its next renewal that the lock is no
    longer its own, and stops before its next write."""
    operations: list[Obj] = [
        {"op": "test", "path": "/spec/holderIdentity", "value": lock.holder},
        {"op": "remove", "path": "/spec/holderIdentity"},
    ]
    if lock.renew_time is not None:
        operations[1:1] = [{"op": "test", "path": "/spec/renewTime", "value": lock.renew_time}]
        operations.append({"op": "remove", "path": "/spec/renewTime"})
    try:
        kube.patch("coordination.k8s.io/v1", "Lease", LOCK_NAME, operations,
                   namespace=lock.namespace, json_patch=True)
    except KubeError as error:
        if error.status in (404, 409, 422):  # gone, or changed since it was read
            raise BlockedError("the lock changed while it was being freed (renewed, released"
                               " or taken): run `migrate unlock` again to see who holds it"
                               ) from None
        raise


def _clock_text(moment: _dt.datetime | None) -> str:
    return moment.strftime("%H:%M:%S UTC") if moment is not None else "an unknown time"
