"""``migrate rehearse --chaos N``: the migration and its rollback again, N times, each with one
fault at a seeded random point, and the operator's recovery.

The faults, each on one request of the operator's client (counted from 1 over the migration
and its rollback, as the main run sent them):

- ``error``: 500 InternalError, the request not served;
- ``conflict``: 409 Conflict on a write, not served;
- ``timeout``: 504 Timeout on a write the server went on to complete (the API server's own
  request timeout: the client cannot tell whether it happened);
- ``dropped``: the connection closes with no answer, before the request reached the server or
  after it was served (a lost answer);
- ``kill-resume`` / ``kill-rollback``: SIGKILL of the apply. Emulated, faithfully for the
  cluster: from that request on the twin's server answers nothing of that client any more
  (every request is dropped, its lock renewals and its cleanup included), so nothing it does
  after the kill reaches the cluster and its lock stays held, as after a real SIGKILL; the
  in-process apply is then abandoned. A new client (a new process) frees the dead run's lock
  the way ``migrate unlock`` does (it watches that nobody renews it, then removes the holder,
  only if it is still the same) and either resumes (the interrupted command again, then the
  rest) or rolls back.

After an API fault the operator runs the same command again (what the error message tells
them). A run **survives** when the recovery completes, I1 held at every status write of the
run, no IP ever had two announcers, and the final rollback gives back the start state exactly.

Everything is on virtual time, one request at a time: the same seed gives the same run. The
lock's background renewals (wall-clock timers) are not counted, so that they cannot move a
fault point.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from migrate.apply.executor import apply_stage
from migrate.apply.lock import LOCK_NAME
from migrate.apply.rollback import rollback
from migrate.apply.waits import Reporter, SilentReporter
from migrate.errors import BlockedError, MigrateError
from migrate.kube import KubeError
from migrate.lab.faults import Fault, FaultSet, RequestInfo
from migrate.plan.model import Plan
from migrate.rehearse import invariants as inv
from migrate.rehearse.model import ChaosRun
from migrate.rehearse.twin import Twin, TwinClient, start_twin

KINDS = ("error", "conflict", "timeout", "dropped", "kill-resume", "kill-rollback")
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")
WRITES_ONLY = ("conflict", "timeout")
"""Faults that only make sense on a write (a 409 or an ambiguous timeout of a read is a plain
retry)."""
SETTLE = 5.0


@dataclass(frozen=True)
class FaultPoint:
    """Which fault, and on which of the operator's requests (its writes for a write fault)."""

    kind: str
    at: int
    after: bool = False
    """For ``dropped``: the request was served, only its answer is lost."""

    @property
    def label(self) -> str:
        if self.kind == "dropped":
            return "dropped connection (" + ("answer lost" if self.after else "request lost") + ")"
        return {"error": "API 500", "conflict": "API 409", "timeout": "API timeout (504,"
                " completed)", "kill-resume": "SIGKILL, then resume",
                "kill-rollback": "SIGKILL, then rollback"}[self.kind]


def run_seed(seed: int, index: int) -> int:
    """The seed of chaos run ``index`` of a rehearsal seeded ``seed`` (six digits)."""
    digest = hashlib.sha256(f"{seed}/chaos/{index}".encode()).hexdigest()
    return int(digest[:8], 16) % 1_000_000


def fault_point(seed: int, requests: int, writes: int) -> FaultPoint:
    """The fault of a run seeded ``seed`` among ``requests`` requests (``writes`` of them
    writes)."""
    rng = random.Random(seed)
    kind = rng.choice(KINDS)
    total = writes if kind in WRITES_ONLY else requests
    return FaultPoint(kind, rng.randint(1, max(total, 1)), after=rng.random() < 0.5)


def _countable(request: RequestInfo) -> bool:
    """Every request but the lock's renewals and releases (wall-clock timers)."""
    return not (request.resource == "leases" and request.name == LOCK_NAME
                and request.verb == "patch")


