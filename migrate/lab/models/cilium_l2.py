"""Model of Cilium's L2 announcer (pkg/l2announcer), following reference/cilium.md §2 [C2].

One :class:`CiliumL2Agent` runs per agent pod, i.e. per node. Like ``l2announcer.go`` each
agent keeps the policies whose ``nodeSelector`` matches its own CiliumNode's labels, the
Services those policies select (``upsertPolicy`` / ``upsertSvc``), and runs one client-go
leader election per selected Service on the Lease ``cilium-l2announce-<namespace>-<name>`` in
Cilium's namespace, with its node name as identity (``newLeaseLock``,
``serviceLeaderElection``: ``ReleaseOnCancel: true``).

The election follows client-go ``tools/leaderelection/leaderelection.go``: a candidate GETs
the Lease every retry period, jittered by ``JitterFactor`` 1.2, and takes it once it has seen
no change for the lease duration (or finds it released); the holder renews every retry period
(one UPDATE, the fast path), and gives the Lease up (empty holder, 1 s duration) when it stops
(the Service is no longer selected, or the agent shuts down gracefully). Every one of those
calls is in the lab's request record.

The lease is taken whether or not the agent can answer: only the devices of the agent
(``devices`` in cilium-config, else detected; :mod:`migrate.lab.models.interfaces`) that a
matching policy's ``interfaces`` select, and that carry an address, answer ARP
(``desiredEntries``). So a node can hold a lease and answer nothing. Entries follow the
leadership after the datapath delay; on release the Lease is written first, the entries go
after (``gcOrphanedService``: ``stop()`` then ``recalculateL2EntriesTableEntries``).

Which eligible node wins is first come, first served: nothing ties the elections of two
Services together, so Services sharing one IP can get different holders, and then both nodes
answer ARP for it (cilium/cilium#48419). With the instant timing every candidate tries at the
same moment; the tie is broken by ``race_order`` (a hash of the lease name and the node), which
differs from Service to Service and stays the same from run to run.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from migrate.lab.models._common import (
    Announcer,
    Component,
    Event,
    Model,
    Obj,
    Process,
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
from migrate.lab.models.cilium_bgp import AGENT_KINDS
from migrate.lab.models.cilium_lbipam import L2_CLASS, service_labels
from migrate.lab.models.interfaces import Devices, agent_devices
from migrate.lab.runtime import CILIUM_AGENT, Timer
from migrate.lab.store import ApiError

if TYPE_CHECKING:
    from migrate.lab.models import Runtime

LEASE_GROUP = "coordination.k8s.io"
LEASE_PREFIX = "cilium-l2announce-"
POLICY_KIND = "CiliumL2AnnouncementPolicy"
AGENT_LABEL = ("k8s-app", "cilium")
GC_INTERVAL = 60.0


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
class CiliumAnnouncement:
    """Who holds one Service's lease and answers for its IPs."""

    service: str
    lease: str
    node: str
    ips: tuple[str, ...]
    interfaces: tuple[str, ...]
    """Devices answering; empty = every device of the agent (the policies name none)."""


@dataclass
class Selected:
    """A Service some of this agent's policies select, with its election."""

    service: str
    lease: str
    ips: tuple[str, ...] = ()
    interfaces: tuple[str, ...] = ()
    answers: bool = False
    """Whether any selected device can answer (matches and carries an address)."""
    elector: Elector | None = None


@dataclass
class Record:
    """A Lease spec as the elector observed it (leaderelection's observedRecord)."""

    holder: str
    duration: float
    acquire: str
    renew: str
    transitions: int

    @classmethod
    def of(cls, lease: Obj) -> Record:
        spec = spec_of(lease)
        return cls(str(spec.get("holderIdentity") or ""),
                   float(spec.get("leaseDurationSeconds") or 0),
                   str(spec.get("acquireTime") or ""), str(spec.get("renewTime") or ""),
                   int(spec.get("leaseTransitions") or 0))


@dataclass
class Elector:
    """client-go's LeaderElector for one Service's lease, run by one agent."""

    lease: str
    service: str
    leading: bool = False
    observed: Record | None = None
    observed_time: float = 0.0
    resource_version: str = ""
    renewed: float = 0.0
    done: bool = False
    timer: Timer | None = field(default=None, repr=False)


