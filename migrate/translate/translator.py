"""MetalLB configuration → Cilium pools, L2 policies and Service pins (pure, deterministic).

The rules are those of design §3; the tables they read are in ``mappings/``. Nothing here does
I/O beyond reading those tables, and the output depends only on the input.
"""

from __future__ import annotations

import copy
import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migrate.errors import now_reading, reading
from migrate.guards import GUARDS
from migrate.model import metallb as mlb
from migrate.model.addresses import (
    AddressRange,
    IPAddress,
    RangeIndex,
    metallb_allocatable,
    split_avoiding_buggy,
)
from migrate.model.findings import Finding, Severity, sort_findings
from migrate.model.kube import METALLB_PREFIXES, Service, metallb_annotation
from migrate.model.names import LABEL_VALUE_MAX_LENGTH, label_safe_values, subdomain_safe
from migrate.model.selectors import SelectorError, combine, matches
from migrate.sources.snapshot import ClusterSnapshot
from migrate.translate.mappings import (
    CiliumVersion,
    cilium_version,
    field_note,
    pool_label,
    shared_ip_follower_label,
)

if TYPE_CHECKING:
    from migrate.translate.bgp import BGPTranslation

MANAGED_BY = {"app.kubernetes.io/managed-by": "lbmigrate"}
SOURCE_ANNOTATION = "lbmigrate.io/source"
ANNOUNCED_WITH_ANNOTATION = "lbmigrate.io/shared-ip-announced-with"
"""On a Service whose shared IP another sharer announces: that Service (``namespace/name``)."""
POLICY_API_VERSION = "cilium.io/v2alpha1"
# MetalLB never announces from nodes carrying this label [M8][M10]; Cilium does not look at
# it, so every policy excludes them explicitly to keep the same set of announcing nodes.
EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
CILIUM_CLASSES = ("io.cilium/l2-announcer", "io.cilium/bgp-control-plane", "io.cilium/node")
_GO_REGEX_SPECIALS = set("\\.+*?()|[]{}^$")


@dataclass(frozen=True)
class ServicePin:
    """What the migration writes on one Service so that Cilium keeps its IPs [C1.2]."""

    namespace: str
    name: str
    ips: tuple[str, ...]
    pool: str | None
    annotations: dict[str, str]
    labels: dict[str, str]
    origin: str

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "service": self.key,
            "ips": list(self.ips),
            "pool": self.pool,
            "annotations": dict(self.annotations),
            "labels": dict(self.labels),
        }


@dataclass
class Translation:
    """The result of a translation: Cilium objects, pins and findings."""

    cilium: CiliumVersion
    pools: list[dict[str, Any]] = field(default_factory=list)
    policies: list[dict[str, Any]] = field(default_factory=list)
    pins: list[ServicePin] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    l2_pools: dict[str, list[str]] = field(default_factory=dict)
    """L2Advertisement (``str(ref)``, the policies' source annotation) → the pools it announces."""
    pool_labels: dict[str, str] = field(default_factory=dict)
    """MetalLB pool → the value of the pool label (``lbmigrate.io/pool``) that stands for it on
    Services and in every selector: the pool's name, or a label-safe form of a name that is no
    label value (:func:`migrate.model.names.label_safe_values`)."""
    bgp: BGPTranslation | None = None
    """The Cilium BGP objects and what their hand-over needs (None: no BGP, or not asked)."""

    def objects(self) -> list[dict[str, Any]]:
        """Every Cilium object, pools first, the BGP ones last."""
        return [*self.pools, *self.policies, *(self.bgp.objects() if self.bgp else [])]


def selection_labels(service: Service, pinned: dict[str, str]) -> dict[str, str]:
    """What Cilium's selectors see of a Service once pinned: its labels, the pin's labels, and
    the ``io.kubernetes.service.namespace`` / ``.name`` pseudo-labels [C1][C2]."""
    return {**service.labels, **pinned,
            "io.kubernetes.service.namespace": service.namespace,
            "io.kubernetes.service.name": service.name}


def go_quote_meta(text: str) -> str:
    """Escape a string for a Go regexp as ``regexp.QuoteMeta`` does."""
    return "".join("\\" + ch if ch in _GO_REGEX_SPECIALS else ch for ch in text)


