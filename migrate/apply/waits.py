"""Waiting for what a stage needs (workloads scaled, LB-IPAM satisfied, leases held), and the
invariant I1 (no Service IP changes) checked all along.

Waits poll (a paginated LIST every ``poll`` seconds) rather than watch: they last seconds, each
look re-checks every Service's IPs anyway (I1), and a poll survives a dropped connection or a
restarted API server with no resourceVersion bookkeeping. The lab serves watch for the kinds
involved should a later version want it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from migrate.errors import ClusterError, VerificationError
from migrate.kube import Kube
from migrate.plan.model import Plan
from migrate.plan.views import ingress_ips

SATISFIED = "cilium.io/IPAMRequestSatisfied"
CONFLICT = "cilium.io/PoolConflict"
USED = "cilium.io/IPsUsed"


class Reporter(Protocol):
    """Receives what the engine does and awaits; the CLI renders it, tests record it.

    A wait is reported as ``progress`` calls with one ``description`` (the first call starts
    it; then one per look, with how many of ``total`` things are there), then ``finished``
    once, ``ok`` False when it failed or timed out. Waits do not nest.
    """

    def event(self, message: str) -> None:
        """Something was done (a write, a step)."""

    def progress(self, description: str, done: int, total: int) -> None:
        """A wait's state: ``done`` of ``total`` are there."""

    def finished(self, description: str, ok: bool) -> None:
        """The wait ``description`` is over (``ok``: what it awaited came)."""


class SilentReporter:
    """A reporter that keeps the messages and the waits (for tests and library use)."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self.waits: list[tuple[str, bool]] = []

    def event(self, message: str) -> None:
        self.messages.append(message)

    def progress(self, description: str, done: int, total: int) -> None:
        return None

    def finished(self, description: str, ok: bool) -> None:
        self.waits.append((description, ok))


@dataclass
class WaitOptions:
    """How often to look and how long waits may take (``timeout_scale`` × the plan's)."""

    poll: float = 0.5
    timeout_scale: float = 1.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep


def service_ips(kube: Kube) -> dict[str, list[str]]:
    """namespace/name → ingress IPs of every LoadBalancer Service (paginated list)."""
    out = {}
    for svc in kube.iter_list("v1", "Service"):
        if (svc.get("spec") or {}).get("type") == "LoadBalancer":
            meta = svc["metadata"]
            out[f"{meta.get('namespace')}/{meta.get('name')}"] = ingress_ips(svc)
    return out


def ip_violations(expected: Mapping[str, list[str]], current: Mapping[str, list[str]]) -> (
    list[str]
):
    """I1: every Service keeps exactly the IPs it had, and is never left without them."""
    problems = []
    for key, ips in sorted(expected.items()):
        now = current.get(key)
        if now is None:
            problems.append(f"Service {key} is gone")
        elif sorted(now) != sorted(ips):
            problems.append(f"Service {key} has {', '.join(now) or 'no IP'} instead of"
                            f" {', '.join(ips)}")
    return problems


def check_i1(kube: Kube, plan: Plan) -> None:
    """Raise VerificationError when any Service's IPs differ from the plan's baseline."""
    problems = ip_violations(plan.expected_ips, service_ips(kube))
    if problems:
        raise VerificationError("a Service IP changed: " + "; ".join(problems))


def wait_until(check: Callable[[], tuple[bool, str, int, int]], description: str,
               timeout: float, options: WaitOptions, reporter: Reporter) -> None:
    """Poll ``check`` (done, detail, done_count, total) until done or the timeout, reporting
    each look to ``reporter`` and the end (``finished``) however it ends."""
    deadline = options.clock() + timeout * options.timeout_scale
    ok = False
    try:
        while True:
            done, detail, count, total = check()
            reporter.progress(description, count, total)
            if done:
                ok = True
                return
            if options.clock() >= deadline:
                raise ClusterError(
                    f"timed out after {timeout * options.timeout_scale:.0f}s waiting until"
                    f" {description}: {detail}"
                )
            options.sleep(options.poll)
    finally:
        reporter.finished(description, ok)


def replicas_check(kube: Kube, target: Mapping[str, Any], replicas: int) -> Callable[
    [], tuple[bool, str, int, int]
]:
    """A Deployment has reached ``replicas`` (no pod left when 0; all ready otherwise)."""

    def check() -> tuple[bool, str, int, int]:
        body = kube.get("apps/v1", "Deployment", target["name"], target.get("namespace"))
        status = body.get("status") or {}
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        observed = int(status.get("observedGeneration") or generation)
        if replicas == 0:
            running = int(status.get("replicas") or 0)
            return (observed >= generation and running == 0,
                    f"{running} pod(s) still running", 1 if running == 0 else 0, 1)
        ready = int(status.get("readyReplicas") or 0)
        return (observed >= generation and ready >= replicas,
                f"{ready}/{replicas} ready", min(ready, replicas), replicas)

    return check


def _condition(obj: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == kind), None)


