"""Model of Cilium's L2 announcer (pkg/l2announcer), following reference/cilium.md §2 [C2].

One ``coordination.k8s.io/v1`` Lease per announced Service, named
``cilium-l2announce-<namespace>-<name>`` in Cilium's namespace, held by one eligible node;
that node answers ARP for the Service's IPs. Leases are renewed on the store's clock, expire
when their holder stops renewing, and are then taken by another eligible node.

Which eligible node wins a lease is first come, first served in Cilium: nothing ties the
elections of two Services together, so Services sharing one IP can get different holders, and
then both nodes answer ARP for it (cilium/cilium#48419). The model keeps that: the winner is
the candidate ranked first by a hash of the lease name and the node (``race_order``), which
differs from Service to Service and stays the same from run to run.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
from dataclasses import dataclass

from migrate.lab.models._common import (
    Cache,
    Event,
    Model,
    Obj,
    ingress_ips,
    labels_of,
    meta,
    name_of,
    namespace_of,
    parse_go_duration,
    selector_matches,
    service_key,
    spec_of,
)
from migrate.lab.models.cilium_lbipam import L2_CLASS, service_labels
from migrate.lab.store import ApiError, Store

LEASE_GROUP = "coordination.k8s.io"
LEASE_PREFIX = "cilium-l2announce-"
POLICY_KIND = "CiliumL2AnnouncementPolicy"
AGENT_LABEL = ("k8s-app", "cilium")
GC_INTERVAL = 60.0
_RELEVANT_KINDS = {
    ("", "Service"), ("", "Node"), ("", "Pod"), ("", "ConfigMap"), (LEASE_GROUP, "Lease"),
    ("cilium.io", POLICY_KIND), ("cilium.io", "CiliumNode"),
}


@dataclass(frozen=True)
class LeaseTimings:
    """Lease duration, renew deadline and retry period, with leaseTimings()' sanity rules [C2]."""

    duration: float = 15.0
    renew_deadline: float = 5.0
    retry_period: float = 2.0

    @classmethod
    def from_config(cls, data: dict[str, str]) -> LeaseTimings:
        """From ``cilium-config`` keys (defaults 15s / 5s / 2s)."""
        duration = max(1.0, parse_go_duration(data.get("l2-announcements-lease-duration"), 15.0))
        renew = parse_go_duration(data.get("l2-announcements-renew-deadline"), 5.0)
        retry = parse_go_duration(data.get("l2-announcements-retry-period"), 2.0)
        if duration <= renew:
            renew = duration / 2
        if renew <= 1.2 * retry:
            retry = renew / 2
        return cls(duration, renew, retry)


@dataclass(frozen=True)
class Desired:
    """A Service some policy selects and that has IPs to announce."""

    service: str
    lease: str
    ips: tuple[str, ...]
    candidates: tuple[str, ...]
    """Eligible nodes with a live agent, sorted (first come, first served → first name)."""
    interfaces: dict[str, tuple[str, ...]]
    """Per candidate: interface regexes of its matching policies; empty = all devices."""


@dataclass(frozen=True)
class CiliumAnnouncement:
    """Who holds one Service's lease and answers for its IPs."""

    service: str
    lease: str
    node: str
    ips: tuple[str, ...]
    interfaces: tuple[str, ...]