class CiliumL2Agent(Announcer):
    """The L2 announcer of the agent on one node."""

    name = "cilium-l2"
    manager = "cilium-agent"
    stack = "cilium"

    def __init__(self, process: Process) -> None:
        super().__init__(process)
        component = process.component
        assert isinstance(component, CiliumAgents)
        self.namespace = component.namespace
        self.node = process.node or ""
        self.timings = LeaseTimings()
        self.feature_enabled = True
        self.devices = Devices({}, anything=True)
        self.policies: list[Obj] = []
        self.selected: dict[str, Selected] = {}
        self._gc: Timer | None = None
        from migrate.lab.models.cilium_bgp import AgentBGP

        self.bgp = AgentBGP(self)
        """The agent's BGP control plane (:mod:`migrate.lab.models.cilium_bgp`)."""

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """The agent starts: read its config and devices, select, start the elections."""
        self._refresh()
        self._gc = self.process.later(GC_INTERVAL, self._lease_gc, label="lease GC")
        self.bgp.start()

    def stop(self, *, graceful: bool) -> None:
        """The agent exits. Gracefully: every election is cancelled and its lease released
        (ReleaseOnCancel); killed: nothing is written, leases expire on their own. Either
        way nothing is answered any more."""
        for sel in list(self.selected.values()):
            if sel.elector is not None:
                if graceful and sel.elector.leading:
                    self._release(sel.elector)
                if sel.elector.timer is not None:
                    sel.elector.timer.cancel()
        self.silence()
        self.selected = {}
        self.bgp.stop(graceful=graceful)

    def handle(self, event: Event) -> None:
        """Services, policies, this node and cilium-config change what is selected (the BGP
        kinds go to the agent's BGP side only)."""
        if self.bgp.handle(event):
            return
        group, kind = event.group_kind
        if (group, kind) == ("", "Service"):
            self._refresh(only=service_key(event.obj))
            return
        other_config = kind == "ConfigMap" and name_of(event.obj) != "cilium-config"
        other_node = kind in ("Node", "CiliumNode") and name_of(event.obj) != self.node
        if not (other_config or other_node):
            self._refresh()

    # ----------------------------------------------------------------- selection

    def _config(self) -> dict[str, str]:
        config = self.cache.get("", "ConfigMap", "cilium-config", self.namespace)
        if config is None:
            return {}
        return {str(k): str(v) for k, v in (config.get("data") or {}).items()}

    def _node_labels(self) -> dict[str, str]:
        """Policies select on the node's CiliumNode labels [C2]; the Node's when absent."""
        cilium_node = self.cache.get("cilium.io", "CiliumNode", self.node)
        if cilium_node is not None:
            return labels_of(cilium_node)
        return labels_of(self.cache.get("", "Node", self.node) or {})

    def _refresh(self, only: str | None = None) -> None:
        """Recompute the selected Services (one, or all), start and stop elections, and move
        the datapath entries of what this agent leads."""
        if only is None:
            data = self._config()
            if not data and self.cache.get("", "ConfigMap", "cilium-config",
                                           self.namespace) is None:
                self.feature_enabled = True
            else:
                self.feature_enabled = data.get("enable-l2-announcements",
                                                "false").lower() == "true"
            self.timings = LeaseTimings.from_config(data)
            self.devices = agent_devices(self.cache.get("", "Node", self.node), data)
            labels = self._node_labels()
            self.policies = [
                p for p in self.cache.list("cilium.io", POLICY_KIND)
                if not isinstance(spec_of(p).get("nodeSelector"), dict)
                or selector_matches(spec_of(p)["nodeSelector"], labels)]
            keys = {service_key(s) for s in self.cache.list("", "Service")} | set(self.selected)
        else:
            keys = {only}
        for key in sorted(keys):
            namespace, _, name = key.partition("/")
            svc = self.cache.get("", "Service", name, namespace)
            want = self._desire(svc) if svc is not None and self.feature_enabled else None
            held = self.selected.get(key)
            if want is None:
                if held is not None:
                    self._unselect(held)
                continue
            if held is None:
                self.selected[key] = want
                want.elector = Elector(want.lease, key)
                self._try_later(want.elector, 0.0)
            else:
                held.ips, held.interfaces, held.answers = want.ips, want.interfaces, want.answers
            self._entries(key)

    def _desire(self, svc: Obj) -> Selected | None:
        """What this agent's policies want for one Service (None: not selected, or no IP)."""
        spec = spec_of(svc)
        if spec.get("loadBalancerClass") not in (None, L2_CLASS):
            return None  # [C2] no class or io.cilium/l2-announcer only
        labels = service_labels(svc)
        ips: list[str] = []
        devices: set[str] = set()
        everything = False
        answers = False
        for policy in self.policies:
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
            regexes = [str(i) for i in pspec.get("interfaces") or []]
            if not _regexes_compile(regexes):
                continue  # io.cilium/bad-interface-regex: upsertPolicy fails, not selected
            chosen, can = self.devices.matching(regexes)
            if can:
                answers = True
                if not chosen:
                    everything = True
                devices |= set(chosen)
        if not ips:
            return None
        return Selected(service_key(svc), f"{LEASE_PREFIX}{namespace_of(svc)}-{name_of(svc)}",
                        tuple(ips), () if everything else tuple(sorted(devices)), answers)

    def _unselect(self, sel: Selected) -> None:
        """gcOrphanedService: stop the election (releasing a held lease), then the entries."""
        self.selected.pop(sel.service, None)
        elector = sel.elector
        if elector is not None:
            if elector.timer is not None:
                elector.timer.cancel()
            elector.done = True
            if elector.leading:
                self._release(elector)
        self._entries(sel.service, force_off=True)

    # ----------------------------------------------------------------- leader election

    def _try_later(self, elector: Elector, seconds: float, *, jitter: bool = False) -> None:
        if elector.done:
            return
        if jitter and self.runtime.timing.lease_jitter > 0:
            seconds += seconds * self.runtime.timing.lease_jitter * self.process.rng.random()
        key = race_key(elector.lease, self.node)
        elector.timer = self.process.later(seconds, lambda: self._try(elector), key=key,
                                           label=f"{self.node} {elector.lease}")

    def _lease(self, name: str) -> Obj | None:
        self.api("GET", "leases", name)
        return self.store.peek(LEASE_GROUP, "Lease", name, self.namespace)

    def _try(self, elector: Elector) -> None:
        """tryAcquireOrRenew, then the next attempt one retry period later."""
        sel = self.selected.get(elector.service)
        if sel is None or sel.elector is not elector or elector.done:
            return
        now = self.now()
        retry = self.timings.retry_period
        if elector.leading and now >= self._renew_deadline(elector):
            self._stop_leading(elector, sel)
            return
        if elector.leading and self._is_leader(elector) and self._valid(elector, now) and \
                self._update(elector, sel, now, fast=True):
            self._try_later(elector, retry)
            return
        lease = self._lease(elector.lease)
        if lease is None:
            if self._create(elector, sel, now):
                self._lead(elector, sel, True)
                self._try_later(elector, retry)
            else:
                self._try_later(elector, retry, jitter=True)
            return
        record = Record.of(lease)
        if record != elector.observed:
            elector.observed = record
            elector.observed_time = now
        elector.resource_version = str(meta(lease).get("resourceVersion") or "")
        if record.holder and record.holder != self.node and self._valid(elector, now):
            # "lock is held by ... and has not yet expired". A candidate tries again; the
            # leader keeps its entries and polls until its renew deadline (renew()).
            self._retry(elector, now)
            return
        if self._update(elector, sel, now, fast=False):
            if not elector.leading:
                self._lead(elector, sel, True)
            self._try_later(elector, retry)
            return
        self._retry(elector, now)

    def _renew_deadline(self, elector: Elector) -> float:
        """When a leader that fails to renew stops leading. renew() runs one poll round
        a retry period after the last success (wait.Until) and gives the round the renew
        deadline (PollImmediateUntil with a timeout): so retry + renew deadline after the
        last successful renewal (client-go tools/leaderelection/leaderelection.go)."""
        scale = self.runtime.timing.scale
        return elector.renewed + (self.timings.retry_period + self.timings.renew_deadline) \
            * scale

    def _retry(self, elector: Elector, now: float) -> None:
        """A failed attempt: a candidate retries after a jittered retry period (acquire's
        JitterUntil); a leader polls every retry period, and at its deadline stops."""
        retry = self.timings.retry_period
        if not elector.leading:
            self._try_later(elector, retry, jitter=True)
            return
        until_deadline = (self._renew_deadline(elector) - now) / self.runtime.timing.scale
        self._try_later(elector, max(min(retry, until_deadline), 0.0))

    def _stop_leading(self, elector: Elector, sel: Selected) -> None:
        """renew() returned: release() (a no-op unless the observed holder is still us),
        then OnStoppedLeading drops the entries; RunOrDie returns and
        serviceLeaderElection ends (pkg/l2announcer/l2announcer.go): this agent does not
        stand for the lease again while the Service stays selected."""
        self._release(elector)
        self._lead(elector, sel, False)
        elector.done = True

    def _is_leader(self, elector: Elector) -> bool:
        """IsLeader: the holder of the record last observed is this agent."""
        return elector.observed is not None and elector.observed.holder == self.node

    def _valid(self, elector: Elector, now: float) -> bool:
        """isLeaseValid: the observed record has not been stale for its duration."""
        if elector.observed is None:
            return False
        return elector.observed_time + elector.observed.duration * self.runtime.timing.scale \
            > now

    def _stamp(self, now: float) -> str:
        return self.store.clock.rfc3339_micro(now)

    def _body(self, elector: Elector, spec: Obj, *, versioned: bool = True) -> Obj:
        metadata: Obj = {"name": elector.lease, "namespace": self.namespace}
        if versioned:
            metadata["resourceVersion"] = elector.resource_version
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
                "spec": spec}

    @staticmethod
    def _observe(elector: Elector, lease: Obj, now: float) -> None:
        """Our write went through: that is the record we observe now."""
        elector.observed = Record.of(lease)
        elector.observed_time = now
        elector.resource_version = str(meta(lease).get("resourceVersion") or "")
        elector.renewed = now

    def _create(self, elector: Elector, sel: Selected, now: float) -> bool:
        stamp = self._stamp(now)
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": int(self.timings.duration),
                "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}
        self.api("CREATE", "leases", elector.lease)
        try:
            created = self.store.create(self._body(elector, spec, versioned=False),
                                        manager=self.manager)
        except ApiError as exc:
            if exc.status != 409:
                self.record(sel.service, "LeaseCreateFailed", exc.message)
            return False
        self.record(sel.service, "LeaseAcquired", f"{self.node} took {elector.lease}")
        self._observe(elector, created, now)
        return True

    def _update(self, elector: Elector, sel: Selected, now: float, *, fast: bool) -> bool:
        """Write our record (renew, or take over); False on a conflict or a failure."""
        observed = elector.observed or Record("", 0.0, "", "", 0)
        stamp = self._stamp(now)
        leading = observed.holder == self.node  # IsLeader: the observed holder is us
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": int(self.timings.duration),
                "acquireTime": observed.acquire if leading else stamp, "renewTime": stamp,
                "leaseTransitions": observed.transitions if leading or observed.holder ==
                self.node else observed.transitions + 1}
        self.api("UPDATE", "leases", elector.lease)
        try:
            updated = self.store.update(self._body(elector, spec), manager=self.manager)
        except ApiError as exc:
            if not (fast and exc.status == 409):
                self.record(sel.service, "LeaseUpdateFailed", exc.message)
            return False
        if not leading:
            self.record(sel.service, "LeaseAcquired", f"{self.node} took {elector.lease}")
        self._observe(elector, updated, now)
        return True

    def _release(self, elector: Elector) -> None:
        """ReleaseOnCancel: empty holder, 1 s duration (leaderelection ``release``), written
        only while the record last observed names this agent (``if !le.IsLeader()``)."""
        if not self._is_leader(elector):
            elector.leading = False
            elector.done = True
            return
        now = self.now()
        stamp = self._stamp(now)
        observed = elector.observed or Record("", 0.0, "", "", 0)
        body = self._body(elector, {"holderIdentity": "", "leaseDurationSeconds": 1,
                                    "acquireTime": stamp, "renewTime": stamp,
                                    "leaseTransitions": observed.transitions})
        self.api("UPDATE", "leases", elector.lease)
        try:
            self.store.update(body, manager=self.manager)
            self.record(elector.lease, "LeaseReleased", f"{elector.lease} released")
        except ApiError as exc:
            self.record(elector.lease, "LeaseReleaseFailed", exc.message)
        elector.leading = False
        elector.done = True

    def _lead(self, elector: Elector, sel: Selected, leading: bool) -> None:
        """OnStartedLeading / OnStoppedLeading: the entries follow."""
        elector.leading = leading
        self._entries(sel.service)

    # ----------------------------------------------------------------- datapath

    def _entries(self, key: str, *, force_off: bool = False) -> None:
        """recalculateL2EntriesTableEntries: answer for the Service's IPs on its devices
        while leading, after the datapath delay."""
        sel = self.selected.get(key)
        leading = (not force_off and sel is not None and sel.elector is not None
                   and sel.elector.leading)
        ips = sel.ips if leading and sel is not None and sel.answers else ()
        self.hand_to_datapath(key, ips)

    def announcements(self) -> list[CiliumAnnouncement]:
        """What this agent answers for on the wire now."""
        out = []
        for key, ips in sorted(self.on_wire.items()):
            sel = self.selected.get(key)
            lease = sel.lease if sel is not None else f"{LEASE_PREFIX}{key.replace('/', '-')}"
            interfaces = sel.interfaces if sel is not None else ()
            out.append(CiliumAnnouncement(key, lease, self.node, ips, interfaces))
        return out

    def holds(self) -> list[str]:
        """The leases this agent leads now (whether or not it answers)."""
        return sorted(s.lease for s in self.selected.values()
                      if s.elector is not None and s.elector.leading)

    # ----------------------------------------------------------------- GC

    def _lease_gc(self) -> None:
        """leaseGC, every minute: delete the agents' leases nobody holds."""
        self._gc = self.process.later(GC_INTERVAL, self._lease_gc, label="lease GC")
        self.api("LIST", "leases", "")
        leases, _ = self.store.select(LEASE_GROUP, "Lease", self.namespace)
        for lease in leases:
            if name_of(lease).startswith(LEASE_PREFIX) and not spec_of(lease).get(
                    "holderIdentity"):
                self.api("DELETE", "leases", name_of(lease))
                with contextlib.suppress(ApiError):  # another agent deleted it first
                    self.store.delete(LEASE_GROUP, "Lease", name_of(lease), self.namespace,
                                      manager=self.manager)