def interface_regex(name: str) -> str:
    """An anchored regex that matches exactly one interface name [C2]."""
    return f"^{go_quote_meta(name)}$"


def pool_blocks(pool: mlb.IPAddressPool) -> list[dict[str, str]]:
    """Cilium blocks whose addresses are exactly those MetalLB can hand out from the pool [M2]."""
    blocks: list[dict[str, str]] = []
    for address in pool.addresses:
        if pool.avoid_buggy_ips and address.range.version == 4:
            for part in split_avoiding_buggy(address.range):
                blocks.append({"start": str(part.first), "stop": str(part.last)})
        elif address.is_cidr:
            network = address.range.networks()[0]
            blocks.append({"cidr": str(network)})
        else:
            blocks.append({"start": str(address.range.first), "stop": str(address.range.last)})
    return blocks


def _pool_label_selector(values: list[str]) -> dict[str, Any]:
    """Services whose pool label is one of these values."""
    return {
        "matchExpressions": [
            {"key": pool_label(), "operator": "In", "values": sorted(set(values))}
        ]
    }


class _Translator:
    def __init__(self, snapshot: ClusterSnapshot, version: CiliumVersion,
                 with_bgp: bool = True) -> None:
        self.snapshot = snapshot
        self.version = version
        self.with_bgp = with_bgp
        self.out = Translation(cilium=version, findings=list(snapshot.findings))
        self.allocatable: dict[str, list[AddressRange]] = {
            pool.name: metallb_allocatable(pool.addresses, pool.avoid_buggy_ips)
            for pool in snapshot.pools
        }
        self.pool_index = RangeIndex(
            (rng, name) for name, ranges in self.allocatable.items() for rng in ranges
        )
        self.pool_selectors: dict[str, dict[str, Any]] = {}
        self.l2_pools: dict[str, list[mlb.L2Advertisement]] = defaultdict(list)
        self.bgp_pools: set[str] = set()
        # A pool's name is a DNS subdomain of up to 253 characters, a label value at most 63
        # [real-clusters §5]: the pool label carries a value the API server stores.
        names = [pool.name for pool in snapshot.pools]
        self.out.pool_labels = (label_safe_values(names) if GUARDS.label_safe_names
                                else {name: name for name in names})
        if version.newer:
            self.finding(
                Severity.WARNING, "cilium-version-newer", f"Cilium {version.newer}", None,
                f"is newer than the newest release migrate knows ({version.minor}): the objects"
                f" are written as for {version.minor} (pools {version.pool_api_version}, L2"
                f" policies {version.policy_api_version}); check that {version.newer} still"
                " serves them.",
            )

    def pool_value(self, pool: str) -> str:
        """The pool label's value for a MetalLB pool."""
        return self.out.pool_labels[pool]

    def pool_selector_of(self, pools: list[str]) -> dict[str, Any]:
        """Services labelled as pinned to one of these MetalLB pools."""
        return _pool_label_selector([self.pool_value(name) for name in pools])

    def finding(
        self, severity: Severity, code: str, obj: object, field_path: str | None, message: str,
        origin: str | None = None,
    ) -> None:
        self.out.findings.append(Finding(severity, code, str(obj), field_path, message, origin))

    def noted(self, kind: str, field_path: str, obj: object, origin: str, **values: Any) -> None:
        severity, template = field_note(kind, field_path)
        self.finding(
            severity, f"no-equivalent:{kind}.{field_path}", obj,
            None if field_path == "*" else field_path, template.format(**values), origin,
        )

    # -- pools -----------------------------------------------------------------------------
    def translate_pools(self) -> None:
        for pool in sorted(self.snapshot.pools, key=lambda p: p.name):
            value = self.pool_value(pool.name)
            if value != pool.name:
                self.finding(
                    Severity.INFO, "pool-label-value", pool.ref, "metadata.name",
                    f"its name has {len(pool.name)} characters, more than the"
                    f" {LABEL_VALUE_MAX_LENGTH} a label value may have: the Services of this"
                    f" pool are labelled {pool_label()}={value}, and the Cilium selectors match"
                    " that value. A Service created later for this pool must carry it.",
                    pool.ref.origin,
                )
            now_reading(pool.ref.where)
            selector = self._pool_selector(pool)
            self.pool_selectors[pool.name] = selector
            spec: dict[str, Any] = {
                "blocks": pool_blocks(pool),
                # MetalLB hands out every address of a CIDR; say so whatever the version's
                # default is [C1].
                "allowFirstLastIPs": "Yes",
            }
            if selector:
                spec["serviceSelector"] = selector
            self.out.pools.append({
                "apiVersion": self.version.pool_api_version,
                "kind": "CiliumLoadBalancerIPPool",
                "metadata": {
                    "name": pool.name,
                    "labels": dict(MANAGED_BY),
                    "annotations": {SOURCE_ANNOTATION: str(pool.ref)},
                },
                "spec": spec,
            })

    def _pool_selector(self, pool: mlb.IPAddressPool) -> dict[str, Any]:
        parts: list[dict[str, Any]] = []
        fallback = not pool.auto_assign
        alloc = pool.service_allocation
        origin = pool.ref.origin
        label = pool_label()
        if alloc is not None:
            if alloc.namespace_selectors:
                self.noted("IPAddressPool", "spec.serviceAllocation.namespaceSelectors",
                           pool.ref, origin, label=label, pool=self.pool_value(pool.name))
                fallback = True
            if len(alloc.service_selectors) > 1:
                self.noted("IPAddressPool", "spec.serviceAllocation.serviceSelectors",
                           pool.ref, origin, label=label, pool=self.pool_value(pool.name),
                           count=len(alloc.service_selectors))
                fallback = True
            if alloc.priority:
                self.noted("IPAddressPool", "spec.serviceAllocation.priority", pool.ref, origin,
                           value=alloc.priority)
            if not fallback:
                if alloc.namespaces:
                    parts.append({"matchExpressions": [{
                        "key": "io.kubernetes.service.namespace", "operator": "In",
                        "values": sorted(alloc.namespaces),
                    }]})
                if alloc.service_selectors:
                    parts.append(alloc.service_selectors[0])
        if fallback:
            parts.append(self.pool_selector_of([pool.name]))
        try:
            return combine(*parts)
        except SelectorError as exc:  # pragma: no cover - parts use distinct keys
            self.finding(Severity.ERROR, "selector-conflict", pool.ref, "spec.serviceAllocation",
                         str(exc), origin)
            return self.pool_selector_of([pool.name])

    # -- advertisements --------------------------------------------------------------------
    def _selected_pools(self, ad: mlb.L2Advertisement | mlb.BGPAdvertisement) -> list[str]:
        if ad.selects_all_pools:
            return sorted(pool.name for pool in self.snapshot.pools)
        names = {name for name in ad.pool_names if self.snapshot.pool(name)}
        for selector in ad.pool_selectors:
            names.update(p.name for p in self.snapshot.pools if matches(selector, p.labels))
        return sorted(names)

    def translate_l2(self) -> None:
        all_pools = sorted(pool.name for pool in self.snapshot.pools)
        taken: set[str] = set()
        for ad in sorted(self.snapshot.l2_advertisements, key=lambda a: a.name):
            now_reading(ad.ref.where)
            pools = self._selected_pools(ad)
            self.out.l2_pools[str(ad.ref)] = pools
            for name in pools:
                self.l2_pools[name].append(ad)
            if not pools:
                self.finding(
                    Severity.WARNING, "l2-selects-nothing", ad.ref, "spec.ipAddressPools",
                    "selects no pool of the input, so it announces nothing; no policy is"
                    " written for it.", ad.ref.origin,
                )
                continue
            if ad.has_preferred_node_selectors:
                self.noted("L2Advertisement", "spec.preferredNodeSelectors", ad.ref,
                           ad.ref.origin)
            pool_part = None if pools == all_pools else self.pool_selector_of(pools)
            if pool_part is not None:
                values = sorted({self.pool_value(name) for name in pools})
                self.finding(
                    Severity.INFO, "l2-pool-label", ad.ref, "spec.ipAddressPools",
                    f"announces pools {', '.join(pools)} only: its policies select Services"
                    f" labelled {pool_label()} in ({', '.join(values)}). The migration labels the"
                    " Services it pins; a Service created later must carry the label to be"
                    " announced.", ad.ref.origin,
                )
            service_parts: list[dict[str, Any]] = []
            for index, selector in enumerate(ad.service_selectors or ({},)):
                try:
                    service_parts.append(combine(pool_part, selector))
                except SelectorError as exc:
                    self.finding(
                        Severity.INFO, "l2-selector-never-matches", ad.ref,
                        f"spec.serviceSelectors[{index}]",
                        f"can never match together with the pool selection ({exc}); skipped.",
                        ad.ref.origin,
                    )
            node_parts = [
                combine(selector, {"matchExpressions": [
                    {"key": EXCLUDE_LB_LABEL, "operator": "DoesNotExist"}
                ]})
                for selector in (ad.node_selectors or ({},))
            ]
            combos = [(svc, node) for svc in service_parts for node in node_parts]
            for index, (svc, node) in enumerate(combos, start=1):
                name = ad.name if len(combos) == 1 else subdomain_safe(f"{ad.name}-{index}")
                while name in taken:
                    name = subdomain_safe(f"{name}-x")
                taken.add(name)
                spec: dict[str, Any] = {}
                if svc:
                    spec["serviceSelector"] = svc
                spec["nodeSelector"] = node
                if ad.interfaces:
                    spec["interfaces"] = [interface_regex(i) for i in ad.interfaces]
                spec["loadBalancerIPs"] = True
                spec["externalIPs"] = False
                self.out.policies.append({
                    "apiVersion": self.version.policy_api_version,
                    "kind": "CiliumL2AnnouncementPolicy",
                    "metadata": {
                        "name": name,
                        "labels": dict(MANAGED_BY),
                        "annotations": {SOURCE_ANNOTATION: str(ad.ref)},
                    },
                    "spec": spec,
                })

    def report_pools(self) -> None:
        for ad in self.snapshot.bgp_advertisements:
            self.bgp_pools.update(self._selected_pools(ad))
        for pool in self.snapshot.pools:
            l2 = pool.name in self.l2_pools
            bgp = pool.name in self.bgp_pools
            if not l2 and not bgp:
                self.finding(
                    Severity.INFO, "pool-not-announced", pool.ref, None,
                    "no L2Advertisement or BGPAdvertisement selects this pool: MetalLB hands out"
                    " its IPs but announces none, and so will Cilium.", pool.ref.origin,
                )
            has_v6 = any(a.range.version == 6 for a in pool.addresses)
            if l2 and has_v6 and not self.version.l2_ndp:
                self.finding(
                    Severity.ERROR, "ipv6-l2-unsupported", pool.ref, "spec.addresses",
                    f"has IPv6 addresses announced over L2, but Cilium {self.version.minor}"
                    " cannot answer NDP (IPv6 L2 announcements need Cilium 1.19): those IPs"
                    " would go silent.", pool.ref.origin,
                )

    # -- services --------------------------------------------------------------------------
    def _pool_of(self, ip: IPAddress) -> str | None:
        return self.pool_index.find(ip)

    def _served(self, service: Service) -> bool:
        if not service.is_load_balancer:
            return False
        cls = service.load_balancer_class
        if cls is None:
            return True
        if cls in CILIUM_CLASSES:
            return False
        in_pool = any(self._pool_of(ip) for ip in service.current_ips())
        mentions = any(k.startswith(METALLB_PREFIXES) for k in service.annotations)
        if in_pool or mentions:
            severity, template = field_note("Service", "spec.loadBalancerClass")
            self.finding(severity, "foreign-lb-class", service.ref, "spec.loadBalancerClass",
                         template.format(value=cls), service.ref.origin)
            return True
        self.finding(
            Severity.INFO, "not-metallb", service.ref, "spec.loadBalancerClass",
            f"has loadBalancerClass {cls}; neither MetalLB nor Cilium LB-IPAM serves it,"
            " so it is left alone.", service.ref.origin,
        )
        return False

    def translate_services(self) -> None:
        pins: list[ServicePin] = []
        by_ip: dict[str, list[tuple[Service, ServicePin]]] = defaultdict(list)
        for service in self.snapshot.services:
            now_reading(service.ref.where)
            if not self._served(service):
                continue
            pin = self._pin(service)
            pins.append(pin)
            for ip in pin.ips:
                by_ip[ip].append((service, pin))
        self._sharing(by_ip)
        self._announce_shared_ips_once(by_ip)
        self.out.pins = pins

    def _pin(self, service: Service) -> ServicePin:
        ref = service.ref
        ips = service.current_ips()
        requested_pool, pool_key = metallb_annotation(service.annotations, "address-pool")
        if requested_pool and (resolved := self.snapshot.pool(requested_pool)):
            requested_pool = resolved.name
        pools: list[str] = []
        for index, ip in enumerate(ips):
            name = self._pool_of(ip)
            if name is None:
                where = (f"status.loadBalancer.ingress[{index}].ip" if service.ingress_ips
                         else "metadata.annotations")
                self.finding(
                    Severity.ERROR, "ip-outside-pools", ref, where,
                    f"holds {ip}, which no MetalLB pool of the input can hand out: LB-IPAM would"
                    " strip it. Add the pool that holds it to the input.", ref.origin,
                )
            elif name not in pools:
                pools.append(name)
        if len(pools) > 1:
            self.finding(
                Severity.ERROR, "ips-from-several-pools", ref, "status.loadBalancer.ingress",
                f"holds IPs from several pools ({', '.join(pools)}); MetalLB allocates a"
                " Service from one pool, so this state cannot be reproduced.", ref.origin,
            )
        pool = pools[0] if pools else (
            requested_pool if requested_pool and self.snapshot.pool(requested_pool) else None
        )
        if requested_pool and pools and requested_pool not in pools:
            self.finding(
                Severity.WARNING, "pool-annotation-mismatch", ref,
                f"metadata.annotations[{pool_key}]",
                f"asks for pool {requested_pool} but holds IPs of {pools[0]}; the pin keeps the"
                " IPs and the pool label names the pool that holds them.", ref.origin,
            )
        if not ips:
            self.finding(
                Severity.WARNING, "ip-unknown", ref, "status.loadBalancer.ingress",
                "has no IP in the input (no status, no requested IP): nothing can be pinned and"
                " Cilium will allocate a new address. Read the live cluster (migrate plan) or a"
                " `kubectl get -o yaml` dump to keep its current IP.", ref.origin,
            )
        annotations: dict[str, str] = {}
        if ips:
            annotations[self.version.ips_annotation] = ",".join(str(ip) for ip in ips)
        key = service.metallb("allow-shared-ip")
        if key:
            annotations[self.version.sharing_key_annotation] = key
        labels = {pool_label(): self.pool_value(pool)} if pool else {}
        if service.external_traffic_policy == "Local" and (
            pool is None or pool in self.l2_pools
        ):
            severity, template = field_note("Service", "spec.externalTrafficPolicy")
            self.finding(severity, "etp-local", ref, "spec.externalTrafficPolicy", template,
                         ref.origin)
        if pool is not None:
            selector = self.pool_selectors.get(pool, {})
            if not matches(selector, selection_labels(service, labels)):
                self.finding(
                    Severity.ERROR, "pool-selector-mismatch", ref, "metadata.labels",
                    f"holds IPs of pool {pool}, but the Service does not match that pool's"
                    " selection (serviceAllocation); LB-IPAM would strip its IP. Fix the"
                    " Service's labels or namespace, or the pool.", ref.origin,
                )
        return ServicePin(
            namespace=service.namespace, name=service.name, ips=tuple(str(ip) for ip in ips),
            pool=pool, annotations=annotations, labels=labels, origin=ref.origin,
        )

    def _sharing(self, by_ip: dict[str, list[tuple[Service, ServicePin]]]) -> None:
        cross = self.version.sharing_cross_namespace_annotation
        for ip in sorted(by_ip, key=_ip_sort_key):
            group = by_ip[ip]
            if len(group) < 2:
                continue
            services = [svc for svc, _ in group]
            keys = {svc.metallb("allow-shared-ip") for svc in services}
            names = ", ".join(svc.key for svc in services)
            if len(keys) != 1 or None in keys or "" in keys:
                for svc in services:
                    self.finding(
                        Severity.ERROR, "sharing-without-key", svc.ref,
                        "metadata.annotations", f"shares {ip} with {names} without one common"
                        " allow-shared-ip key; Cilium would give them different IPs.",
                        svc.ref.origin,
                    )
                continue
            problem = _sharing_problem(services, by_protocol=self.version.sharing_port_protocol)
            if problem:
                for svc in services:
                    self.finding(Severity.ERROR, "sharing-incompatible", svc.ref, "spec",
                                 f"shares {ip} with {names}, but {problem}", svc.ref.origin)
            if not self.version.sharing_survives_import:
                self.finding(
                    Severity.WARNING, "sharing-import", services[0].ref, "metadata.annotations",
                    f"{ip} is shared by {names}; Cilium {self.version.minor} loses sharing when"
                    " it imports existing IPs (fixed in 1.17): upgrade Cilium first.",
                    services[0].ref.origin,
                )
            namespaces = sorted({svc.namespace for svc in services})
            if len(namespaces) > 1:
                if cross is None:
                    for svc in services:
                        self.finding(
                            Severity.ERROR, "sharing-cross-namespace", svc.ref,
                            "metadata.namespace", f"shares {ip} across namespaces"
                            f" ({', '.join(namespaces)}); Cilium {self.version.minor} cannot"
                            " share across namespaces (1.16+ can).", svc.ref.origin,
                        )
                else:
                    for _, pin in group:
                        pin.annotations[cross] = ",".join(namespaces)

    def _policies_of(self, service: Service, pin: ServicePin) -> tuple[str, ...]:
        """The names of the L2 policies whose serviceSelector matches the pinned Service."""
        view = selection_labels(service, pin.labels)
        return tuple(policy["metadata"]["name"] for policy in self.out.policies
                     if matches(policy["spec"].get("serviceSelector"), view))

    def _announce_shared_ips_once(self, by_ip: dict[str, list[tuple[Service, ServicePin]]]
                                  ) -> None:
        """One lease, so one announcer, per shared IP (cilium/cilium#48419).

        Cilium elects a lease holder per Service and nothing ties the elections of Services
        that share an IP: two holders would both answer ARP for it, which MetalLB (one
        election per IP) never did. So each shared IP is announced through one sharer, its
        leader (the one with the most IPs, then the first by name): the others are labelled
        followers and every L2 policy leaves them out. With kube-proxy replacement the
        holder's node forwards the followers' ports too. A sharer that cannot follow (an IP
        of its own, a different policy selection, or leading another shared IP) stays
        announced, with a WARNING.
        """
        groups = {ip: sorted(group, key=lambda pair: (-len(pair[1].ips), pair[0].key))
                  for ip, group in by_ip.items()
                  if len(group) > 1 and group[0][1].pool in self.l2_pools}
        if not groups:
            return
        policies = {pin.key: self._policies_of(svc, pin)
                    for group in groups.values() for svc, pin in group}
        leaders = {group[0][0].key for group in groups.values()}
        leader_of: dict[str, list[Service]] = defaultdict(list)  # follower -> its IPs' leaders
        members: dict[str, tuple[Service, ServicePin]] = {}
        for group in groups.values():
            for svc, pin in group[1:]:
                leader_of[svc.key].append(group[0][0])
                members[svc.key] = (svc, pin)
        why_not: dict[str, str] = {}
        for key, (_, pin) in members.items():
            different = [leader.key for leader in leader_of[key]
                         if policies[leader.key] != policies[key]]
            if key in leaders:
                why_not[key] = "it leads another shared IP"
            elif not all(own in groups for own in pin.ips):
                why_not[key] = "it also holds an IP it does not share"
            elif different:
                why_not[key] = (f"the L2 policies select it differently from"
                                f" {', '.join(sorted(set(different)))}")
        label = shared_ip_follower_label()
        followed_by: dict[str, list[str]] = {}
        for ip in sorted(groups, key=_ip_sort_key):
            (leader, _), *others = groups[ip]
            followed_by[ip] = []
            for svc, pin in others:
                if svc.key not in why_not:
                    pin.labels[label] = "true"
                    pin.annotations[ANNOUNCED_WITH_ANNOTATION] = ",".join(
                        dict.fromkeys(each.key for each in leader_of[svc.key]))
                    followed_by[ip].append(svc.key)
                    continue
                self.finding(
                    Severity.WARNING, "shared-ip-two-announcers", svc.ref, "metadata.labels",
                    f"shares {ip} with {leader.key}, but cannot be announced through it"
                    f" ({why_not[svc.key]}): Cilium elects a lease holder per Service, and two"
                    " holders would both answer ARP for the IP (cilium/cilium#48419);"
                    " `migrate verify --arp` shows it.", svc.ref.origin,
                )
            if followed_by[ip]:
                self.finding(
                    Severity.WARNING, "shared-ip-one-announcer", leader.ref, "metadata.labels",
                    f"{ip} is shared with {', '.join(followed_by[ip])}: Cilium elects a lease"
                    " holder per Service, and two holders would both answer ARP for the IP"
                    f" (cilium/cilium#48419), so the L2 policies announce it through"
                    f" {leader.key} only and leave out {', '.join(followed_by[ip])} (label"
                    f" {label}), reached through its node. Deleting {leader.key} stops the"
                    f" announcement of {ip}.",
                    leader.ref.origin,
                )
        if any(followed_by.values()):
            not_a_follower = {"matchExpressions": [{"key": label, "operator": "DoesNotExist"}]}
            for policy in self.out.policies:
                spec = policy["spec"]
                selector = combine(spec.pop("serviceSelector", None), not_a_follower)
                policy["spec"] = {"serviceSelector": selector, **spec}

    def translate_bgp(self) -> None:
        """BGP (migrate/translate/bgp.py), or, without it, what is left to MetalLB."""
        from migrate.translate import bgp

        if not self.with_bgp:
            self.out.findings += bgp.left_to_metallb(self.snapshot, self.bgp_pools)
            return
        self.out.bgp, findings = bgp.translate_bgp(
            self.snapshot, self.version, selected_pools=self._selected_pools,
            pool_selector=self.pool_selector_of, pins=self.out.pins)
        self.out.findings += findings

    def run(self) -> Translation:
        with reading():  # a bug of ours names the object being translated
            self.translate_pools()
            self.translate_l2()
            self.report_pools()
            self.translate_services()
            self.translate_bgp()
        self.out.findings = sort_findings(self.out.findings)
        return self.out



