"""Model of Cilium's LB-IPAM (operator/pkg/lbipam), following reference/cilium.md §1
(cited as [C1], [C1.4] …) and, where the reference summarises, the lbipam.go code it names.

LB-IPAM runs in the leader among the operator's pods (client-go leader election on the
``cilium-operator-resource-lock`` Lease; the lab elects without writing that Lease). A
Terminating leader keeps leading until its process exits. The leader handles one event at a
time. It is dormant until the first pool exists [C1.1]; when it starts it loads every pool
before looking at any Service [C1.4].

Version bands (the image tag of the leader's pod; an unknown tag is the newest, 1.20.2):

* start-up (``initialize``): from 1.18.2 every Service is stored first and all are
  re-validated once synced (PR #41147); before, each Service was handled as the informer
  delivered it (namespace/name order), so a pending Service matched by a pool could take, with
  AllocAny, an IP whose holder was not seen yet (issue #43131);
* pool modification (``handlePoolModified``): before 1.18.2 a changed pool's ranges were all
  recreated, dropping every allocation in them, and the unsatisfied Services were served first,
  so they could take IPs still held by others (PR #41122; issue #40358, reported on 1.17 and on
  1.16.4 in #39089); from 1.18.2 unchanged ranges keep their allocations and satisfied Services
  are re-validated first;
* re-validation (``revalidateAllServices``): one pass per Service (strip, import, satisfy) until
  1.20, so after a pool shrinks a Service whose IP left the pool can take an IP another one
  still holds (issue #41458, affected 1.17.6 to 1.19.x); from 1.20.0 all imports happen before
  any allocation (PR #45543);
* import of an IP already allocated to a compatible Service of the same sharing key: stripped,
  then the Service joins the key's first IP (which can differ) in 1.19.4 to 1.19.6 (PR #46262,
  fixed in 1.19.7); joined in place otherwise, as the reference's table states it.
"""

from __future__ import annotations

import copy
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from migrate.lab.models._common import (
    Component,
    Event,
    IPAddress,
    IPRange,
    Model,
    Obj,
    Process,
    annotations_of,
    cidr_range,
    find_condition,
    labels_of,
    meta,
    name_of,
    namespace_of,
    parse_ip,
    remove_condition,
    selector_matches,
    service_key,
    set_condition,
    spec_of,
)
from migrate.lab.runtime import CILIUM_OPERATOR, Delay
from migrate.lab.versions import below, version_in, within

if TYPE_CHECKING:
    from migrate.lab.models import Runtime

CILIUM_GROUP = "cilium.io"
POOL_KIND = "CiliumLoadBalancerIPPool"
FIELD_MANAGER = "cilium-operator-lb-ipam"
SATISFIED = "cilium.io/IPAMRequestSatisfied"
POOL_CONFLICT = "cilium.io/PoolConflict"
IPS_TOTAL = "cilium.io/IPsTotal"
IPS_AVAILABLE = "cilium.io/IPsAvailable"
IPS_USED = "cilium.io/IPsUsed"
NAMESPACE_LABEL = "io.kubernetes.service.namespace"
NAME_LABEL = "io.kubernetes.service.name"
BGP_CLASS = "io.cilium/bgp-control-plane"
L2_CLASS = "io.cilium/l2-announcer"


def first_annotation(svc: Obj, *names: str) -> str:
    """The first annotation present among ``names`` (new name, then alias) [C1.2]."""
    annotations = annotations_of(svc)
    for name in names:
        if annotations.get(name):
            return annotations[name]
    return ""


def service_labels(svc: Obj) -> dict[str, str]:
    """Labels plus the two pseudo-labels pools and policies can select on (svcLabels) [C1]."""
    labels = labels_of(svc)
    labels[NAME_LABEL] = name_of(svc)
    labels[NAMESPACE_LABEL] = namespace_of(svc)
    return labels


def requested_ips(svc: Obj) -> list[IPAddress]:
    """spec.loadBalancerIP then ``lbipam.cilium.io/ips`` (alias ``io.cilium/lb-ipam-ips``),
    de-duplicated (getSVCRequestedIPs) [C1.2]."""
    texts = []
    legacy = str(spec_of(svc).get("loadBalancerIP") or "")
    if legacy:
        texts.append(legacy)
    value = first_annotation(svc, "lbipam.cilium.io/ips", "io.cilium/lb-ipam-ips")
    texts.extend(t.strip() for t in value.split(",") if t.strip())
    out: list[IPAddress] = []
    for text in texts:
        ip = parse_ip(text)
        if ip is not None and ip not in out:
            out.append(ip)
    return out


# --------------------------------------------------------------------------- state


@dataclass(eq=False)
class LBRange:
    """One block of a pool with its allocations (None = reserved first/last address)."""

    pool: str
    range: IPRange
    from_cidr: bool
    allocations: dict[IPAddress, SharingCluster | None] = field(default_factory=dict)
    internally_disabled: bool = False  # pool conflicting
    externally_disabled: bool = False  # spec.disabled

    @property
    def disabled(self) -> bool:
        """No allocation and no import from a disabled or conflicting range."""
        return self.internally_disabled or self.externally_disabled

    def reserve_first_last(self) -> None:
        """allowFirstLastIPs "No": only for cidr blocks larger than two addresses [C1]."""
        if self.range.size > 2:
            self.allocations.setdefault(self.range.first, None)
            self.allocations.setdefault(self.range.last, None)

    def free_first_last(self) -> None:
        """allowFirstLastIPs back to "Yes": free the reserved addresses."""
        for ip in (self.range.first, self.range.last):
            if ip in self.allocations and self.allocations[ip] is None:
                del self.allocations[ip]

    def alloc_any(self) -> IPAddress | None:
        """A free address; Cilium's AllocAny gives any, the model the lowest [C1.5]."""
        if len(self.allocations) >= self.range.size:
            return None
        for offset in range(self.range.size):
            ip = self.range.address(offset)
            if ip not in self.allocations:
                return ip
        return None