class CiliumAgents(Component):
    """Cilium's agent DaemonSet: one L2 announcer per node it runs on."""

    kind = CILIUM_AGENT
    watched = (("", "Service"), ("", "Node"), ("", "ConfigMap"), ("cilium.io", POLICY_KIND),
               ("cilium.io", "CiliumNode"), *AGENT_KINDS)

    def __init__(self, runtime: Runtime, *, namespace: str = "kube-system",
                 enabled: bool = True) -> None:
        super().__init__(runtime, enabled=enabled)
        self.namespace = namespace

    def make_model(self, process: Process) -> Model:
        return CiliumL2Agent(process)

    def models(self) -> list[CiliumL2Agent]:
        """The L2 announcer of every running agent."""
        return [p.model for p in self.running() if isinstance(p.model, CiliumL2Agent)]

    def announcements(self) -> list[CiliumAnnouncement]:
        """What every agent answers for now, by Service."""
        if not self.enabled:
            return []
        out = [a for m in self.models() for a in m.announcements()]
        return sorted(out, key=lambda a: (a.service, a.node))

    def holders(self) -> dict[str, list[str]]:
        """Lease name -> the agents that believe they lead it (one, unless something went
        wrong)."""
        out: dict[str, list[str]] = {}
        for model in self.models():
            for lease in model.holds():
                out.setdefault(lease, []).append(model.node)
        return out


def _regexes_compile(regexes: list[str]) -> bool:
    try:
        for text in regexes:
            re.compile(text)
    except re.error:
        return False
    return True


def race_key(lease: str, node: str) -> str:
    """The tie-break of simultaneous attempts on ``lease`` (see :func:`race_order`)."""
    return hashlib.sha256(f"{lease}/{node}".encode()).hexdigest()


def race_order(lease: str, candidates: tuple[str, ...]) -> list[str]:
    """The order in which ``candidates`` win the race for ``lease`` when they try at the same
    moment (a stable stand-in for first come, first served that differs between leases)."""
    return sorted(candidates, key=lambda node: race_key(lease, node))
