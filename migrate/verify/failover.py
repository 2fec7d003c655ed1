"""A forced failover of one Service's L2 announcement, watched on the lease and on the wire.

``run_failover`` deletes the Cilium agent pod (``k8s-app=cilium``) on the node holding the
Service's lease ``cilium-l2announce-<ns>-<name>``, then follows the lease and, with an
interface, the ARP answers for the Service's IPv4 addresses, until another node holds the lease
and answers for every IP. The new holder announces itself with a gratuitous ARP [C2]; whether
one was seen is reported, as are the time taken, any round where two MACs answered (I2) and
how long the IPs went unanswered. Failover normally takes between lease duration − renew
deadline and lease duration + renew deadline (10–20 s with the defaults) [C2], unless the
stopping agent releases its leases first. It gives up after ``timeout`` seconds and says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from typing import Any

from migrate.errors import ClusterError, InputError, VerificationError
from migrate.kube import Kube
from migrate.plan.views import ingress_ips
from migrate.translate.translator import ANNOUNCED_WITH_ANNOTATION
from migrate.verify.announcers import ipv4_targets
from migrate.verify.api import lease_name
from migrate.verify.arp import Gratuitous, Observation, verify_arp, watch

AGENT_SELECTOR = "k8s-app=cilium"
DEFAULT_TIMEOUT = 60.0


@dataclass(frozen=True)
class FailoverReport:
    """What happened after the holder's agent pod was deleted."""

    service: str
    pod: str
    old_holder: str
    new_holder: str | None
    lease_seconds: float | None
    """Seconds from the pod's deletion until another node held the lease."""
    timed_out: bool
    timeout: float
    ips: tuple[str, ...] = ()
    wire: bool = False
    """True when the ARP answers were watched (``interface`` given and IPv4 addresses)."""
    old_macs: tuple[str, ...] = ()
    new_macs: tuple[str, ...] = ()
    new_mac_nodes: tuple[str, ...] = ()
    """The nodes the new MACs belong to (when known)."""
    wire_seconds: float | None = None
    """Seconds from the deletion until every IP was answered by one new MAC."""
    gratuitous: tuple[Gratuitous, ...] = ()
    """Gratuitous ARPs seen for the IPs from a MAC other than the old holder's."""
    conflict_rounds: int = 0
    """Probe rounds in which an IP was answered by two MACs or more (I2 broken)."""
    silent_seconds: float = 0.0
    """The longest time an IP went unanswered."""

    @property
    def ok(self) -> bool:
        """Moved in time to another node, which answers alone (when watched)."""
        if self.timed_out or not self.new_holder:
            return False
        if not self.wire:
            return True
        if self.conflict_rounds or self.wire_seconds is None:
            return False
        return not self.new_mac_nodes or self.new_holder in self.new_mac_nodes

    @property
    def problems(self) -> list[str]:
        """Why the failover is not ok (empty when it is)."""
        problems = []
        if self.timed_out:
            if not self.new_holder:
                problems.append(f"the lease did not move within {self.timeout:g}s")
            else:
                problems.append(f"no new MAC answered for every IP within {self.timeout:g}s")
        if self.conflict_rounds:
            problems.append(f"two MACs answered at once in {self.conflict_rounds} probe round(s)")
        if (self.wire and self.new_holder and self.new_mac_nodes
                and self.new_holder not in self.new_mac_nodes):
            problems.append(f"the new MAC belongs to {', '.join(self.new_mac_nodes)}, not to the"
                            f" new holder {self.new_holder}")
        return problems

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``failover`` part of ``migrate verify -o json``)."""
        return {
            "service": self.service,
            "status": "ok" if self.ok else "failed",
            "deletedPod": self.pod,
            "oldHolder": self.old_holder,
            "newHolder": self.new_holder,
            "leaseSeconds": _round(self.lease_seconds),
            "wire": self.wire,
            "ips": list(self.ips),
            "oldMacs": list(self.old_macs),
            "newMacs": list(self.new_macs),
            "newMacNodes": list(self.new_mac_nodes),
            "wireSeconds": _round(self.wire_seconds),
            "gratuitousArp": bool(self.gratuitous),
            "gratuitous": [{"ip": str(g.ip), "mac": g.mac, "style": g.style}
                           for g in self.gratuitous],
            "conflictRounds": self.conflict_rounds,
            "silentSeconds": round(self.silent_seconds, 3),
            "timedOut": self.timed_out,
            "problems": self.problems,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _holder(kube: Kube, namespace: str, name: str) -> str:
    lease = kube.try_get("coordination.k8s.io/v1", "Lease", name, namespace)
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def agent_pod_on(kube: Kube, namespace: str, node: str) -> str:
    """The name of the Cilium agent pod on ``node`` (ClusterError when there is none)."""
    pods = kube.list("v1", "Pod", namespace=namespace, label_selector=AGENT_SELECTOR,
                     field_selector=f"spec.nodeName={node}")
    names = sorted(str(p["metadata"]["name"]) for p in pods
                   if (p.get("spec") or {}).get("nodeName") == node
                   and not (p.get("metadata") or {}).get("deletionTimestamp"))
    if not names:
        raise ClusterError(f"no Cilium agent pod ({AGENT_SELECTOR}) on node {node} in"
                           f" namespace {namespace}")
    return names[0]


class _WireTracker:
    """Follows the watch rounds after the deletion: new MACs, conflicts, silences, gARPs."""

    def __init__(self, ips: Sequence[IPv4Address], old_macs: set[str]) -> None:
        self.ips = list(ips)
        self.old_macs = old_macs
        self.done_at: float | None = None
        self.new_macs: set[str] = set()
        self.conflict_rounds = 0
        self.gratuitous: list[Gratuitous] = []
        self.silent_since: dict[IPv4Address, float] = {}
        self.longest_silence = 0.0

    def feed(self, observation: Observation, elapsed: float) -> None:
        for announcement in observation.gratuitous:
            if announcement.mac not in self.old_macs:
                self.gratuitous.append(announcement)
        all_new = True
        if any(len(observation.macs.get(ip, ())) > 1 for ip in self.ips):
            self.conflict_rounds += 1
        for ip in self.ips:
            macs = observation.macs.get(ip, frozenset())
            if not macs:
                self.silent_since.setdefault(ip, observation.started)
            elif ip in self.silent_since:
                since = self.silent_since.pop(ip)
                self.longest_silence = max(self.longest_silence, observation.started - since)
            if len(macs) != 1 or macs & self.old_macs:
                all_new = False
        if all_new and self.done_at is None:
            self.done_at = elapsed
            self.new_macs = {mac for ip in self.ips for mac in observation.macs.get(ip, ())}

    def close(self, now: float) -> None:
        for since in self.silent_since.values():
            self.longest_silence = max(self.longest_silence, now - since)


def run_failover(
    kube: Kube,
    service: str,
    *,
    cilium_namespace: str = "kube-system",
    interface: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    node_macs: Mapping[str, str] | None = None,
    node_ips: Mapping[str, IPv4Address] | None = None,
    poll: float = 0.5,
    interval: float = 0.2,
    on_event: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FailoverReport:
    """Delete the agent pod on ``service``'s lease holder and watch the announcement move.

    Raises InputError for a malformed or absent Service, VerificationError when the Service
    has no lease holder (nothing to fail over), ClusterError when no agent pod runs on the
    holder; otherwise returns the report (``timed_out`` set when ``timeout`` passed).
    """
    say = on_event or (lambda message: None)
    namespace, sep, name = service.partition("/")
    if not sep or not namespace or not name or "/" in name:
        raise InputError(f"{service!r} is not NAMESPACE/NAME", field="--failover")
    svc = kube.try_get("v1", "Service", name, namespace)
    if svc is None:
        raise InputError(f"no Service {service}", field="--failover")
    # A Service sharing its IP may be announced through another sharer's lease (the
    # translation's follower annotation): failing that one over moves this IP.
    announced_with = ((svc.get("metadata") or {}).get("annotations") or {}).get(
        ANNOUNCED_WITH_ANNOTATION, "")
    announcer = announced_with.split(",")[0] or service
    if announcer != service:
        say(f"{service} shares its IP with {announcer}, whose lease announces it")
    lease = lease_name(announcer)
    old_holder = _holder(kube, cilium_namespace, lease)
    if not old_holder:
        raise VerificationError(f"Service {service} has no Cilium lease holder (lease"
                                f" {cilium_namespace}/{lease}): nothing to fail over")
    pod = agent_pod_on(kube, cilium_namespace, old_holder)
    ips, _ = ipv4_targets(ingress_ips(svc))
    use_wire = bool(interface) and bool(ips)
    old_macs: set[str] = set()
    mac_nodes: dict[str, list[str]] = {}
    rounds: Iterator[Observation] | None = None
    if use_wire and interface:
        baseline = verify_arp(interface, ips, node_macs=node_macs, node_ips=node_ips)
        for node, macs in baseline.node_macs.items():
            for mac in macs:
                mac_nodes.setdefault(mac, []).append(node)
        old_macs = {mac for entry in baseline.entries for mac in entry.macs}
        say(f"before: {old_holder} holds {lease}; ARP answered by"
            f" {', '.join(sorted(old_macs)) or 'nobody'}")
        rounds = watch(interface, ips, timeout + 10 * interval, interval)
        first = next(rounds)  # the socket is open: nothing said after the deletion is missed
        old_macs |= {mac for macs in first.macs.values() for mac in macs}
    tracker = _WireTracker(ips, old_macs)
    new_holder: str | None = None
    lease_seconds: float | None = None
    say(f"deleting pod {cilium_namespace}/{pod} (Cilium agent on {old_holder})")
    kube.delete("v1", "Pod", pod, cilium_namespace)
    start = clock()
    next_poll = start
    timed_out = False
    extra_round = True  # one more round after the move, for a late gratuitous ARP
    try:
        while True:
            now = clock()
            elapsed = now - start
            if now >= next_poll and new_holder is None:
                next_poll = now + poll
                holder = _holder(kube, cilium_namespace, lease)
                if holder and holder != old_holder:
                    new_holder, lease_seconds = holder, elapsed
                    say(f"after {elapsed:.1f}s: {holder} holds {lease}")
            moved = new_holder is not None and (rounds is None or tracker.done_at is not None)
            if moved and (rounds is None or not extra_round):
                break
            if elapsed >= timeout:
                timed_out = True
                break
            if rounds is None:
                time.sleep(max(0.0, min(poll, next_poll - clock())))
                continue
            try:
                observation = next(rounds)
            except StopIteration:
                timed_out = True
                break
            was_done = tracker.done_at is not None
            tracker.feed(observation, clock() - start)
            if not was_done and tracker.done_at is not None:
                say(f"after {tracker.done_at:.1f}s: ARP answered by"
                    f" {', '.join(sorted(tracker.new_macs))}")
            if moved:
                extra_round = False
    finally:
        if rounds is not None and hasattr(rounds, "close"):
            rounds.close()
    tracker.close(time.time())
    new_nodes = sorted({node for mac in tracker.new_macs for node in mac_nodes.get(mac, ())})
    return FailoverReport(
        service=service,
        pod=f"{cilium_namespace}/{pod}",
        old_holder=old_holder,
        new_holder=new_holder,
        lease_seconds=lease_seconds,
        timed_out=timed_out,
        timeout=timeout,
        ips=tuple(str(ip) for ip in ips),
        wire=use_wire,
        old_macs=tuple(sorted(old_macs)),
        new_macs=tuple(sorted(tracker.new_macs)),
        new_mac_nodes=tuple(new_nodes),
        wire_seconds=tracker.done_at,
        gratuitous=tuple(tracker.gratuitous),
        conflict_rounds=tracker.conflict_rounds,
        silent_seconds=tracker.longest_silence,
    )