@dataclass(eq=False)
class SharingCluster:
    """The Services holding one allocated address."""

    ip: IPAddress
    origin: LBRange
    services: list[ServiceView] = field(default_factory=list)

    def is_compatible(self, sv: ServiceView) -> tuple[bool, str]:
        """Compatible with every other member [C1.2]."""
        for other in self.services:
            if other is sv:
                continue
            ok, reason = other.is_compatible(sv)
            if not ok:
                return False, reason
        return True, ""


@dataclass(eq=False)
class ServiceView:
    """LB-IPAM's view of one Service (ServiceView)."""

    key: str
    namespace: str
    name: str
    generation: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    status: Obj = field(default_factory=dict)
    requested_ips: list[IPAddress] = field(default_factory=list)
    want_v4: bool = False
    want_v6: bool = False
    sharing_key: str = ""
    sharing_cross_namespace: list[str] = field(default_factory=list)
    external_traffic_policy: str = ""
    ports: list[tuple[int, str]] = field(default_factory=list)
    protocol_differentiation: bool = True
    selector: dict[str, str] = field(default_factory=dict)
    allocated: list[SharingCluster] = field(default_factory=list)

    def ingress(self) -> list[Obj]:
        """status.loadBalancer.ingress (a live list)."""
        lb = self.status.setdefault("loadBalancer", {})
        return lb.setdefault("ingress", [])  # type: ignore[no-any-return]

    def conditions(self) -> list[Obj]:
        """status.conditions (a live list)."""
        return self.status.setdefault("conditions", [])  # type: ignore[no-any-return]

    def is_satisfied(self) -> bool:
        """isSatisfied: judged on the status ingress, not on the allocations."""
        ips = [parse_ip(str(i.get("ip", ""))) for i in self.ingress()]
        if self.requested_ips:
            return all(req in ips for req in self.requested_ips)
        has_v4 = any(ip is not None and ip.version == 4 for ip in ips)
        has_v6 = any(ip is None or ip.version == 6 for ip in ips)
        return not ((self.want_v4 and not has_v4) or (self.want_v6 and not has_v6))

    def is_compatible(self, other: ServiceView) -> tuple[bool, str]:
        """ServiceView.isCompatible [C1.2]: no port with the same number and protocol. With
        protocol differentiation off (``bpf-lb-proto-diff: "false"``, or Cilium before 1.17,
        cilium#34691) the port number alone clashes."""
        if self.sharing_key != other.sharing_key:
            return False, "different sharing key"
        if self.namespace != other.namespace and (
                not ({other.namespace, "*"} & set(self.sharing_cross_namespace))
                or not ({self.namespace, "*"} & set(other.sharing_cross_namespace))):
            return False, "different and not permitted namespace"
        if self.protocol_differentiation:
            clash = bool(set(self.ports) & set(other.ports))
        else:
            clash = bool({p for p, _ in self.ports} & {p for p, _ in other.ports})
        if clash:
            return False, "same port"
        if self.external_traffic_policy != other.external_traffic_policy:
            return False, "different ExternalTrafficPolicy"
        if self.external_traffic_policy == "Local" and (
                not self.selector or not other.selector or self.selector != other.selector):
            return False, "compatible ExternalTrafficPolicy local but selecting different " \
                "set of pods"
        return True, ""


@dataclass(eq=False)
class LBPool:
    """A pool as LB-IPAM holds it: its object (status kept in memory) and ranges."""

    obj: Obj
    ranges: list[LBRange]
    order: int

    @property
    def name(self) -> str:
        """metadata.name."""
        return name_of(self.obj)

    @property
    def selector(self) -> Obj | None:
        """spec.serviceSelector (None = every Service) [C1]."""
        value = spec_of(self.obj).get("serviceSelector")
        return value if isinstance(value, dict) else None

    def selects(self, labels: dict[str, str]) -> bool:
        """Whether the pool's serviceSelector matches."""
        return self.selector is None or selector_matches(self.selector, labels)

    def conditions(self) -> list[Obj]:
        """The in-memory status conditions."""
        status = self.obj.setdefault("status", {})
        return status.setdefault("conditions", [])  # type: ignore[no-any-return]

    def conflicting(self) -> bool:
        """isPoolConflicting."""
        cond = find_condition(self.conditions(), POOL_CONFLICT)
        return cond is not None and cond.get("status") == "True"


def block_range(block: Obj) -> tuple[IPRange, bool]:
    """ipRangeFromBlock: cidr (masked) or start[/stop]; ValueError when malformed [C1]."""
    if block.get("cidr"):
        return cidr_range(str(block["cidr"])), True
    start = ipaddress.ip_address(str(block.get("start", "")).strip())
    stop = ipaddress.ip_address(str(block["stop"]).strip()) if block.get("stop") else start
    return IPRange(start, stop), False


def _join(cluster: SharingCluster, sv: ServiceView) -> None:
    """``sv`` shares the address ``cluster`` already holds [C1.2]."""
    cluster.services.append(sv)
    sv.allocated.append(cluster)


# --------------------------------------------------------------------------- the model


