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
from migrate.guards import GUARDS
from migrate.kube import Kube
from migrate.plan.model import Plan
from migrate.plan.views import ingress_ips

Obj = dict[str, Any]

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


def selector_text(selector: Mapping[str, Any] | None) -> str | None:
    """A LabelSelector (``matchLabels`` / ``matchExpressions``) as a list query's
    ``labelSelector`` string; None when it selects nothing we can express."""
    if not selector:
        return None
    terms = [f"{key}={value}" for key, value in sorted((selector.get("matchLabels") or {}).items())]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = ",".join(str(v) for v in expression.get("values") or [])
        if operator == "In":
            terms.append(f"{key} in ({values})")
        elif operator == "NotIn":
            terms.append(f"{key} notin ({values})")
        elif operator == "Exists":
            terms.append(str(key))
        elif operator == "DoesNotExist":
            terms.append(f"!{key}")
        else:
            return None
    return ",".join(terms) or None


def workload_pods(kube: Kube, workload: Mapping[str, Any]) -> list[Obj]:
    """The pods of a Deployment or DaemonSet (its ``spec.selector`` in its namespace),
    Terminating ones included: a pod with a deletionTimestamp still runs its process until it
    exits, up to its terminationGracePeriodSeconds (real-clusters.md §1)."""
    meta = workload.get("metadata") or {}
    selector = selector_text((workload.get("spec") or {}).get("selector"))
    if selector is None:
        return []
    pods = list(kube.iter_list("v1", "Pod", namespace=meta.get("namespace"),
                               label_selector=selector))
    if not GUARDS.terminating_pods:
        return [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    return pods


def _pods_left(pods: list[Obj]) -> str:
    terminating = sum(1 for p in pods if (p.get("metadata") or {}).get("deletionTimestamp"))
    text = f"{len(pods)} pod(s) left"
    return text + (f" ({terminating} terminating)" if terminating else "")


def replicas_check(kube: Kube, target: Mapping[str, Any], replicas: int, *,
                   before: Mapping[str, Any] | None = None) -> Callable[
    [], tuple[bool, str, int, int]
]:
    """A Deployment has reached ``replicas``.

    At 0: no pod of it exists, Terminating ones included. ``status.replicas`` drops to 0 as
    soon as the pods are marked for deletion (the ReplicaSet controller's FilterActivePods),
    while each keeps running its controller until it exits: a Cilium operator still running
    LB-IPAM would handle newly created pools one at a time.

    Above 0: back to what it had before the migration (``before``, the recorded object): its
    ``readyReplicas`` then, or its Available condition, never ``spec.replicas`` ready, which a
    Deployment may never reach (a 2-replica operator on one node runs 1 of 2 for good).
    """
    wanted_ready, wanted_available = _recorded_readiness(
        before if GUARDS.recorded_readiness else None, replicas)

    def check() -> tuple[bool, str, int, int]:
        body = kube.get("apps/v1", "Deployment", target["name"], target.get("namespace"))
        status = body.get("status") or {}
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        observed = int(status.get("observedGeneration") or generation)
        if replicas == 0:
            pods = workload_pods(kube, body)
            gone = observed >= generation and int(status.get("replicas") or 0) == 0 and not pods
            return gone, _pods_left(pods) if pods else "scaling down", int(gone), 1
        ready = int(status.get("readyReplicas") or 0)
        available = _condition(body, "Available")
        done = observed >= generation and ready >= wanted_ready and (
            not wanted_available or (available or {}).get("status") == "True")
        detail = f"{ready}/{wanted_ready} ready" + (
            "" if not wanted_available else ", Available" if done else ", not yet Available")
        return done, detail, min(ready, wanted_ready), wanted_ready

    return check


def _recorded_readiness(before: Mapping[str, Any] | None, replicas: int) -> tuple[int, bool]:
    """(ready replicas to wait for, whether to wait for Available) from the recorded object."""
    if not before or "status" not in before:
        return replicas, False
    status = before.get("status") or {}
    ready = min(int(status.get("readyReplicas") or 0), replicas)
    available = (_condition(before, "Available") or {}).get("status") == "True"
    return ready, available and ready == 0


def pods_gone_check(kube: Kube, target: Mapping[str, Any]) -> Callable[
    [], tuple[bool, str, int, int]
]:
    """No pod of a DaemonSet (or Deployment) is left, Terminating ones included."""

    def check() -> tuple[bool, str, int, int]:
        body = kube.get(str(target.get("apiVersion") or "apps/v1"), str(target["kind"]),
                        target["name"], target.get("namespace"))
        pods = workload_pods(kube, body)
        return not pods, _pods_left(pods) if pods else "no pod left", int(not pods), 1

    return check


def daemonset_joined_check(kube: Kube, target: Mapping[str, Any], *, settle: float,
                           options: WaitOptions) -> Callable[[], tuple[bool, str, int, int]]:
    """Every pod a DaemonSet should run is ready (its status, for the current generation,
    and no pod of it still Terminating), then ``settle`` seconds more for its processes to
    find each other (MetalLB's speakers form a memberlist when they start)."""
    ready_since: list[float] = []

    def check() -> tuple[bool, str, int, int]:
        body = kube.get(str(target.get("apiVersion") or "apps/v1"), str(target["kind"]),
                        target["name"], target.get("namespace"))
        status = body.get("status") or {}
        generation = int((body.get("metadata") or {}).get("generation") or 0)
        desired = int(status.get("desiredNumberScheduled") or 0)
        ready = int(status.get("numberReady") or 0)
        updated = int(status.get("updatedNumberScheduled") or 0)
        current = int(status.get("observedGeneration") or 0) >= generation
        terminating = [p for p in workload_pods(kube, body)
                       if (p.get("metadata") or {}).get("deletionTimestamp")]
        if not (current and desired and ready >= desired and updated >= desired
                and not terminating):
            ready_since.clear()
            detail = f"{ready}/{desired} ready" + (
                f", {len(terminating)} terminating" if terminating else "")
            return False, detail, min(ready, desired), max(desired, 1)
        if not ready_since:
            ready_since.append(options.clock())
        waited = options.clock() - ready_since[0]
        if waited < settle * options.timeout_scale:
            return (False, f"{ready}/{desired} ready; {waited:.1f}s of"
                    f" {settle * options.timeout_scale:.1f}s for them to know of each other",
                    ready, desired)
        return True, f"{ready}/{desired} ready", ready, desired

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


def metallb_released_check(kube: Kube, plan: Plan, services: Collection[str], *,
                           settle: float, options: WaitOptions) -> Callable[
    [], tuple[bool, str, int, int]
]:
    """MetalLB's speakers no longer announce ``services``.

    Deleting an L2Advertisement returns before any speaker has reloaded; each speaker
    reacts on its own (real-clusters.md §2). MetalLB 0.14.6 and later delete a Service's
    ServiceL2Status when its speaker stops announcing it, so its absence is the API-side
    signal. Where MetalLB writes none (older releases), only time tells: ``settle`` seconds
    from the first look (0 when MetalLB is known to write them).
    """
    from migrate.verify.api import metallb_announcers

    wanted = set(services)
    started: list[float] = []

    def check() -> tuple[bool, str, int, int]:
        if not GUARDS.metallb_released:
            return True, "not awaited", len(wanted), len(wanted)
        if not started:
            started.append(options.clock())
        still = sorted(set(metallb_announcers(kube, plan.metallb_namespace)) & wanted)
        waited = options.clock() - started[0]
        if still:
            return (False, f"MetalLB still announces {', '.join(still[:5])}"
                    + (f" and {len(still) - 5} more" if len(still) > 5 else ""),
                    len(wanted) - len(still), len(wanted))
        if waited < settle * options.timeout_scale:
            return (False, f"MetalLB leaves no trace in the API: {waited:.1f}s of"
                    f" {settle * options.timeout_scale:.1f}s for its speakers to reload",
                    len(wanted), len(wanted))
        return True, "MetalLB announces none of them", len(wanted), len(wanted)

    return check


def wait_arp_silent(interface: str, plan: Plan, services: Collection[str], timeout: float,
                    options: WaitOptions, reporter: Reporter) -> None:
    """Wait until nobody answers ARP on ``interface`` for the IPs ``plan`` expects for
    ``services`` (a hand-over's break before make, seen on the wire)."""
    ips = [ip for key in services for ip in plan.expected_ips.get(key, [])]
    wait_until(arp_silent_check(interface, ips),
               f"nobody answers ARP for the {len(ips)} IP(s) on {interface}", timeout,
               options, reporter)


def arp_silent_check(interface: str, ips: Collection[str]) -> Callable[
    [], tuple[bool, str, int, int]
]:
    """Nobody answers ARP for ``ips`` on ``interface`` any more (IPv4 only; needs
    CAP_NET_RAW). What the API says about announcers is checked on the wire too."""
    from ipaddress import IPv4Address, ip_address

    from migrate.verify.arp import probe

    targets = [a for a in (ip_address(ip) for ip in sorted(set(ips)))
               if isinstance(a, IPv4Address)]

    def check() -> tuple[bool, str, int, int]:
        results = probe(interface, targets, window=0.3, retries=0)
        loud = [f"{r.ip} ({', '.join(r.macs)})" for r in results if r.macs]
        return (not loud, f"still answered on {interface}: {', '.join(loud[:5])}"
                if loud else f"silent on {interface}", len(targets) - len(loud), len(targets))

    return check