class CiliumL2Announcer(Model):
    """Every Cilium agent's L2 announcer at once.

    Runs only when ``enable-l2-announcements`` is "true" in ``cilium-config`` (no
    cilium-config in the store: enabled). A node's agent is alive when a pod labelled
    k8s-app=cilium (in Cilium's namespace) runs on it; when the store holds no such pod (and
    never did) every node has one. Among eligible nodes the lexically first takes a free
    lease, so runs repeat.
    The holder renews every renew-deadline period (the real agent every retry period; both
    keep the lease well within its duration).
    """

    name = "cilium-l2"
    manager = "cilium-agent"

    def __init__(self, store: Store, cache: Cache, *, namespace: str = "kube-system",
                 enabled: bool = True) -> None:
        super().__init__(store, cache, enabled=enabled)
        self.namespace = namespace
        self.timings = LeaseTimings()
        self.feature_enabled = True
        self.desired: dict[str, Desired] = {}
        self._agents_seen = False
        self._dirty = True
        self._next_tick: float | None = None
        self._next_gc: float | None = None
        self._epoch = self._clock_epoch()
        self._policies: list[Obj] = []
        self._nodes: list[tuple[str, dict[str, str]]] = []
        self._times: dict[str, float] = {}

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Agents start: read config, compute desires, take or renew leases."""
        self._dirty = True
        now = self.store.clock.now()
        self._next_tick = now + self.timings.retry_period
        self._next_gc = now + GC_INTERVAL
        self._reconcile(now)

    def stop(self) -> None:
        """Agents gone: nothing renews (leases expire on their own)."""
        self.desired = {}
        self._next_tick = None
        self._next_gc = None

    def handle(self, event: Event) -> None:
        """Any change but our own lease renewals may change what is desired."""
        group, kind = event.group_kind
        if (group, kind) not in _RELEVANT_KINDS:
            return
        if kind == "Lease" and (event.type != "DELETED"
                                or not name_of(event.obj).startswith(LEASE_PREFIX)):
            return
        if kind == "ConfigMap" and name_of(event.obj) != "cilium-config":
            return
        if kind == "Pod" and labels_of(event.obj).get(AGENT_LABEL[0]) != AGENT_LABEL[1]:
            return  # only agent pods matter
        if kind == "Service" and not self._dirty:
            # only this Service's desire can change: recompute it alone
            key = service_key(event.obj)
            svc = self.cache.get("", "Service", name_of(event.obj), namespace_of(event.obj))
            want = self._desire(svc) if svc is not None else None
            if want is None:
                self.desired.pop(key, None)
            else:
                self.desired[key] = want
            lease_name = f"{LEASE_PREFIX}{namespace_of(event.obj)}-{name_of(event.obj)}"
            self._reconcile(self.store.clock.now(), only={lease_name})
            return
        self._dirty = True
        self._reconcile(self.store.clock.now())

    def next_deadline(self) -> float | None:
        """The next retry-period tick or lease GC."""
        times = [t for t in (self._next_tick, self._next_gc) if t is not None]
        return min(times) if times else None

    def on_time(self, now: float) -> None:
        """Renew, take expired leases, GC released ones."""
        if self._next_tick is not None and now >= self._next_tick:
            while self._next_tick <= now:
                self._next_tick += self.timings.retry_period
        gc_due = self._next_gc is not None and now >= self._next_gc
        if gc_due and self._next_gc is not None:
            while self._next_gc <= now:
                self._next_gc += GC_INTERVAL
        self._reconcile(now, gc=gc_due)

    # ----------------------------------------------------------------- desires

    def _read_config(self) -> None:
        config = self.cache.get("", "ConfigMap", "cilium-config", self.namespace)
        if config is None:
            self.feature_enabled = True
            self.timings = LeaseTimings()
            return
        data = {str(k): str(v) for k, v in (config.get("data") or {}).items()}
        self.feature_enabled = data.get("enable-l2-announcements", "false").lower() == "true"
        self.timings = LeaseTimings.from_config(data)

    def _agent_nodes(self) -> set[str] | None:
        """Nodes with a live agent pod; None = every node (no agent pods known)."""
        pods = [p for p in self.cache.list("", "Pod", self.namespace)
                if labels_of(p).get(AGENT_LABEL[0]) == AGENT_LABEL[1]]
        if pods:
            self._agents_seen = True
        if not self._agents_seen:
            return None
        return {str(spec_of(p).get("nodeName") or "") for p in pods
                if not meta(p).get("deletionTimestamp")}

    def _node_labels(self, node: Obj) -> dict[str, str]:
        """Policies select on the node's CiliumNode labels [C2]; the Node's when absent."""
        cilium_node = self.cache.get("cilium.io", "CiliumNode", name_of(node))
        return labels_of(cilium_node) if cilium_node is not None else labels_of(node)

    def _compute_desired(self) -> dict[str, Desired]:
        self._read_config()
        self._policies = self.cache.list("cilium.io", POLICY_KIND)
        agents = self._agent_nodes()
        self._nodes = [(name_of(n), self._node_labels(n)) for n in self.cache.list("", "Node")
                       if agents is None or name_of(n) in agents]
        if not self.feature_enabled or not self._policies:
            return {}
        desired: dict[str, Desired] = {}
        for svc in self.cache.list("", "Service"):
            want = self._desire(svc)
            if want is not None:
                desired[want.service] = want
        return desired

    def _desire(self, svc: Obj) -> Desired | None:
        """What the policies want for one Service (None: no lease)."""
        if not self.feature_enabled:
            return None
        spec = spec_of(svc)
        if spec.get("loadBalancerClass") not in (None, L2_CLASS):
            return None  # [C2] no class or io.cilium/l2-announcer only
        labels = service_labels(svc)
        ips: list[str] = []
        per_node: dict[str, set[str] | None] = {}
        for policy in self._policies:
            pspec = spec_of(policy)
            selector = pspec.get("serviceSelector")
            if isinstance(selector, dict) and not selector_matches(selector, labels):
                continue
            policy_ips: list[str] = []
            if pspec.get("loadBalancerIPs") and spec.get("type") == "LoadBalancer":
                policy_ips += ingress_ips(svc)
            if pspec.get("externalIPs"):
                policy_ips += [str(i) for i in spec.get("externalIPs") or []]
            if not policy_ips:
                continue
            ips += [ip for ip in policy_ips if ip not in ips]
            node_selector = pspec.get("nodeSelector")
            interfaces = [str(i) for i in pspec.get("interfaces") or []]
            for node_name, node_labels in self._nodes:
                if isinstance(node_selector, dict) and not selector_matches(
                        node_selector, node_labels):
                    continue
                held = per_node.get(node_name, set())
                if held is None or not interfaces:
                    per_node[node_name] = None
                else:
                    per_node[node_name] = held | set(interfaces)
        if not ips:
            return None
        return Desired(
            service=service_key(svc),
            lease=f"{LEASE_PREFIX}{namespace_of(svc)}-{name_of(svc)}",
            ips=tuple(ips),
            candidates=tuple(sorted(per_node)),
            interfaces={n: tuple(sorted(i)) if i else () for n, i in per_node.items()},
        )

    # ----------------------------------------------------------------- leases

    def _reconcile(self, now: float, *, gc: bool = False, only: set[str] | None = None) -> None:
        """Take, renew, release and collect leases (``only``: just these lease names)."""
        if self._dirty:
            self.desired = self._compute_desired()
            self._dirty = False
        agents = self._agent_nodes()
        wanted = {d.lease: d for d in self.desired.values()}
        for want in sorted(wanted.values(), key=lambda d: d.lease):
            if only is not None and want.lease not in only:
                continue
            lease = self.cache.get(LEASE_GROUP, "Lease", want.lease, self.namespace)
            if lease is None:
                if want.candidates:
                    self._create(want, race_order(want.lease, want.candidates)[0], now)
                continue
            holder = str(spec_of(lease).get("holderIdentity") or "")
            if holder and holder in want.candidates:
                if now - self._renew_time(lease) >= self.timings.renew_deadline:
                    self._write_lease(lease, holder, now, acquired=False)
            elif holder and (agents is None or holder in agents):
                # the holder's agent no longer selects this Service: it gives the lease up
                self._release(lease, now)
            elif want.candidates and (not holder or now >= self._expiry(lease)):
                self._write_lease(lease, race_order(want.lease, want.candidates)[0], now,
                                  acquired=True)
        if only is not None:
            leases = [lease for lease in (self.cache.get(LEASE_GROUP, "Lease", name,
                                                         self.namespace) for name in only)
                      if lease is not None]
        else:
            leases = self.cache.list(LEASE_GROUP, "Lease", self.namespace)
        for lease in leases:
            name = name_of(lease)
            if not name.startswith(LEASE_PREFIX) or name in wanted:
                continue
            holder = str(spec_of(lease).get("holderIdentity") or "")
            if holder and (agents is None or holder in agents):
                self._release(lease, now)
            elif not holder and gc:
                with contextlib.suppress(ApiError):  # already gone
                    self.store.delete(LEASE_GROUP, "Lease", name, self.namespace)

    def _create(self, want: Desired, holder: str, now: float) -> None:
        stamp = self.store.clock.rfc3339_micro(now)
        body: Obj = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": want.lease, "namespace": self.namespace},
            "spec": {
                "holderIdentity": holder,
                "leaseDurationSeconds": int(self.timings.duration),
                "acquireTime": stamp,
                "renewTime": stamp,
                "leaseTransitions": 0,
            },
        }
        try:
            self.store.create(body, manager=self.manager)
            self.record(want.service, "LeaseAcquired", f"{holder} took {want.lease}")
        except ApiError as exc:
            if exc.status != 409:
                self.record(want.service, "LeaseCreateFailed", exc.message)

    def _write_lease(self, lease: Obj, holder: str, now: float, *, acquired: bool) -> None:
        current = self.store.try_get(LEASE_GROUP, "Lease", name_of(lease), self.namespace)
        if current is None:
            return
        spec = current.setdefault("spec", {})
        stamp = self.store.clock.rfc3339_micro(now)
        if acquired:
            if spec.get("holderIdentity") != holder:
                spec["leaseTransitions"] = int(spec.get("leaseTransitions") or 0) + 1
            spec["acquireTime"] = stamp
            self.record(name_of(lease), "LeaseAcquired", f"{holder} took {name_of(lease)}")
        spec["holderIdentity"] = holder
        spec["renewTime"] = stamp
        spec["leaseDurationSeconds"] = int(self.timings.duration)
        self._update(current)

    def _release(self, lease: Obj, now: float) -> None:
        """ReleaseOnCancel: empty holder, 1 s duration."""
        current = self.store.try_get(LEASE_GROUP, "Lease", name_of(lease), self.namespace)
        if current is None:
            return
        spec = current.setdefault("spec", {})
        stamp = self.store.clock.rfc3339_micro(now)
        spec.update({"holderIdentity": "", "leaseDurationSeconds": 1,
                     "acquireTime": stamp, "renewTime": stamp})
        self.record(name_of(lease), "LeaseReleased", f"{name_of(lease)} released")
        self._update(current)

    def _update(self, lease: Obj) -> None:
        meta(lease).pop("resourceVersion", None)
        try:
            self.store.update(lease, manager=self.manager)
        except ApiError as exc:
            self.record(name_of(lease), "LeaseUpdateFailed", exc.message)

    def _clock_epoch(self) -> _dt.datetime:
        return _parse_time(self.store.clock.rfc3339_micro(0.0)) or _dt.datetime(
            1970, 1, 1, tzinfo=_dt.UTC)

    def _seconds(self, text: object) -> float:
        stamp = str(text or "")
        cached = self._times.get(stamp)
        if cached is not None:
            return cached
        parsed = _parse_time(stamp)
        value = float("-inf") if parsed is None else (parsed - self._epoch).total_seconds()
        if len(self._times) > 4096:
            self._times.clear()
        self._times[stamp] = value
        return value

    def _renew_time(self, lease: Obj) -> float:
        return self._seconds(spec_of(lease).get("renewTime"))

    def _expiry(self, lease: Obj) -> float:
        spec = spec_of(lease)
        duration = float(spec.get("leaseDurationSeconds") or self.timings.duration)
        return self._renew_time(lease) + duration

    # ----------------------------------------------------------------- view

    def announcements(self) -> list[CiliumAnnouncement]:
        """Services whose lease holder is a live, eligible agent: that node answers ARP."""
        if not self.enabled:
            return []
        out = []
        for want in self.desired.values():
            lease = self.cache.get(LEASE_GROUP, "Lease", want.lease, self.namespace)
            if lease is None:
                continue
            holder = str(spec_of(lease).get("holderIdentity") or "")
            if holder and holder in want.candidates:
                out.append(CiliumAnnouncement(want.service, want.lease, holder, want.ips,
                                              want.interfaces.get(holder, ())))
        return sorted(out, key=lambda a: a.service)


def race_order(lease: str, candidates: tuple[str, ...]) -> list[str]:
    """The order in which ``candidates`` win the race for ``lease`` (a stable stand-in for
    first come, first served that differs between leases)."""
    return sorted(candidates,
                  key=lambda node: hashlib.sha256(f"{lease}/{node}".encode()).hexdigest())


def _parse_time(text: str) -> _dt.datetime | None:
    for fmt in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return _dt.datetime.strptime(text, fmt).replace(tzinfo=_dt.UTC)
        except ValueError:
            continue
    return None