class CiliumLBIPAM(Model):
    """The LB-IPAM cell of the leading operator process.

    ``cilium-config`` is read when the operator starts leading, as its flags are.
    """

    name = "cilium-lbipam"
    manager = FIELD_MANAGER

    def __init__(self, process: Process) -> None:
        super().__init__(process)
        component = process.component
        assert isinstance(component, CiliumOperators)
        self.namespace = component.namespace
        source = process.spec_source
        self.version = version_in([source], "operator") if source else None
        self.dormant = True
        self.pools: dict[str, LBPool] = {}
        self.services: dict[str, ServiceView] = {}
        self._unsatisfied: set[str] = set()
        self.sharing_index: dict[str, list[SharingCluster]] = {}
        self._pool_order = 0
        self.lbipam_enabled = True
        self.default_ipam = True
        self.classes: list[str] = []
        self.ipv4_enabled = True
        self.ipv6_enabled = False
        self.protocol_differentiation = True

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Leading starts: read config, load ALL pools, then (if any) all Services [C1.4]."""
        self._reset()
        self._read_config()
        if not self.lbipam_enabled:
            return  # [C1.1] 4. enable-lb-ipam: "false"
        for obj in self.cache.list(CILIUM_GROUP, POOL_KIND):
            self._pool_upsert(obj)
        self._settle_conflicts()
        if self.pools:
            self._initialize_services()

    def stop(self, *, graceful: bool) -> None:
        """Process gone: in-memory allocations are lost (rebuilt by import on start)."""
        self._reset()

    def _reset(self) -> None:
        self.dormant = True
        self.pools = {}
        self.services = {}
        self._unsatisfied = set()
        self.sharing_index = {}

    def _read_config(self) -> None:
        """cilium-config keys [C1.1][C5]; absent keys take the compiled-in defaults."""
        config = self.cache.get("", "ConfigMap", "cilium-config", self.namespace)
        data = (config or {}).get("data") or {}

        def flag(key: str, default: bool) -> bool:
            return str(data.get(key, str(default))).strip().lower() == "true"

        self.lbipam_enabled = flag("enable-lb-ipam", True)
        self.default_ipam = str(data.get("default-lb-service-ipam", "lbipam")) == "lbipam"
        self.classes = []
        if flag("enable-bgp-control-plane", False):
            self.classes.append(BGP_CLASS)
        if flag("enable-l2-announcements", False):
            self.classes.append(L2_CLASS)
        self.ipv4_enabled = flag("enable-ipv4", True)
        self.ipv6_enabled = flag("enable-ipv6", False)
        self.protocol_differentiation = flag("bpf-lb-proto-diff", True)

    def handle(self, event: Event) -> None:
        """One event, in order."""
        group, kind = event.group_kind
        if not self.lbipam_enabled:
            return
        if (group, kind) == (CILIUM_GROUP, POOL_KIND):
            self._pool_event(event)
        elif (group, kind) == ("", "Service") and not self.dormant:
            if event.type == "DELETED":
                self._delete_service(service_key(event.obj))
                self._satisfy_and_update_counts()
            else:
                self._upsert_service(event.obj, init=False)
                self._satisfy_and_update_counts()

    def _pool_event(self, event: Event) -> None:
        if event.type == "DELETED":
            if name_of(event.obj) not in self.pools:
                return
            self._pool_deleted(name_of(event.obj))
            self._settle_conflicts()
            self._satisfy_and_update_counts()
            if not self.pools:
                # [C1.1] 5. last pool gone: restart into the dormant state
                self._reset()
            return
        was_dormant = self.dormant
        self._pool_upsert(event.obj)
        if was_dormant and self.pools:
            # initialize(): the first pool (and what is known by now) before any Service
            self._settle_conflicts()
            self._initialize_services()

    def _initialize_services(self) -> None:
        """From 1.18.2: store every Service (init), then revalidateAllServices and counts
        [C1.4] (PR #41147). Before: each Service is handled in full as the informer delivers
        it, in namespace/name order, before the sync (issue #43131)."""
        self.dormant = False
        if below(self.version, 1, 18, 2):
            for svc in self.cache.list("", "Service"):
                self._upsert_service(svc, init=False)
                self._satisfy_and_update_counts()
        else:
            for svc in self.cache.list("", "Service"):
                self._upsert_service(svc, init=True)
        self._revalidate_all()
        self._update_all_pool_counts()

    # ----------------------------------------------------------------- pools

    def _pool_upsert(self, obj: Obj) -> None:
        """poolOnUpsert: new or modified pool, settle conflicts, satisfy, counts."""
        name = name_of(obj)
        existing = self.pools.get(name)
        if existing is not None:
            if spec_of(existing.obj) == spec_of(obj):
                return  # status-only change
            self._pool_modified(existing, obj)
        elif not self._new_pool(obj):
            return
        self._settle_conflicts()
        self._satisfy_and_update_counts()

    def _new_pool(self, obj: Obj) -> bool:
        """handleNewPool: ranges, allowFirstLastIPs, PoolConflict False on every new pool."""
        ranges = self._ranges_of(obj)
        if ranges is None:
            return False
        self._pool_order += 1
        pool = LBPool(obj=_pool_copy(obj), ranges=ranges, order=self._pool_order)
        self.pools[pool.name] = pool
        self._unmark_pool(pool)
        return True

    def _ranges_of(self, obj: Obj) -> list[LBRange] | None:
        spec = spec_of(obj)
        ranges = []
        for block in spec.get("blocks") or []:
            try:
                rng, from_cidr = block_range(block)
            except (ValueError, KeyError):
                self.record(name_of(obj), "PoolInvalid", f"error parsing ip block {block!r}")
                return None
            lb_range = LBRange(pool=name_of(obj), range=rng, from_cidr=from_cidr,
                               externally_disabled=bool(spec.get("disabled")))
            if from_cidr and spec.get("allowFirstLastIPs") == "No":
                lb_range.reserve_first_last()
            ranges.append(lb_range)
        return ranges

    def _pool_modified(self, pool: LBPool, obj: Obj) -> None:
        """handlePoolModified: drop vanished ranges, add new ones, then revalidate all."""
        old_no = spec_of(pool.obj).get("allowFirstLastIPs") == "No"
        new_no = spec_of(obj).get("allowFirstLastIPs") == "No"
        status = pool.obj.get("status")
        pool.obj = _pool_copy(obj)
        if status is not None:
            pool.obj["status"] = status
        wanted = self._ranges_of(obj)
        if wanted is None:
            return
        kept: list[LBRange] = []
        # before 1.18.2 every range of a changed pool is recreated, its allocations dropped
        # (PR #41122); from 1.18.2 an unchanged range keeps them
        recreate = below(self.version, 1, 18, 2)
        for rng in pool.ranges:
            match = None if recreate else next((w for w in wanted if w.range == rng.range), None)
            if match is None:
                self._delete_range_allocations(rng)
                continue
            if match.from_cidr and old_no != new_no:
                if new_no:
                    rng.reserve_first_last()
                else:
                    rng.free_first_last()
            kept.append(rng)
        for new in wanted:
            if all(new.range != k.range for k in kept):
                kept.append(new)
        disabled = bool(spec_of(obj).get("disabled"))
        for rng in kept:
            rng.externally_disabled = disabled
            rng.internally_disabled = pool.conflicting()
        pool.ranges = kept
        self._revalidate_all()

    def _pool_deleted(self, name: str) -> None:
        """handlePoolDeleted: free its ranges, strip and re-satisfy affected Services."""
        pool = self.pools[name]
        modified: list[ServiceView] = []
        for rng in pool.ranges:
            for sv in self._delete_range_allocations(rng):
                if sv not in modified:
                    modified.append(sv)
        del self.pools[name]
        for sv in modified:  # reconcileServicesAfterRangeDeletion
            self._reconcile(sv)

    def _delete_range_allocations(self, rng: LBRange) -> list[ServiceView]:
        touched = []
        for sv in self._ordered_services():
            before = len(sv.allocated)
            sv.allocated = [c for c in sv.allocated if c.origin is not rng]
            if len(sv.allocated) != before:
                touched.append(sv)
        for cluster in list(rng.allocations.values()):
            if cluster is not None:
                self._unindex(cluster)
        return touched

    def _settle_conflicts(self) -> None:
        """settleConflicts: the newer pool (creationTimestamp) of an overlap is marked
        conflicting and its ranges disabled; marks are removed once resolved [C1]."""
        for outer in list(self.pools.values()):
            if outer.conflicting():
                continue
            internal = _internal_overlap(outer.ranges)
            if internal is not None:
                self._mark_conflicting(outer, outer, *internal)
                continue
            for inner in self.pools.values():
                if inner is outer or inner.conflicting():
                    continue
                overlap = _overlap(outer.ranges, inner.ranges)
                if overlap is None:
                    continue
                if _age(outer) < _age(inner):
                    self._mark_conflicting(inner, outer, overlap[1], overlap[0])
                else:
                    self._mark_conflicting(outer, inner, overlap[0], overlap[1])
                    break
        for pool in self.pools.values():
            if not pool.conflicting() or _internal_overlap(pool.ranges) is not None:
                continue
            if all(other is pool or _overlap(pool.ranges, other.ranges) is None
                   for other in self.pools.values()):
                self._unmark_pool(pool)

    def _mark_conflicting(self, target: LBPool, collision: LBPool, target_range: LBRange,
                          collision_range: LBRange) -> None:
        if target.conflicting():
            return
        for rng in target.ranges:
            rng.internally_disabled = True
        message = (f"Pool conflicts since range '{target_range.range}' overlaps range "
                   f"'{collision_range.range}' from IP Pool '{collision.name}'")
        self.record(target.name, "PoolConflict", message)
        if self._set_pool_condition(target, POOL_CONFLICT, "True", "cidr_overlap", message):
            self._patch_pool(target)

    def _unmark_pool(self, pool: LBPool) -> None:
        for rng in pool.ranges:
            rng.internally_disabled = False
        if self._set_pool_condition(pool, POOL_CONFLICT, "False", "resolved", ""):
            self._patch_pool(pool)

    def _set_pool_condition(self, pool: LBPool, ctype: str, status: str, reason: str,
                            message: str) -> bool:
        generation = int(meta(pool.obj).get("generation") or 0)
        cond = find_condition(pool.conditions(), ctype)
        if (cond is not None and cond.get("status") == status and cond.get("reason") == reason
                and cond.get("message") == message
                and cond.get("observedGeneration") == generation):
            return False
        set_condition(pool.conditions(), {
            "type": ctype, "status": status, "reason": reason, "message": message,
            "observedGeneration": generation, "lastTransitionTime": self.store.clock.rfc3339()})
        return True

    def _update_all_pool_counts(self) -> None:
        """IPsTotal/IPsAvailable/IPsUsed, the number in the message [C1]. Reserved first/last
        addresses count as used, as the allocator's Stats() reports them."""
        for pool in self.pools.values():
            total = sum(r.range.size for r in pool.ranges)
            used = sum(len(r.allocations) for r in pool.ranges)
            changed = self._set_pool_condition(pool, IPS_TOTAL, "Unknown", "noreason", str(total))
            changed |= self._set_pool_condition(pool, IPS_AVAILABLE, "Unknown", "noreason",
                                                str(total - used))
            changed |= self._set_pool_condition(pool, IPS_USED, "Unknown", "noreason", str(used))
            if changed:
                self._patch_pool(pool)

    def _patch_pool(self, pool: LBPool) -> None:
        """JSON-patch replace of /status, field manager cilium-operator-lb-ipam [C1]."""
        self.write_status(CILIUM_GROUP, POOL_KIND, pool.name, None,
                          _deep(pool.obj.get("status") or {}))

    # ----------------------------------------------------------------- services

    def _responsible(self, svc: Obj) -> bool:
        """isResponsibleForSVC [C1.1]."""
        spec = spec_of(svc)
        if spec.get("type") != "LoadBalancer":
            return False
        lb_class = spec.get("loadBalancerClass")
        if lb_class is None:
            return self.default_ipam
        return lb_class in self.classes

    def _requested_families(self, svc: Obj) -> tuple[bool, bool]:
        """serviceIPFamilyRequest [C1.2]."""
        spec = spec_of(svc)
        families = [str(f) for f in spec.get("ipFamilies") or []]
        policy = spec.get("ipFamilyPolicy")
        v4 = v6 = False
        if policy == "PreferDualStack":
            if families:
                v4 = "IPv4" in families and self.ipv4_enabled
                v6 = "IPv6" in families and self.ipv6_enabled
            else:
                v4, v6 = self.ipv4_enabled, self.ipv6_enabled
        elif policy == "RequireDualStack":
            v4, v6 = self.ipv4_enabled, self.ipv6_enabled
        elif families:
            v4, v6 = families[0] == "IPv4", families[0] != "IPv4"
        elif self.ipv4_enabled:
            v4 = True
        elif self.ipv6_enabled:
            v6 = True
        return v4, v6

    def _view(self, svc: Obj) -> ServiceView:
        """serviceViewFromService: refresh the view, keep its allocations."""
        key = service_key(svc)
        sv = self.services.get(key) or ServiceView(key, namespace_of(svc), name_of(svc))
        spec = spec_of(svc)
        sv.generation = int(meta(svc).get("generation") or 0)
        sv.labels = service_labels(svc)
        sv.want_v4, sv.want_v6 = self._requested_families(svc)
        sv.requested_ips = requested_ips(svc)
        sv.sharing_key = first_annotation(svc, "lbipam.cilium.io/sharing-key",
                                          "io.cilium/lb-ipam-sharing-key")
        cross = first_annotation(svc, "lbipam.cilium.io/sharing-cross-namespace",
                                 "io.cilium/lb-ipam-sharing-cross-namespace")
        sv.sharing_cross_namespace = cross.split(",") if cross else []
        sv.external_traffic_policy = str(spec.get("externalTrafficPolicy") or "")
        sv.ports = [(int(p.get("port") or 0), str(p.get("protocol") or "TCP"))
                    for p in spec.get("ports") or [] if isinstance(p, dict)]
        sv.protocol_differentiation = self.protocol_differentiation
        sv.selector = {str(k): str(v) for k, v in (spec.get("selector") or {}).items()}
        sv.status = _deep(svc.get("status") or {})
        return sv

    def _upsert_service(self, svc: Obj, *, init: bool) -> None:
        """handleUpsertService."""
        key = service_key(svc)
        if not self._responsible(svc):
            sv = self.services.get(key)
            if sv is None:
                return
            # no longer ours: release, then empty the ingress and drop our condition [C1.4]
            self._delete_service(key)
            sv.ingress().clear()
            remove_condition(sv.conditions(), SATISFIED)
            self._patch_service(sv)
            return
        sv = self._view(svc)
        if init:
            self._store_view(sv)
            return
        self._strip_invalid_allocations(sv)
        self._reconcile(sv)

    def _reconcile(self, sv: ServiceView) -> None:
        """Strip or import its ingress IPs, satisfy it when it is not, patch the Service when
        either changed anything, and file the view [C1.4]."""
        changed = self._strip_or_import(sv)
        if not sv.is_satisfied() and self._satisfy(sv):
            changed = True
        if changed:
            self._patch_service(sv)
        self._store_view(sv)

    def _store_view(self, sv: ServiceView) -> None:
        """serviceStore.Upsert: file the view as satisfied or unsatisfied."""
        self.services[sv.key] = sv
        if sv.is_satisfied():
            self._unsatisfied.discard(sv.key)
        else:
            self._unsatisfied.add(sv.key)

    def _delete_service(self, key: str) -> None:
        """handleDeletedService: leave every sharing cluster, free emptied addresses."""
        sv = self.services.pop(key, None)
        self._unsatisfied.discard(key)
        if sv is None:
            return
        for cluster in sv.allocated:
            if sv in cluster.services:
                cluster.services.remove(sv)
            if not cluster.services:
                cluster.origin.allocations.pop(cluster.ip, None)
                self._unindex(cluster)
        sv.allocated = []

    def _ordered_services(self) -> list[ServiceView]:
        """Satisfied first, then unsatisfied; by key within each (Go map order is random)."""
        views = sorted(self.services.values(), key=lambda s: s.key)
        return [s for s in views if s.is_satisfied()] + [s for s in views if not s.is_satisfied()]

    def _revalidate_all(self) -> None:
        """revalidateAllServices [C1.4]. From 1.20.0 every strip and import first, then the
        allocations (PR #45543); before, one pass per Service, satisfied ones first from
        1.18.2 (PR #41122), unsatisfied ones first before that."""
        views = self._ordered_services()
        if below(self.version, 1, 18, 2):
            views = [s for s in views if not s.is_satisfied()] + [
                s for s in views if s.is_satisfied()]
        if below(self.version, 1, 20):
            for sv in views:
                self._strip_invalid_allocations(sv)
                changed = self._strip_or_import(sv)
                if not sv.is_satisfied() and self._satisfy(sv):
                    changed = True
                if changed:
                    self._patch_service(sv)
                self._store_view(sv)
            return
        modified: set[str] = set()
        for sv in views:
            self._strip_invalid_allocations(sv)
            if self._strip_or_import(sv):
                modified.add(sv.key)
        for sv in views:
            if not sv.is_satisfied() and self._satisfy(sv):
                modified.add(sv.key)
            if sv.key in modified:
                self._patch_service(sv)
            self._store_view(sv)

    def _satisfy_and_update_counts(self) -> None:
        """satisfyServices over the unsatisfied ones, then pool counts."""
        for key in sorted(self._unsatisfied):
            sv = self.services[key]
            if self._satisfy(sv):
                self._patch_service(sv)
            self._store_view(sv)
        self._update_all_pool_counts()

    def _release(self, sv: ServiceView, cluster: SharingCluster) -> None:
        if sv in cluster.services:
            cluster.services.remove(sv)
        if not cluster.services:
            cluster.origin.allocations.pop(cluster.ip, None)
            self._unindex(cluster)
        sv.allocated.remove(cluster)

    def _strip_invalid_allocations(self, sv: ServiceView) -> None:
        """stripInvalidAllocations: pool gone, selector no longer matching, sharing no longer
        compatible, IP not requested, family not requested."""
        for cluster in list(reversed(sv.allocated)):
            pool = self.pools.get(cluster.origin.pool)
            if pool is None or cluster.origin not in pool.ranges:
                self._release(sv, cluster)
                continue
            if not pool.selects(sv.labels):
                self._release(sv, cluster)
                continue
            if not cluster.is_compatible(sv)[0]:
                self._release(sv, cluster)
                continue
            if sv.requested_ips:
                if cluster.ip not in sv.requested_ips:
                    self._release(sv, cluster)
            elif (cluster.ip.version == 6 and not sv.want_v6) or (
                    cluster.ip.version == 4 and not sv.want_v4):
                self._release(sv, cluster)

    def _strip_or_import(self, sv: ServiceView) -> bool:
        """stripOrImportIngresses, exactly as [C1.4]: an ingress IP LB-IPAM did not allocate
        is kept (imported) only if requested (or nothing is requested), of a requested
        family, inside an enabled, non-conflicting, selector-matching pool, and not already
        allocated; every other ingress entry is removed. True when the ingress list changed."""
        ingress = sv.ingress()
        kept: list[Obj] = []
        kept_ips: set[IPAddress] = set()
        for entry in ingress:
            ip = parse_ip(str(entry.get("ip") or ""))
            if ip is None:
                continue  # hostname-only entries are dropped
            if not any(c.ip == ip for c in sv.allocated):
                if sv.requested_ips and ip not in sv.requested_ips:
                    continue
                if (ip.version == 6 and not sv.want_v6) or (ip.version == 4 and not sv.want_v4):
                    continue
                rng, _ = self._find_range_of_ip(sv, ip)
                if rng is None:
                    self.record(sv.key, "IngressStripped",
                                f"Current IP {ip} does not belong to any matching range, "
                                "deferring to regular allocation logic")
                    continue
                if ip in rng.allocations:
                    existing = rng.allocations[ip]
                    if (existing is not None and sv.sharing_key
                            and not within(self.version, (1, 19, 4), (1, 19, 7))
                            and existing.is_compatible(sv)[0]):
                        _join(existing, sv)  # PR #46262: a compatible sharer keeps its IP
                    else:
                        self.record(sv.key, "IngressStripped",
                                    f"Current IP {ip} is already allocated by another "
                                    "service, deferring to regular allocation logic")
                        continue
                else:
                    self._allocate(sv, rng, ip)
            if ip not in kept_ips:  # duplicates are compacted
                kept.append(entry)
                kept_ips.add(ip)
        changed = len(kept) != len(ingress)
        ingress[:] = kept
        return changed

    def _ranges(self) -> list[LBRange]:
        return [r for pool in self.pools.values() for r in pool.ranges]

    def _find_range_of_ip(self, sv: ServiceView, ip: IPAddress) -> tuple[LBRange | None, bool]:
        """findRangeOfIP: the first enabled range holding ``ip`` whose pool selects the
        Service; the flag tells whether some enabled range held it at all."""
        found_pool = False
        for rng in self._ranges():
            if rng.disabled or not rng.range.contains(ip):
                continue
            pool = self.pools.get(rng.pool)
            if pool is None:
                continue
            found_pool = True
            if not pool.selects(sv.labels):
                continue
            return rng, False
        return None, found_pool

    def _satisfy(self, sv: ServiceView) -> bool:
        """satisfyService: requested IPs, else one per requested family; then sync the
        allocations into the ingress and set the condition. True when the status changed."""
        if sv.requested_ips:
            changed = self._satisfy_specific(sv)
        else:
            changed = False
            has_v4 = any(c.ip.version == 4 for c in sv.allocated)
            has_v6 = any(c.ip.version == 6 for c in sv.allocated)
            if sv.want_v4 and not has_v4:
                changed |= self._satisfy_generic(sv, 4)
            if sv.want_v6 and not has_v6:
                changed |= self._satisfy_generic(sv, 6)
        ingress = sv.ingress()
        present = {str(i.get("ip")) for i in ingress}
        for cluster in sv.allocated:
            if str(cluster.ip) not in present:
                ingress.append({"ip": str(cluster.ip)})
                present.add(str(cluster.ip))
                self.record(sv.key, "IPAllocated", f"Assigning Ingress IP {cluster.ip}")
                changed = True
        if sv.is_satisfied() and self._set_satisfied(sv, True, "satisfied", ""):
            changed = True
        return changed

    def _satisfy_specific(self, sv: ServiceView) -> bool:
        changed = False
        for ip in sv.requested_ips:
            if any(c.ip == ip for c in sv.allocated):
                continue
            rng, found_pool = self._find_range_of_ip(sv, ip)
            if rng is None:
                if found_pool:
                    reason = "pool_selector_mismatch"
                    message = f"The pool with the CIDR containing '{ip}', doesn't select this " \
                        "service"
                else:
                    reason, message = "no_pool", f"No pool exists with a CIDR containing '{ip}'"
                changed |= self._set_satisfied(sv, False, reason, message)
                continue
            if ip in rng.allocations:
                existing = rng.allocations[ip]
                if not sv.sharing_key or existing is None:
                    changed |= self._set_satisfied(
                        sv, False, "already_allocated",
                        f"The IP '{ip}' is already allocated to another service")
                    continue
                ok, why = existing.is_compatible(sv)
                if not ok:
                    changed |= self._set_satisfied(
                        sv, False, "already_allocated_incompatible_service",
                        f"The IP '{ip}' is already allocated to an incompatible service. "
                        f"Reason: {why}")
                    continue
                _join(existing, sv)
                continue
            self._allocate(sv, rng, ip)
        return changed

    def _satisfy_generic(self, sv: ServiceView, family: int) -> bool:
        if sv.sharing_key:
            for cluster in self.sharing_index.get(sv.sharing_key, []):
                if cluster.ip.version == family and cluster.is_compatible(sv)[0]:
                    _join(cluster, sv)
                    return False
        full = False
        for rng in self._ranges():
            if rng.disabled or rng.range.version != family:
                continue
            pool = self.pools.get(rng.pool)
            if pool is None or not pool.selects(sv.labels):
                continue
            ip = rng.alloc_any()
            if ip is None:
                full = True
                continue
            self._allocate(sv, rng, ip)
            return False
        if full:
            return self._set_satisfied(sv, False, "out_of_ips",
                                       "All enabled CiliumLoadBalancerIPPools that match this "
                                       "service ran out of allocatable IPs")
        return self._set_satisfied(sv, False, "no_pool",
                                   "There are no enabled CiliumLoadBalancerIPPools that match "
                                   "this service")

    def _allocate(self, sv: ServiceView, rng: LBRange, ip: IPAddress) -> SharingCluster:
        """Give a free ``ip`` of ``rng`` to ``sv``: a new sharing cluster, indexed by the
        Service's sharing key when it has one [C1.2]."""
        cluster = SharingCluster(ip, rng, [sv])
        rng.allocations[ip] = cluster
        sv.allocated.append(cluster)
        if sv.sharing_key:
            self.sharing_index.setdefault(sv.sharing_key, []).append(cluster)
        return cluster

    def _set_satisfied(self, sv: ServiceView, satisfied: bool, reason: str, message: str) -> bool:
        """The ``cilium.io/IPAMRequestSatisfied`` condition [C1.3]."""
        status = "True" if satisfied else "False"
        cond = find_condition(sv.conditions(), SATISFIED)
        if (cond is not None and cond.get("status") == status and cond.get("reason") == reason
                and cond.get("message") == message
                and cond.get("observedGeneration") == sv.generation):
            return False
        set_condition(sv.conditions(), {
            "type": SATISFIED, "status": status, "reason": reason, "message": message,
            "observedGeneration": sv.generation,
            "lastTransitionTime": self.store.clock.rfc3339()})
        return True

    def _unindex(self, cluster: SharingCluster) -> None:
        for key, clusters in list(self.sharing_index.items()):
            if cluster in clusters:
                clusters.remove(cluster)
                if not clusters:
                    del self.sharing_index[key]

    def _patch_service(self, sv: ServiceView) -> None:
        """JSON-patch ``replace /status`` with the view's status [C1.3]."""
        status = _deep(sv.status)
        lb = status.get("loadBalancer") or {}
        if not lb.get("ingress"):
            lb.pop("ingress", None)
        status["loadBalancer"] = lb
        if not status.get("conditions"):
            status.pop("conditions", None)
        self.write_status("", "Service", sv.name, sv.namespace, status)

    # ----------------------------------------------------------------- views

    def allocations(self) -> dict[str, list[str]]:
        """Service key -> addresses LB-IPAM holds for it (for tests and the lab's reports)."""
        return {sv.key: [str(c.ip) for c in sv.allocated] for sv in self.services.values()}


class CiliumOperator(Model):
    """One operator process: LB-IPAM runs in it while it leads."""

    name = "cilium-operator"
    manager = FIELD_MANAGER

    def __init__(self, process: Process) -> None:
        super().__init__(process)
        self.lbipam: CiliumLBIPAM | None = None
        self.bgp: Model | None = None

    def lead(self) -> None:
        """This process won the operator's leader election: LB-IPAM starts, and the BGP
        resource manager (:mod:`migrate.lab.models.cilium_bgp`)."""
        if self.lbipam is None:
            self.lbipam = CiliumLBIPAM(self.process)
            self.lbipam.start()
        if self.bgp is None:
            from migrate.lab.models.cilium_bgp import OperatorBGP

            component = self.process.component
            assert isinstance(component, CiliumOperators)
            self.bgp = OperatorBGP(self.process, component.namespace)
            self.bgp.start()

    def handle(self, event: Event) -> None:
        """Only the leader's LB-IPAM and BGP manager handle anything."""
        if self.lbipam is not None:
            self.lbipam.handle(event)
        if self.bgp is not None:
            self.bgp.handle(event)

    def stop(self, *, graceful: bool) -> None:
        """The process exits (a leader gives the lease up on a graceful exit)."""
        if self.lbipam is not None:
            self.lbipam.stop(graceful=graceful)
            self.lbipam = None
        self.bgp = None


class CiliumOperators(Component):
    """Cilium's operator Deployment: its processes and their leader election.

    The leader is the process that started first among those running and not Terminating. A
    new leader is chosen when the leader exits: within a retry period of its exit after a
    graceful one (the lease is released, ReleaseOnCancel), after the lease duration after a
    kill (operator defaults: 15 s lease, 2 s retry, jittered by 1.2).
    """

    kind = CILIUM_OPERATOR
    watched = (("", "Service"), ("", "ConfigMap"), (CILIUM_GROUP, POOL_KIND),
               (CILIUM_GROUP, "CiliumNode"), (CILIUM_GROUP, "CiliumBGPClusterConfig"),
               (CILIUM_GROUP, "CiliumBGPPeerConfig"), (CILIUM_GROUP, "CiliumBGPNodeConfigOverride"),
               (CILIUM_GROUP, "CiliumBGPNodeConfig"))
    RELEASED = Delay(0.0, 4.4)
    EXPIRED = Delay(15.0, 19.4)

    def __init__(self, runtime: Runtime, *, namespace: str = "kube-system",
                 enabled: bool = True) -> None:
        super().__init__(runtime, enabled=enabled)
        self.namespace = namespace
        self.leader: Process | None = None
        self._election: object | None = None
        self._last_exit_graceful = True
        self.leaders: list[tuple[float, str]] = []
        """(time, process name) of every leadership taken, in order."""

    def make_model(self, process: Process) -> Model:
        return CiliumOperator(process)

    def remove(self, name: str, *, graceful: bool) -> None:
        if self.leader is not None and self.leader.name == name:
            self._last_exit_graceful = graceful
        super().remove(name, graceful=graceful)

    def set_enabled(self, enabled: bool) -> None:
        if not enabled:
            self.leader = None
        super().set_enabled(enabled)

    def on_change(self) -> None:
        """Elect a leader when there is none running."""
        if self.leader is not None and self.leader.running:
            return
        had_leader = self.leader is not None
        self.leader = None
        if self._election is not None or not self.enabled:
            return
        if not any(not p.terminating for p in self.running()):
            return
        timing = self.runtime.timing
        delay = 0.0
        if had_leader and not timing.is_instant:
            band = self.RELEASED if self._last_exit_graceful else self.EXPIRED
            delay = band.sample(self.runtime.rng)
        self._election = self.runtime.scheduler.after(delay, self._elect,
                                                      label="cilium-operator election")

    def _elect(self) -> None:
        self._election = None
        self.runtime.processed += 1
        if (self.leader is not None and self.leader.running) or not self.enabled:
            return
        candidates = [p for p in self.running() if not p.terminating]
        if not candidates:
            return
        leader = min(candidates, key=lambda p: (p.started_at, p.name))
        self.leader = leader
        self.leaders.append((self.runtime.now(), leader.name))
        assert isinstance(leader.model, CiliumOperator)
        leader.model.lead()

    @property
    def lbipam(self) -> CiliumLBIPAM | None:
        """The LB-IPAM of the leader, if one leads."""
        if self.leader is None or not self.leader.running:
            return None
        model = self.leader.model
        return model.lbipam if isinstance(model, CiliumOperator) else None

    @property
    def dormant(self) -> bool:
        """True when no LB-IPAM runs or the leader's waits for its first pool [C1.1]."""
        lbipam = self.lbipam
        return lbipam is None or lbipam.dormant

    def allocations(self) -> dict[str, list[str]]:
        """Service key -> addresses the leader's LB-IPAM holds for it."""
        lbipam = self.lbipam
        return lbipam.allocations() if lbipam is not None else {}


def _pool_copy(obj: Obj) -> Obj:
    copied = _deep(obj)
    copied.setdefault("status", {})
    copied["status"] = _deep(copied.get("status") or {})
    return copied


def _deep(value: Obj) -> Obj:
    return copy.deepcopy(value)


def _age(pool: LBPool) -> tuple[str, int]:
    """Older first: creationTimestamp, then the order LB-IPAM learnt of the pools."""
    return str(meta(pool.obj).get("creationTimestamp") or ""), pool.order


def _overlap(a: list[LBRange], b: list[LBRange]) -> tuple[LBRange, LBRange] | None:
    for ra in a:
        for rb in b:
            if ra.range.overlaps(rb.range):
                return ra, rb
    return None


def _internal_overlap(ranges: list[LBRange]) -> tuple[LBRange, LBRange] | None:
    for i, ra in enumerate(ranges):
        for rb in ranges[i + 1:]:
            if ra.range.overlaps(rb.range):
                return ra, rb
    return None
