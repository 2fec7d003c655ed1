"""Pieces every controller model shares: the informer cache, label selectors, address ranges,
conditions, durations and the "is this workload running" rule.

The models never read the store while deciding: like a real controller they work from an
informer cache that is updated one event at a time, in commit order (see :class:`Cache`). They
write through the store, whose events come back to them through the same queue.
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from migrate.lab.store import ApiError, Store, split_api_version
from migrate.model.addresses import AddressRange
from migrate.model.selectors import matches

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
    ("discovery.k8s.io", "EndpointSlice"),
    ("apps", "Deployment"),
    ("apps", "DaemonSet"),
    ("coordination.k8s.io", "Lease"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("metallb.io", "IPAddressPool"),
    ("metallb.io", "L2Advertisement"),
    ("metallb.io", "ServiceL2Status"),
    ("cilium.io", "CiliumLoadBalancerIPPool"),
    ("cilium.io", "CiliumL2AnnouncementPolicy"),
    ("cilium.io", "CiliumNode"),
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
    """One store event as the models receive it."""

    type: str  # ADDED | MODIFIED | DELETED | RESYNC
    obj: Obj
    old: Obj | None

    @property
    def group_kind(self) -> GroupKind:
        """(group, kind) of the object."""
        return group_kind(self.obj)


class Cache:
    """The informer view shared by the models: each watched object as of the event being
    processed (not as the store holds it now), so that events are seen in commit order.

    Indexed by namespace, and EndpointSlices by the Service they belong to, so that a model
    looking at one Service does not walk the whole cluster."""

    def __init__(self) -> None:
        self._objects: dict[GroupKind, dict[str, dict[str, Obj]]] = {
            gk: {} for gk in WATCHED_KINDS}
        self._slices: dict[tuple[str, str], dict[str, Obj]] = {}

    def load(self, store: Store) -> None:
        """List every watched kind from the store (an informer's initial sync)."""
        self._objects = {gk: {} for gk in WATCHED_KINDS}
        self._slices = {}
        for group, kind in WATCHED_KINDS:
            try:
                items = store.list(group, kind)
            except ApiError:
                items = []  # kind not served (its CRD is absent)
            for obj in items:
                self._put((group, kind), obj)

    def _put(self, gk: GroupKind, obj: Obj) -> None:
        self._objects[gk].setdefault(namespace_of(obj), {})[name_of(obj)] = obj
        if gk == ("discovery.k8s.io", "EndpointSlice"):
            owner = labels_of(obj).get("kubernetes.io/service-name", "")
            self._slices.setdefault((namespace_of(obj), owner), {})[name_of(obj)] = obj

    def _drop(self, gk: GroupKind, obj: Obj) -> None:
        namespace, name = namespace_of(obj), name_of(obj)
        held = self._objects[gk].get(namespace, {}).pop(name, None)
        if held is not None and gk == ("discovery.k8s.io", "EndpointSlice"):
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


# --------------------------------------------------------------------------- workloads


def deployment_replicas(obj: Obj) -> int:
    """spec.replicas (1 when unset, as the API server defaults it)."""
    value = spec_of(obj).get("replicas")
    return 1 if value is None else int(value)


class WorkloadRule:
    """Decides whether a controller's workload runs, from the Deployments/DaemonSets it finds.

    No matching workload ever seen: treated as running (a snapshot may omit it). Seen and then
    deleted: stopped. Otherwise ``is_up`` decides over the matching objects.
    """

    def __init__(
        self, group: str, kind: str, matches: Callable[[Obj], bool],
        is_up: Callable[[list[Obj]], bool],
    ) -> None:
        self.group = group
        self.kind = kind
        self._matches = matches
        self._is_up = is_up
        self.seen = False

    def found(self, objects: Iterable[Obj]) -> list[Obj]:
        """The matching workload objects."""
        return [o for o in objects if self._matches(o)]

    def running(self, objects: Iterable[Obj]) -> bool:
        """Whether the workload runs, given every object of its kind."""
        found = self.found(objects)
        if found:
            self.seen = True
            return self._is_up(found)
        return not self.seen


class Model:
    """Base of the controller models: switchable, fed one event at a time, with timers."""

    name = "model"
    manager = "lab-model"

    def __init__(self, store: Store, cache: Cache, *, enabled: bool = True) -> None:
        self.store = store
        self.cache = cache
        self._enabled = enabled
        self.events: list[tuple[float, str, str, str]] = []
        """What the real controller would log/emit: (time, object, reason, message)."""

    @property
    def enabled(self) -> bool:
        """Whether the model runs at all (switched off = not installed)."""
        return self._enabled

    def set_enabled(self, enabled: bool) -> None:
        """Switch the model on (it starts from the cache) or off (it forgets its state)."""
        if enabled == self._enabled:
            return
        self._enabled = enabled
        if enabled:
            self.start()
        else:
            self.stop()

    def start(self) -> None:
        """Start from the cache (a process start)."""

    def stop(self) -> None:
        """Forget in-memory state (the process is gone)."""

    def handle(self, event: Event) -> None:
        """Process one event (the cache already reflects it)."""

    def next_deadline(self) -> float | None:
        """When the model next needs :meth:`on_time`, or None."""
        return None

    def on_time(self, now: float) -> None:
        """Run timers that are due at ``now``."""

    def record(self, obj_key: str, reason: str, message: str) -> None:
        """Remember an event the real controller would emit."""
        self.events.append((self.store.clock.now(), obj_key, reason, message))
        log.debug("%s: %s %s: %s", self.name, obj_key, reason, message)
        if len(self.events) > 10_000:
            del self.events[:5_000]

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
        try:
            return self.store.update(current, subresource="status", manager=self.manager)
        except ApiError as exc:
            self.record(f"{namespace or ''}/{name}", "StatusWriteFailed", exc.message)
            return None


class WorkloadModel(Model):
    """A model whose process runs only while its workload does (see :class:`WorkloadRule`).

    Subclasses set ``running`` and ``workload`` in ``__init__``.
    """

    running: bool
    workload: WorkloadRule

    def follow_workload(self, event: Event) -> bool:
        """On an event of the workload's kind, start or stop the process as the workload now
        runs or not; True when it was such an event (nothing more to do with it)."""
        rule = self.workload
        if event.group_kind != (rule.group, rule.kind):
            return False
        running = rule.running(self.cache.list(rule.group, rule.kind))
        if running and not self.running:
            self.start()
        elif not running and self.running:
            self.stop()
        return True