class RequestFaults(FaultSet):
    """An API door's faults: counts the client's requests and fires one fault (or none)."""

    def __init__(self, point: FaultPoint | None) -> None:
        super().__init__()
        self.point = point
        self.counted = 0
        self.counted_writes = 0
        self.fired: RequestInfo | None = None
        self.killed = False

    def decide(self, request: RequestInfo) -> Fault | None:
        if self.killed:
            return Fault(drop=True)
        if not _countable(request):
            return None
        self.counted += 1
        write = request.verb in WRITE_VERBS
        self.counted_writes += write
        point = self.point
        if point is None or self.fired is not None:
            return None
        if point.kind in WRITES_ONLY:
            if not write or self.counted_writes != point.at:
                return None
        elif self.counted != point.at:
            return None
        self.fired = request
        if point.kind == "error":
            return Fault(status=500, reason="InternalError", message="injected: internal error")
        if point.kind == "conflict":
            return Fault(status=409, reason="Conflict", message="injected: the object has been"
                         " modified; please apply your changes to the latest version")
        if point.kind == "timeout":
            return Fault(status=504, reason="Timeout", after=True, message="injected: Timeout:"
                         " request did not complete within the allotted timeout")
        if point.kind == "dropped":
            return Fault(drop=True, after=point.after)
        self.killed = True  # a kill: this request and every later one are dropped
        return Fault(drop=True)


def describe(request: RequestInfo | None) -> str:
    """``PATCH services shop/web``-like text for a request."""
    if request is None:
        return ""
    where = "/".join(p for p in (request.namespace, request.name) if p)
    resource = request.resource + (f"/{request.subresource}" if request.subresource else "")
    return f"{request.verb} {resource}" + (f" {where}" if where else "")


def free_dead_lock(client: TwinClient, namespace: str) -> None:
    """Free a lock whose holder died, as ``migrate unlock`` does: watch its Lease for one and a
    half renew intervals (a third of its duration each) on the twin's clock; if nobody renewed
    it, remove the holder, on the condition (JSON patch tests) that it is still the same holder
    and renewal."""
    kube = client.kube
    lease = kube.try_get("coordination.k8s.io/v1", "Lease", LOCK_NAME, namespace)
    spec = (lease or {}).get("spec") or {}
    holder, renewed = spec.get("holderIdentity"), spec.get("renewTime")
    if not holder:
        return
    watch = float(spec.get("leaseDurationSeconds") or 30) / 3 * 1.5
    waited = 0.0
    while waited < watch:
        client.sleep(1.0)
        waited += 1.0
        now = (kube.try_get("coordination.k8s.io/v1", "Lease", LOCK_NAME, namespace)
               or {}).get("spec") or {}
        if (now.get("holderIdentity"), now.get("renewTime")) != (holder, renewed):
            raise BlockedError("the lock is alive: its holder renewed it while we watched")
    operations: list[dict[str, Any]] = [
        {"op": "test", "path": "/spec/holderIdentity", "value": holder},
        {"op": "remove", "path": "/spec/holderIdentity"}]
    if renewed is not None:
        operations[1:1] = [{"op": "test", "path": "/spec/renewTime", "value": renewed}]
        operations.append({"op": "remove", "path": "/spec/renewTime"})
    try:
        kube.patch("coordination.k8s.io/v1", "Lease", LOCK_NAME, operations,
                   namespace=namespace, json_patch=True)
    except KubeError as error:
        if error.status not in (404, 422):
            raise


Operation = tuple[str, str | None]
"""``("apply", stage)`` or ``("rollback", None)``."""


class _Runner:
    def __init__(self, twin: Twin, plan: Plan, faults: RequestFaults, reporter: Reporter,
                 state_namespace: str) -> None:
        self.twin = twin
        self.plan = plan
        self.faults = faults
        self.reporter = reporter
        self.state_namespace = state_namespace
        self.client = twin.client("operator", faults=faults)
        self.problems: list[str] = []
        self.recovery = "none needed"
        self.during = ""

    def run(self, operation: Operation, client: TwinClient) -> None:
        verb, stage = operation
        fired = self.faults.fired is not None
        try:
            self._run(verb, stage, client)
        finally:
            if not fired and self.faults.fired is not None:
                self.during = " ".join(filter(None, operation))

    def _run(self, verb: str, stage: str | None, client: TwinClient) -> None:
        if verb == "apply":
            assert stage is not None
            apply_stage(client.kube, self.plan, stage, options=client.options(),
                        reporter=self.reporter)
        else:
            rollback(client.kube, self.plan, options=client.options(), reporter=self.reporter)
        self.twin.settle(SETTLE)

    def new_client(self, name: str) -> TwinClient:
        client = self.twin.client(name)
        if self.faults.killed:
            free_dead_lock(client, self.state_namespace)
        return client

    def attempt(self, operation: Operation, client: TwinClient) -> bool:
        """Run once more after a failure; False (with the problem noted) when it fails again."""
        try:
            self.run(operation, client)
            return True
        except MigrateError as error:
            self.problems.append(f"{' '.join(filter(None, operation))} failed again: {error}")
            return False

    def migrate(self) -> None:
        operations: list[Operation] = [("apply", s.name) for s in self.plan.stages]
        operations.append(("rollback", None))
        index = 0
        while index < len(operations):
            operation = operations[index]
            try:
                self.run(operation, self.client)
                index += 1
                continue
            except Exception as error:  # a killed client fails however its last call fails
                if not isinstance(error, MigrateError) and not self.faults.killed:
                    raise
                failure: Exception = error
            if self.faults.fired is None:
                self.problems.append(f"{' '.join(filter(None, operation))} failed before the"
                                     f" fault: {failure}")
                return
            point = self.faults.point
            assert point is not None
            if point.kind == "kill-rollback" or (point.kind.startswith("kill")
                                                 and operation[0] == "rollback"):
                self.recovery = "a new run freed the dead run's lock and rolled back"
                self.client = self.new_client("after-kill")
                self.attempt(("rollback", None), self.client)
                return
            if point.kind == "kill-resume":
                self.recovery = (f"a new run freed the dead run's lock and ran {self.during}"
                                 " again")
                self.client = self.new_client("after-kill")
            else:
                self.recovery = f"{self.during} run again ({type(failure).__name__})"
                self.client = self.new_client("again")
            if not self.attempt(operation, self.client):
                self.attempt(("rollback", None), self.new_client("rollback"))
                return
            index += 1
        if self.faults.fired is not None and self.recovery == "none needed":
            self.recovery = "the client retried; nothing to do"