def ipam_check(kube: Kube, plan: Plan) -> Callable[[], tuple[bool, str, int, int]]:
    """LB-IPAM has taken over every pinned IP, and no Service IP changed [C1.3][C1.4].

    A Service whose current IP LB-IPAM *imports* is already satisfied, so LB-IPAM never runs
    ``satisfyService`` for it and writes no ``IPAMRequestSatisfied`` condition (lbipam.go
    ``handleUpsertService``); the condition cannot be waited for. What shows that the operator
    imported the IPs is each pool's ``cilium.io/IPsUsed`` count, which must reach the number
    of pinned IPs in that pool, with ``cilium.io/PoolConflict`` False. A ``False``
    IPAMRequestSatisfied on any pinned Service is a failure.
    """
    expected_used: dict[str, int] = dict(plan.context.get("poolIPs") or {})
    pool_version = plan.context.get("poolApiVersion", "cilium.io/v2")

    def check() -> tuple[bool, str, int, int]:
        services = {
            f"{s['metadata'].get('namespace')}/{s['metadata'].get('name')}": s
            for s in kube.iter_list("v1", "Service")
        }
        problems = ip_violations(plan.expected_ips,
                                 {k: ingress_ips(v) for k, v in services.items()})
        if problems:
            raise VerificationError("a Service IP changed: " + "; ".join(problems))
        for key in sorted(plan.expected_ips):
            cond = _condition(services[key], SATISFIED)
            if cond is not None and cond.get("status") == "False":
                raise VerificationError(
                    f"LB-IPAM refuses Service {key}: {cond.get('reason')}: {cond.get('message')}"
                )
        pools = {p["metadata"]["name"]: p
                 for p in kube.iter_list(pool_version, "CiliumLoadBalancerIPPool")}
        waiting = []
        for name, count in sorted(expected_used.items()):
            pool = pools.get(name)
            conflict = _condition(pool, CONFLICT) if pool else None
            if conflict is not None and conflict.get("status") == "True":
                raise VerificationError(f"Cilium pool {name} is in conflict:"
                                        f" {conflict.get('message')}")
            used = _condition(pool, USED) if pool else None
            try:
                in_use = int(str((used or {}).get("message") or "-1"))
            except ValueError:
                in_use = -1
            if conflict is None or in_use < count:
                waiting.append(f"{name} ({max(in_use, 0)}/{count} IPs taken over)")
        detail = "waiting for " + ", ".join(waiting[:5]) if waiting else "taken over"
        return not waiting, detail, len(expected_used) - len(waiting), len(expected_used)

    return check


def lease_check(kube: Kube, plan: Plan, services: Collection[str] | None = None) -> Callable[
    [], tuple[bool, str, int, int]
]:
    """Every announced Service (of ``services`` when given: a canary's) has a Cilium lease held
    by a node its policies select [C2]."""
    announced: dict[str, list[str] | None] = {
        key: eligible for key, eligible in (plan.context.get("announced") or {}).items()
        if services is None or key in services}

    def check() -> tuple[bool, str, int, int]:
        leases = {
            lease["metadata"]["name"]: (lease.get("spec") or {}).get("holderIdentity")
            for lease in kube.iter_list("coordination.k8s.io/v1", "Lease",
                                        namespace=plan.cilium_namespace)
        }
        missing = []
        for key, eligible in sorted(announced.items()):
            namespace, name = key.split("/", 1)
            holder = leases.get(f"cilium-l2announce-{namespace}-{name}")
            if not holder or (eligible is not None and holder not in eligible):
                missing.append(f"{key} (holder: {holder or 'none'})")
        detail = f"no eligible holder yet: {', '.join(missing[:5])}" if missing else "held"
        return not missing, detail, len(announced) - len(missing), len(announced)

    return check
