"""Pieces every controller model shares: informer views, processes, label selectors, address
ranges, conditions and durations.

A model instance is the controller code of one *process* (one MetalLB controller pod, one
speaker, one Cilium operator, one agent). The process has its own informer view
(:class:`Cache`), fed one event at a time, in commit order, after the process's own reaction
delay; a model never reads the store to decide, only to write (and, for client-go leader
election, to GET a lease, as the real library does). The views of all processes share the
object dicts of one event (nobody mutates them), so a hundred speakers cost a hundred dicts of
references, not a hundred copies.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migrate.lab.runtime import Timer, seeded
from migrate.lab.store import ApiError, Store, split_api_version
from migrate.model.addresses import AddressRange
from migrate.model.selectors import matches

if TYPE_CHECKING:
    from migrate.lab.models import Runtime

Obj = dict[str, Any]
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
GroupKind = tuple[str, str]

log = logging.getLogger("migrate.lab.models")

WATCHED_KINDS: tuple[GroupKind, ...] = (
    ("", "Namespace"),
    ("", "Node"),
    ("", "Service"),
    ("", "Endpoints"),
    ("", "Pod"),
    ("", "ConfigMap"),
    ("", "Secret"),
    ("discovery.k8s.io", "EndpointSlice"),
    ("apps", "Deployment"),
    ("apps", "DaemonSet"),
    ("coordination.k8s.io", "Lease"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("metallb.io", "IPAddressPool"),
    ("metallb.io", "L2Advertisement"),
    ("metallb.io", "ServiceL2Status"),
    ("metallb.io", "ServiceBGPStatus"),
    ("metallb.io", "BGPPeer"),
    ("metallb.io", "BGPAdvertisement"),
    ("metallb.io", "BFDProfile"),
    ("metallb.io", "Community"),
    ("cilium.io", "CiliumLoadBalancerIPPool"),
    ("cilium.io", "CiliumL2AnnouncementPolicy"),
    ("cilium.io", "CiliumNode"),
    ("cilium.io", "CiliumBGPClusterConfig"),
    ("cilium.io", "CiliumBGPPeerConfig"),
    ("cilium.io", "CiliumBGPAdvertisement"),
    ("cilium.io", "CiliumBGPNodeConfigOverride"),
    ("cilium.io", "CiliumBGPNodeConfig"),
)
"""The kinds the models watch; events of any other kind are dropped."""


# --------------------------------------------------------------------------- objects


def group_kind(obj: Obj) -> GroupKind:
    """(group, kind) of an object from its apiVersion and kind."""
    group, _ = split_api_version(str(obj.get("apiVersion", "")))
    return group, str(obj.get("kind", ""))


def meta(obj: Obj) -> Obj:
    """``metadata`` (never None)."""
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def name_of(obj: Obj) -> str:
    """metadata.name."""
    return str(meta(obj).get("name", ""))


def namespace_of(obj: Obj) -> str:
    """metadata.namespace ("" when cluster-scoped)."""
    return str(meta(obj).get("namespace") or "")


def labels_of(obj: Obj) -> dict[str, str]:
    """metadata.labels (never None)."""
    value = meta(obj).get("labels")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def annotations_of(obj: Obj) -> dict[str, str]:
    """metadata.annotations (never None)."""
    value = meta(obj).get("annotations")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def spec_of(obj: Obj) -> Obj:
    """``spec`` (never None)."""
    value = obj.get("spec")
    return value if isinstance(value, dict) else {}


def service_key(obj: Obj) -> str:
    """``namespace/name`` of a namespaced object."""
    return f"{namespace_of(obj)}/{name_of(obj)}"


def ingress_ips(svc: Obj) -> list[str]:
    """The ``status.loadBalancer.ingress[].ip`` strings of a Service, in order."""
    status = svc.get("status")
    lb = status.get("loadBalancer") if isinstance(status, dict) else None
    ingress = lb.get("ingress") if isinstance(lb, dict) else None
    if not isinstance(ingress, list):
        return []
    return [str(i["ip"]) for i in ingress if isinstance(i, dict) and i.get("ip")]


def resource_version(obj: Obj) -> int:
    """metadata.resourceVersion as an int (0 when absent or not numeric)."""
    try:
        return int(str(meta(obj).get("resourceVersion", "0")))
    except ValueError:
        return 0


def parse_ip(text: str) -> IPAddress | None:
    """An address, or None when ``text`` is not one."""
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


# --------------------------------------------------------------------------- selectors


def selector_matches(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    """Whether a Kubernetes LabelSelector matches ``labels``.

    ``None`` and ``{}`` match everything (callers decide what an absent selector means). An
    unknown operator matches nothing, as LabelSelectorAsSelector would fail.
    """
    return matches(selector, labels)


def any_selector_matches(selectors: Iterable[Obj], labels: Mapping[str, str]) -> bool:
    """OR over a list of selectors; an empty list matches everything."""
    items = list(selectors)
    return not items or any(selector_matches(s, labels) for s in items)


# --------------------------------------------------------------------------- addresses


@dataclass(frozen=True, order=True)
class IPRange(AddressRange):
    """An inclusive address range of one family (the project's AddressRange, plus helpers)."""

    def contains(self, ip: IPAddress) -> bool:
        """Whether ``ip`` lies inside the range."""
        return ip in self

    def address(self, offset: int) -> IPAddress:
        """The address ``offset`` places after ``first``."""
        return ipaddress.ip_address(int(self.first) + offset)

    def __str__(self) -> str:
        nets = self.networks()
        if len(nets) == 1:
            return str(nets[0])
        return f"{self.first}-{self.last}"


def cidr_range(text: str) -> IPRange:
    """The range of a CIDR (host bits masked); ValueError when malformed."""
    net = ipaddress.ip_network(text.strip(), strict=False)
    return IPRange(net.network_address, net.broadcast_address)


# --------------------------------------------------------------------------- conditions


def find_condition(conditions: Iterable[Obj], ctype: str) -> Obj | None:
    """The condition of a type, or None."""
    for cond in conditions:
        if isinstance(cond, dict) and cond.get("type") == ctype:
            return cond
    return None


def set_condition(conditions: list[Obj], new: Obj) -> None:
    """meta.SetStatusCondition: lastTransitionTime changes only when the status does."""
    existing = find_condition(conditions, str(new["type"]))
    if existing is None:
        conditions.append(dict(new))
        return
    if existing.get("status") != new["status"]:
        existing["status"] = new["status"]
        existing["lastTransitionTime"] = new["lastTransitionTime"]
    for field in ("reason", "message", "observedGeneration"):
        existing[field] = new[field]


def remove_condition(conditions: list[Obj], ctype: str) -> bool:
    """Remove a condition type; True when one was there."""
    before = len(conditions)
    conditions[:] = [c for c in conditions if not (isinstance(c, dict) and c.get("type") == ctype)]
    return len(conditions) != before


# --------------------------------------------------------------------------- durations

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_go_duration(text: str | None, default: float) -> float:
    """Seconds of a Go duration (``15s``, ``1m30s``, ``500ms``); ``default`` when unparseable."""
    if not text:
        return default
    value = str(text).strip()
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return default
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


# --------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class Event:
    """One store event as the models receive it (``MEMBERS``: a memberlist change, whose
    ``obj`` holds ``members``, the nodes with a live speaker)."""

    type: str  # ADDED | MODIFIED | DELETED | MEMBERS
    obj: Obj
    old: Obj | None

    @property
    def group_kind(self) -> GroupKind:
        """(group, kind) of the object."""
        return group_kind(self.obj)


SLICE_KIND: GroupKind = ("discovery.k8s.io", "EndpointSlice")


class Cache:
    """An informer view: each watched object as of the last event delivered to its owner (not
    as the store holds it now), so that events are seen in commit order, late.

    Indexed by namespace, and EndpointSlices by the Service they belong to, so that a model
    looking at one Service does not walk the whole cluster. ``kinds`` limits the view to what
    its process watches; events of other kinds are not applied."""

    def __init__(self, kinds: Iterable[GroupKind] = WATCHED_KINDS) -> None:
        self.kinds = tuple(kinds)
        self._objects: dict[GroupKind, dict[str, dict[str, Obj]]] = {gk: {} for gk in self.kinds}
        self._slices: dict[tuple[str, str], dict[str, Obj]] = {}

    def watches(self, gk: GroupKind) -> bool:
        """Whether this view holds objects of a kind."""
        return gk in self._objects

    def load(self, store: Store) -> None:
        """List every watched kind from the store (an informer's initial sync)."""
        self._objects = {gk: {} for gk in self.kinds}
        self._slices = {}
        for group, kind in self.kinds:
            try:
                items, _ = store.select(group, kind)
            except ApiError:
                items = []  # kind not served (its CRD is absent)
            for obj in items:
                self._put((group, kind), obj)

    def clone(self, kinds: Iterable[GroupKind]) -> Cache:
        """A view of ``kinds`` as this one holds them now, sharing the object dicts (a
        process's initial list, taken from the lab's up-to-date view)."""
        view = Cache(kinds)
        for gk in view.kinds:
            held = self._objects.get(gk, {})
            view._objects[gk] = {ns: dict(objects) for ns, objects in held.items()}
        if view.watches(SLICE_KIND):
            view._slices = {key: dict(objects) for key, objects in self._slices.items()}
        return view

    def _put(self, gk: GroupKind, obj: Obj) -> None:
        self._objects[gk].setdefault(namespace_of(obj), {})[name_of(obj)] = obj
        if gk == SLICE_KIND:
            owner = labels_of(obj).get("kubernetes.io/service-name", "")
            self._slices.setdefault((namespace_of(obj), owner), {})[name_of(obj)] = obj

    def _drop(self, gk: GroupKind, obj: Obj) -> None:
        namespace, name = namespace_of(obj), name_of(obj)
        held = self._objects[gk].get(namespace, {}).pop(name, None)
        if held is not None and gk == SLICE_KIND:
            owner = labels_of(held).get("kubernetes.io/service-name", "")
            self._slices.get((namespace, owner), {}).pop(name, None)

    def apply(self, event: Event) -> bool:
        """Apply one event; False when it is for an unwatched kind or older than what we hold."""
        gk = event.group_kind
        if gk not in self._objects:
            return False
        held = self.get(gk[0], gk[1], name_of(event.obj), namespace_of(event.obj))
        if held is not None and resource_version(held) > resource_version(event.obj):
            return False  # a stale event queued before the initial list
        self._drop(gk, event.obj)
        if event.type != "DELETED":
            self._put(gk, event.obj)
        return True

    def endpoint_slices(self, namespace: str, service: str) -> list[Obj]:
        """The EndpointSlices labelled ``kubernetes.io/service-name=<service>``."""
        objects = self._slices.get((namespace, service), {})
        return [objects[name] for name in sorted(objects)]

    def list(self, group: str, kind: str, namespace: str | None = None) -> list[Obj]:
        """Objects of a kind (optionally one namespace), sorted by namespace then name."""
        by_ns = self._objects.get((group, kind), {})
        namespaces = sorted(by_ns) if namespace is None else [namespace]
        out: list[Obj] = []
        for ns in namespaces:
            objects = by_ns.get(ns, {})
            out.extend(objects[name] for name in sorted(objects))
        return out

    def get(self, group: str, kind: str, name: str, namespace: str = "") -> Obj | None:
        """One object, or None."""
        return self._objects.get((group, kind), {}).get(namespace, {}).get(name)


# --------------------------------------------------------------------------- processes


def deployment_replicas(obj: Obj) -> int:
    """spec.replicas (1 when unset, as the API server defaults it)."""
    value = spec_of(obj).get("replicas")
    return 1 if value is None else int(value)


class Process:
    """One running program of a component: its informer view, its reaction delay, its timers.

    Events reach it through :meth:`enqueue`, each after a delay drawn from its own generator
    and never before an earlier one (an informer delivers in order). Timers made with
    :meth:`later` die with the process. ``pod`` is the Pod it runs in (None for a process the
    lab assumes because the snapshot has no workload for it); ``node`` the node of a
    DaemonSet's process.
    """

    def __init__(self, runtime: Runtime, component: Component, name: str, *,
                 node: str | None = None, pod: Obj | None = None,
                 template: Obj | None = None) -> None:
        self.runtime = runtime
        self.component = component
        self.name = name
        self.node = node
        self.pod = pod
        self.template = template
        """The workload the process was started from (its pod template), when known."""
        self.rng = seeded(runtime.seed, component.kind, name)
        self.cache = Cache(component.watched)
        self.running = False
        self.terminating = False
        self.started_at = 0.0
        self._generation = 0
        self._last_delivery = 0.0
        self._channels: dict[str, float] = {}
        self.model: Model | None = None

    @property
    def label(self) -> str:
        """``kind/name`` as the request record names the caller."""
        return f"{self.component.kind}/{self.name}"

    @property
    def spec_source(self) -> Obj | None:
        """What the process's image and flags are read from: its pod, else its workload."""
        return self.pod if self.pod is not None else self.template

    def start(self) -> None:
        """The process runs: its informer lists the cluster, then its model starts."""
        if self.running:
            return
        self.running = True
        self.started_at = self.runtime.now()
        self._generation += 1
        self._last_delivery = self.started_at
        self.cache = self.runtime.master.clone(self.component.watched)
        self.model = self.component.make_model(self)
        self.model.start()

    def stop(self, *, graceful: bool) -> None:
        """The process ends: ``graceful`` (it exits after SIGTERM, running its shutdown
        hooks) or not (killed, or its pod deleted at once)."""
        if not self.running:
            return
        self.running = False
        self._generation += 1
        if self.model is not None:
            self.model.stop(graceful=graceful)

    def enqueue(self, event: Event) -> None:
        """Deliver ``event`` after this process's reaction delay, in order."""
        if not self.running:
            return
        if event.type != "MEMBERS" and not self.cache.watches(event.group_kind):
            return
        delay = self.runtime.timing.reaction_of(self.component.kind).sample(self.rng)
        due = max(self.runtime.scheduler.base() + delay * self.runtime.timing.scale,
                  self._last_delivery)
        self._last_delivery = due
        generation = self._generation
        self.runtime.scheduler.at(due, lambda: self._deliver(event, generation),
                                  label=f"{self.label} {event.type}")

    def _deliver(self, event: Event, generation: int) -> None:
        if generation != self._generation or not self.running or self.model is None:
            return
        self.runtime.processed += 1
        if event.type == "MEMBERS" or self.cache.apply(event):
            self.model.handle(event)

    def later(self, seconds: float, callback: Callable[[], None], *, key: str = "",
              label: str = "", absolute: float | None = None) -> Timer:
        """A timer of this process (``seconds`` of modelled time, or at ``absolute``); it does
        nothing once the process has stopped or restarted."""
        generation = self._generation

        def fire() -> None:
            if generation == self._generation and self.running:
                self.runtime.processed += 1
                callback()

        scheduler = self.runtime.scheduler
        if absolute is not None:
            return scheduler.at(absolute, fire, key=key, label=label or self.label)
        return scheduler.after(seconds, fire, key=key, label=label or self.label)

    def in_order(self, channel: str, seconds: float, callback: Callable[[], None]) -> None:
        """Run ``callback`` after ``seconds`` of modelled time, but never before what was
        queued earlier on the same ``channel`` (a datapath applies its updates in order)."""
        base = self.runtime.scheduler.base()
        due = max(base + seconds * self.runtime.timing.scale, self._channels.get(channel, base))
        self._channels[channel] = due
        if due <= base and seconds <= 0:
            callback()
            return
        self.later(0.0, callback, absolute=due, label=f"{self.label} {channel}")

    def delay(self, what: str = "reaction") -> float:
        """A modelled duration drawn for this process (unscaled)."""
        timing = self.runtime.timing
        if what == "datapath":
            return timing.datapath.sample(self.rng)
        return timing.reaction_of(self.component.kind).sample(self.rng)


class Component:
    """One kind of process (MetalLB's controller, its speakers, Cilium's operator, its
    agents): the processes that run now, their shared event log, a switch."""

    kind = "component"
    watched: tuple[GroupKind, ...] = WATCHED_KINDS

    def __init__(self, runtime: Runtime, *, enabled: bool = True) -> None:
        self.runtime = runtime
        self.enabled = enabled
        self.processes: dict[str, Process] = {}
        self.events: list[tuple[float, str, str, str]] = []
        """What the real programs would log/emit: (time, object, reason, message)."""

    def make_model(self, process: Process) -> Model:
        """The controller code one process runs."""
        raise NotImplementedError

    def running(self) -> list[Process]:
        """The processes that run now, by name."""
        return [p for _, p in sorted(self.processes.items()) if p.running]

    def add(self, process: Process) -> None:
        """A process of this component exists (started when the component is enabled; while
        the lab starts, only once every process of the snapshot is known)."""
        self.processes[process.name] = process
        if not self.enabled:
            return
        if self.runtime.deferred is not None:
            self.runtime.deferred.append(process)
            return
        process.start()
        self.on_change()

    def present(self) -> list[Process]:
        """The processes running now, and those about to start with the lab."""
        deferred = self.runtime.deferred or []
        return [p for _, p in sorted(self.processes.items())
                if p.running or any(p is d for d in deferred)]

    def remove(self, name: str, *, graceful: bool) -> None:
        """A process exits."""
        process = self.processes.pop(name, None)
        if process is not None and process.running:
            process.stop(graceful=graceful)
            self.on_change()

    def mark_terminating(self, name: str) -> None:
        """The pod of a process got a deletionTimestamp; the process keeps running."""
        process = self.processes.get(name)
        if process is not None:
            process.terminating = True
            self.on_change()

    def on_change(self) -> None:
        """Something about the set of processes changed (leader election, memberlist)."""

    def set_enabled(self, enabled: bool) -> None:
        """Switch on (every process starts from the current state) or off (they stop at
        once, as if killed)."""
        if enabled == self.enabled:
            return
        self.enabled = enabled
        for process in list(self.processes.values()):
            if enabled:
                process.start()
            else:
                process.stop(graceful=False)
        self.on_change()

    def enqueue(self, event: Event) -> None:
        """Hand an event to every running process (each takes it after its own delay)."""
        for process in self.processes.values():
            if process.running:
                process.enqueue(event)

    def record(self, obj_key: str, reason: str, message: str) -> None:
        """Remember an event a process would emit."""
        self.events.append((self.runtime.now(), obj_key, reason, message))
        log.debug("%s: %s %s: %s", self.kind, obj_key, reason, message)
        if len(self.events) > 10_000:
            del self.events[:5_000]


class Model:
    """The controller code of one process: fed one event at a time, writing through the
    store, with timers of its process."""

    name = "model"
    manager = "lab-model"

    def __init__(self, process: Process) -> None:
        self.process = process
        self.runtime = process.runtime
        self.store: Store = process.runtime.store
        self.cache = process.cache

    @property
    def events(self) -> list[tuple[float, str, str, str]]:
        """The component's event log."""
        return self.process.component.events

    def start(self) -> None:
        """Start from the process's view (its initial list)."""

    def stop(self, *, graceful: bool) -> None:
        """The process ends (``graceful``: its shutdown hooks run)."""

    def handle(self, event: Event) -> None:
        """Process one event (the view already reflects it)."""

    def now(self) -> float:
        """The clock's time."""
        return self.runtime.now()

    def record(self, obj_key: str, reason: str, message: str) -> None:
        """Remember an event the real program would emit."""
        self.process.component.record(obj_key, reason, message)

    def api(self, verb: str, resource: str, name: str) -> None:
        """Count one API call of this process in the lab's request record."""
        self.runtime.requests.add(self.runtime.now(), self.process.label, verb, resource, name)

    # ----------------------------------------------------------------- writes

    def write_status(self, group: str, kind: str, name: str, namespace: str | None,
                     status: Obj) -> Obj | None:
        """Replace ``.status`` of the stored object (None when it is gone)."""
        current = self.store.try_get(group, kind, name, namespace)
        if current is None:
            return None
        if current.get("status") == status:
            return current
        current["status"] = status
        meta(current).pop("resourceVersion", None)
        self.api("UPDATE", f"{kind.lower()}/status", name)
        try:
            return self.store.update(current, subresource="status", manager=self.manager)
        except ApiError as exc:
            self.record(f"{namespace or ''}/{name}", "StatusWriteFailed", exc.message)
            return None


class Announcer(Model):
    """A model that answers ARP for IPs on its node (a speaker, an agent): what it answers
    is on the wire, and in the lab's announcement record, per Service."""

    stack = "none"
    node = ""

    def __init__(self, process: Process) -> None:
        super().__init__(process)
        self.on_wire: dict[str, tuple[str, ...]] = {}
        """Service key -> the IPs it answers for right now (after the datapath delay)."""
        self._wanted: dict[str, tuple[str, ...]] = {}
        """Service key -> the IPs last handed to the datapath."""

    def hand_to_datapath(self, key: str, ips: tuple[str, ...]) -> None:
        """Answer for exactly ``ips`` for this Service once the datapath has applied it
        (updates are applied in order)."""
        if self._wanted.get(key, ()) == ips:
            return
        if ips:
            self._wanted[key] = ips
        else:
            self._wanted.pop(key, None)
        self.process.in_order("datapath", self.process.delay("datapath"),
                              lambda: self.put_on_wire(key, ips))

    def put_on_wire(self, key: str, ips: tuple[str, ...]) -> None:
        """Answer for exactly ``ips`` for this Service from now on."""
        before = self.on_wire.get(key, ())
        if before == ips:
            return
        now = self.now()
        record = self.runtime.announcements
        for ip in before:
            record.answer(now, self.stack, self.node, ip, False)
        for ip in ips:
            record.answer(now, self.stack, self.node, ip, True)
        if ips:
            self.on_wire[key] = ips
        else:
            self.on_wire.pop(key, None)

    def silence(self) -> None:
        """The process is gone: nothing answers any more."""
        for key in list(self.on_wire):
            self.put_on_wire(key, ())
        self._wanted = {}


def container_flags(source: Obj | None, *words: str) -> tuple[list[str], dict[str, str]]:
    """Arguments and environment of the first container of ``source`` (a Pod or a workload)
    whose name or image names one of ``words`` (any container when none is given)."""
    from migrate.lab.versions import containers_of

    if source is None:
        return [], {}
    for container in containers_of(source):
        text = f"{container.get('name', '')} {container.get('image', '')}"
        if words and not any(w in text for w in words):
            continue
        args = [str(a) for a in (container.get("command") or []) + (container.get("args") or [])]
        env = {str(e.get("name")): str(e.get("value") or "") for e in container.get("env") or []
               if isinstance(e, dict) and e.get("name")}
        return args, env
    return [], {}


def flag_value(args: list[str], flag: str) -> str | None:
    """``--flag=value`` or ``--flag value`` among ``args`` (``""`` for a bare ``--flag``)."""
    for index, arg in enumerate(args):
        if arg == flag:
            following = args[index + 1] if index + 1 < len(args) else ""
            return "" if following.startswith("-") else following
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    return None