def chaos_run(snapshot_dir: str | Path, plan: Plan, index: int, seed: int, requests: int,
              writes: int, reporter: Reporter, *, twin_seed: int,
              state_namespace: str = "kube-system") -> ChaosRun:
    """One chaos run on a twin of its own (virtual time): its fault drawn from ``seed``, the
    twin's timings from ``twin_seed``, the rehearsal's, so that the run sends the requests
    :func:`measure` counted up to its fault (on the asynchronous lab a seed changes how long
    the waits last, and so how many polls they send)."""
    point = fault_point(seed, requests, writes)
    result = ChaosRun(index, seed, point.label, point.at)
    with start_twin(snapshot_dir, seed=twin_seed, virtual=True) as twin:
        before = inv.comparable_objects(
            obj for group, kind in inv.WATCHED for obj in twin.store.list(group, kind))
        faults = RequestFaults(point)
        runner = _Runner(twin, plan, faults, reporter, state_namespace)
        runner.migrate()
        result.request = describe(faults.fired)
        result.during = runner.during
        result.recovery = runner.recovery
        problems = list(runner.problems)
        if faults.fired is None:
            problems.append(f"the fault was never reached (request {point.at} of {requests})")
        problems += [f"{p.subject}: {p.detail}" for p in inv.ip_problems(
            twin.records.status_writes(), plan.expected_ips)]
        services = inv.ip_services(plan.expected_ips)
        problems += [f"{p.subject}: {p.detail}" for p in inv.doubled_problems(
            twin.records.announcement_changes(), services)]
        after = inv.comparable_objects(
            obj for group, kind in inv.WATCHED for obj in twin.store.list(group, kind))
        problems += [f"{p.subject}: {p.detail}" for p in inv.rollback_problems(before, after)]
        if twin.store.try_get("", "ConfigMap", "lbmigrate-state", state_namespace):
            problems.append("the migration state is left: the rollback did not finish")
        result.problems = problems
        result.survived = not problems
    return result


def measure(snapshot_dir: str | Path, plan: Plan, seed: int, *,
            state_namespace: str = "kube-system") -> tuple[int, int]:
    """How many requests (and writes) an operator sends through the migration and its
    rollback, counted as the faults count them: the range the fault points are drawn from."""
    with start_twin(snapshot_dir, seed=seed, virtual=True) as twin:
        faults = RequestFaults(None)
        runner = _Runner(twin, plan, faults, SilentReporter(), state_namespace)
        runner.migrate()
        if runner.problems:
            raise MigrateError("the migration failed without any fault: "
                               + "; ".join(runner.problems))
        return faults.counted, faults.counted_writes


def run_chaos(snapshot_dir: str | Path, plan: Plan, seeds: list[int], requests: int,
              writes: int, reporter: Reporter, *, twin_seed: int) -> list[ChaosRun]:
    """Every chaos run, in order (``twin_seed``: the rehearsal's seed, see :func:`chaos_run`)."""
    runs = []
    for index, seed in enumerate(seeds):
        reporter.event(f"chaos run {index + 1}/{len(seeds)} (seed {seed})")
        runs.append(chaos_run(snapshot_dir, plan, index + 1, seed, requests, writes,
                              SilentReporter(), twin_seed=twin_seed))
    return runs
