"""The rollback of an L2 hand-over holds Cilium's L2 leases itself until MetalLB is back.

Deleting Cilium's policies is not enough to silence Cilium: each agent sees the deletion on its
own, and the one holding a Service's lease releases it (``ReleaseOnCancel``) before its ARP
entries are gone (pkg/l2announcer/l2announcer.go ``gcOrphanedService``: ``stop()``, then the
entries are recalculated). An agent that has not seen the deletion yet stands for the lease,
finds it released and takes it: two Cilium nodes answer for the IP for a moment.

So the rollback takes each lease first, under an identity no agent has, with a long duration:
the holder's next renewal fails on the changed resourceVersion, it reads the lease, sees it
held and valid, polls until its renew deadline and stops leading (client-go
tools/leaderelection/leaderelection.go ``renew``; its ``release`` writes nothing, because the
record it observed last is not its own). Every candidate sees the lease held and waits. Nothing
in the API says when the old holder's entries are gone, so the rollback waits the longest
that can take: one retry period and the renew deadline after its own write (cilium-config's
timings, corrected as the agent corrects them), then the datapath settle of the plan. Only then
are the policies deleted; the agents drop the Services without a write, as no one of them
leads. The leases go once MetalLB's objects are back and every agent had time to see the
policies' deletion.

A rollback that dies with the leases held leaves Cilium unable to announce those Services
until the leases expire, which is what a rollback wants; a later apply of the hand-over deletes
the leases this module holds before it creates Cilium's policies (:func:`drop_held_leases`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from migrate.apply.state import now_rfc3339
from migrate.apply.waits import WaitOptions
from migrate.kube import Kube, KubeError
from migrate.plan.model import Plan
from migrate.verify.api import LEASE_PREFIX, lease_name

Obj = dict[str, Any]

HOLDER = "migrate-rollback"
"""The holder identity of the leases the rollback holds: no agent's (agents use node names)."""
HELD_SECONDS = 3600
"""Their leaseDurationSeconds: longer than any rollback; client-go takes a lease's validity from
the record it observed (``isLeaseValid``), so no agent stands for it in that time."""
LEASE_API = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class _Settings:
    """cilium-config's data, read the way preflight reads it."""

    data: dict[str, str]

    def setting(self, key: str) -> str | None:
        value = self.data.get(key)
        return value.strip() if isinstance(value, str) else None


def renew_window(kube: Kube, plan: Plan) -> float:
    """Seconds from the rollback's write to a lease until its old holder has surely stopped
    leading: one retry period (its next poll round) plus the renew deadline (that round's
    timeout), from the live cilium-config, corrected as the agent does."""
    from migrate.preflight.cilium_checks import lease_timings

    config = kube.try_get("v1", "ConfigMap", "cilium-config", plan.cilium_namespace)
    data = {str(k): str(v) for k, v in ((config or {}).get("data") or {}).items()}
    timings = lease_timings(_Settings(data))
    return timings.retry_period + timings.renew_deadline


def _take(kube: Kube, namespace: str, name: str, lease: Obj | None) -> bool:
    """Write ourselves as the holder of one lease; False when someone wrote it first (the next
    look tries again)."""
    stamp = now_rfc3339()
    spec: Obj = {"holderIdentity": HOLDER, "leaseDurationSeconds": HELD_SECONDS,
                 "acquireTime": stamp, "renewTime": stamp}
    try:
        if lease is None:
            kube.create({"apiVersion": LEASE_API, "kind": "Lease",
                         "metadata": {"name": name, "namespace": namespace},
                         "spec": {**spec, "leaseTransitions": 0}})
        else:
            body = {"apiVersion": LEASE_API, "kind": "Lease",
                    "metadata": {"name": name, "namespace": namespace,
                                 "resourceVersion": lease["metadata"]["resourceVersion"]},
                    "spec": {**spec, "leaseTransitions": int(
                        (lease.get("spec") or {}).get("leaseTransitions") or 0) + 1}}
            kube.replace(body)
    except KubeError as error:
        if error.status == 409:
            return False
        raise
    return True


def hold_check(kube: Kube, plan: Plan, services: Collection[str], *, quiet: float,
               options: WaitOptions) -> Callable[[], tuple[bool, str, int, int]]:
    """A wait check: the rollback holds the lease of each of ``services`` (taking any it does
    not hold yet, creating any that is missing), done once each has been held for ``quiet``
    seconds. A lease that someone takes back is taken again, and its count starts over."""
    wanted = {key: lease_name(key) for key in services}
    since: dict[str, float] = {}
    namespace = plan.cilium_namespace

    def check() -> tuple[bool, str, int, int]:
        now = options.clock()
        leases = {lease["metadata"]["name"]: lease
                  for lease in kube.iter_list(LEASE_API, "Lease", namespace=namespace)}
        others = []
        for key, name in sorted(wanted.items()):
            lease = leases.get(name)
            holder = ((lease or {}).get("spec") or {}).get("holderIdentity")
            if holder == HOLDER:
                since.setdefault(name, now)
                continue
            if holder:
                others.append(f"{key} ({holder})")
            since.pop(name, None)
            if _take(kube, namespace, name, lease):
                since[name] = now
        waiting = [k for k, n in wanted.items()
                   if n not in since or now - since[n] < quiet * options.timeout_scale]
        done = len(wanted) - len(waiting)
        if others:
            return False, f"still held: {', '.join(others[:5])}", done, len(wanted)
        if waiting:
            return (False, f"held; the agents that led stop within {quiet:.1f}s",
                    done, len(wanted))
        return True, "held by the rollback; no agent leads", len(wanted), len(wanted)

    return check


def held_leases(kube: Kube, plan: Plan, services: Collection[str] | None = None) -> list[str]:
    """The names of the leases this module holds (of ``services`` when given)."""
    names = None if services is None else {lease_name(key) for key in services}
    return sorted(
        lease["metadata"]["name"]
        for lease in kube.iter_list(LEASE_API, "Lease", namespace=plan.cilium_namespace)
        if (lease.get("spec") or {}).get("holderIdentity") == HOLDER
        and lease["metadata"]["name"].startswith(LEASE_PREFIX)
        and (names is None or lease["metadata"]["name"] in names))


def drop_held_leases(kube: Kube, plan: Plan, services: Collection[str] | None = None, *,
                     dry_run: bool = False) -> list[str]:
    """Delete the leases this module holds (of ``services`` when given); their names."""
    dropped = []
    for name in held_leases(kube, plan, services):
        if kube.delete(LEASE_API, "Lease", name, plan.cilium_namespace, dry_run=dry_run):
            dropped.append(name)
    return dropped