def _ip_sort_key(text: str) -> tuple[int, int]:
    ip = ipaddress.ip_address(text)
    return ip.version, int(ip)


def _sharing_problem(services: list[Service], *, by_protocol: bool = True) -> str | None:
    """Why Cilium would refuse to let these Services share an IP, if it would [C1.2]."""
    policies = {svc.external_traffic_policy for svc in services}
    if len(policies) > 1:
        return "their externalTrafficPolicy differs."
    if policies == {"Local"}:
        selectors = {tuple(sorted(svc.selector.items())) for svc in services}
        if len(selectors) > 1 or () in selectors:
            return "with externalTrafficPolicy Local they need one identical, non-empty selector."
    seen: dict[tuple[str, int], str] = {}
    for svc in services:
        for protocol, number in svc.ports:
            port = (protocol if by_protocol else "", number)
            if port in seen and seen[port] != svc.key:
                if not by_protocol:
                    return (f"both {seen[port]} and {svc.key} use port {number}; before Cilium"
                            " 1.17 LB-IPAM tells ports apart by number only (upgrade first).")
                return f"both {seen[port]} and {svc.key} use {protocol}/{number}."
            seen[port] = svc.key
    return None


def translate(snapshot: ClusterSnapshot, *, cilium: str | None = None, bgp: bool = True) -> (
    Translation
):
    """Translate a snapshot's MetalLB configuration for a Cilium version (``X.Y``); with
    ``bgp=False`` BGP is left to MetalLB and only reported (a WARNING per BGP pool)."""
    return _Translator(snapshot, cilium_version(cilium), with_bgp=bgp).run()


SERVER_FIELDS = ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields",
                 "selfLink")


def pinned_service(body: dict[str, Any], pin: ServicePin, *, keep_status: bool = False) -> dict[
    str, Any
]:
    """A Service body with its pin applied (a new object; the input is not changed)."""
    out = copy.deepcopy(body)
    metadata = out.setdefault("metadata", {})
    for key in SERVER_FIELDS:
        metadata.pop(key, None)
    annotations = metadata.get("annotations") or {}
    annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
    annotations.update(pin.annotations)
    metadata["annotations"] = annotations
    if pin.labels:
        metadata["labels"] = {**(metadata.get("labels") or {}), **pin.labels}
    if not keep_status:
        out.pop("status", None)
    return out
