"""Model of MetalLB's controller: IP allocation for LoadBalancer Services, and its validating
webhook (reference/metallb.md §2, §6, §8, §10; cited as [M2] … below).

The controller only allocates: it writes ``status.loadBalancer.ingress`` and the
``metallb.io/ip-allocated-from-pool`` annotation. Announcing is the speakers' job
(:mod:`migrate.lab.models.metallb_speaker`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from migrate.lab.models._common import (
    Cache,
    Event,
    IPAddress,
    IPRange,
    Obj,
    WorkloadModel,
    WorkloadRule,
    annotations_of,
    deployment_replicas,
    ingress_ips,
    labels_of,
    meta,
    name_of,
    namespace_of,
    parse_ip,
    selector_matches,
    service_key,
    spec_of,
)
from migrate.lab.store import ApiError, Store
from migrate.model.addresses import AddressError
from migrate.model.addresses import parse_metallb_address as parse_address

METALLB_GROUP = "metallb.io"
DEFAULT_NAMESPACE = "metallb-system"
WEBHOOK_CONFIGURATION = "metallb-webhook-configuration"
ALLOCATED_FROM_POOL = "metallb.io/ip-allocated-from-pool"
PREFIXES = ("metallb.io/", "metallb.universe.tf/")


def metallb_annotation(svc: Obj, name: str) -> str:
    """A MetalLB Service annotation: ``metallb.io/`` wins over ``metallb.universe.tf/`` [M6]."""
    annotations = annotations_of(svc)
    for prefix in PREFIXES:
        if prefix + name in annotations:
            return annotations[prefix + name]
    return ""


# --------------------------------------------------------------------------- configuration


@dataclass
class MetalLBPool:
    """One parsed IPAddressPool [M2]."""

    name: str
    ranges: list[IPRange]
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    has_service_allocation: bool = False
    priority: int = 0
    namespaces: set[str] = field(default_factory=set)
    service_selectors: list[Obj] = field(default_factory=list)

    def contains(self, ip: IPAddress) -> bool:
        """Whether ``ip`` is one of the pool's addresses."""
        return any(r.contains(ip) for r in self.ranges)

    def allocatable(self, ip: IPAddress) -> bool:
        """avoidBuggyIPs skips every IPv4 address ending in .0 or .255 [M2]."""
        if self.avoid_buggy_ips and ip.version == 4:
            return int(ip) & 0xFF not in (0, 255)
        return True

    def compatible(self, svc: Obj) -> bool:
        """serviceAllocation filter (isPoolCompatibleWithService) [M2]."""
        if not self.has_service_allocation:
            return True
        if self.namespaces and namespace_of(svc) not in self.namespaces:
            return False
        return not self.service_selectors or any(
            selector_matches(s, labels_of(svc)) for s in self.service_selectors)


def parse_metallb_address(text: str, pool: str) -> IPRange:
    """``CIDR`` or ``start-end`` (ParseCIDR) [M2]; a bare IP is invalid. ValueError otherwise.

    Parsed by the project's own :func:`migrate.model.addresses.parse_metallb_address`; the
    refusal names the pool, as the controller's does.
    """
    try:
        parsed = parse_address(text)
    except AddressError as exc:
        what = "IP range" if "-" in text else "CIDR"
        raise ValueError(f"invalid {what} {text!r} in pool {pool!r}: {exc}") from None
    return IPRange(parsed.range.first, parsed.range.last)


def parse_pools(objects: list[Obj], namespaces: list[Obj]) -> tuple[dict[str, MetalLBPool], str]:
    """Parse IPAddressPools (in the order given); the error is "" when the config is valid.

    Overlapping addresses (within or across pools), malformed addresses and empty address
    lists make the whole configuration invalid [M2][M10].
    """
    pools: dict[str, MetalLBPool] = {}
    seen: list[tuple[IPRange, str, str]] = []
    for obj in objects:
        name = name_of(obj)
        if name in pools:
            return {}, f"duplicate definition of pool {name!r}"
        spec = spec_of(obj)
        addresses = spec.get("addresses") or []
        if not addresses:
            return {}, f"pool {name!r} has no addresses"
        ranges: list[IPRange] = []
        for text in addresses:
            try:
                rng = parse_metallb_address(str(text), name)
            except ValueError as exc:
                return {}, str(exc)
            for other, other_pool, other_text in seen:
                if rng.overlaps(other):
                    return {}, (f"CIDR {text!r} in pool {name!r} overlaps with already defined "
                                f"CIDR {other_text!r} in pool {other_pool!r}")
            seen.append((rng, name, str(text)))
            ranges.append(rng)
        pool = MetalLBPool(
            name=name,
            ranges=ranges,
            auto_assign=spec.get("autoAssign") is not False,
            avoid_buggy_ips=bool(spec.get("avoidBuggyIPs")),
        )
        allocation = spec.get("serviceAllocation")
        if isinstance(allocation, dict):
            pool.has_service_allocation = True
            pool.priority = int(allocation.get("priority") or 0)
            pool.namespaces = {str(n) for n in allocation.get("namespaces") or []}
            for selector in allocation.get("namespaceSelectors") or []:
                pool.namespaces |= {
                    name_of(ns) for ns in namespaces if selector_matches(selector, labels_of(ns))}
            pool.service_selectors = list(allocation.get("serviceSelectors") or [])
        pools[name] = pool
    return pools, ""


def l2advertisement_error(obj: Obj) -> str:
    """Duplicate entries inside an L2Advertisement's lists make the config invalid [M3]."""
    spec = spec_of(obj)
    for list_name in ("ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors",
                      "interfaces", "serviceSelectors"):
        items = [repr(i) for i in spec.get(list_name) or []]
        if len(items) != len(set(items)):
            return f"duplicate entry in {list_name} of L2Advertisement {name_of(obj)!r}"
    return ""


def image_version(image: str) -> tuple[int, ...] | None:
    """``quay.io/metallb/controller:v0.14.9`` -> (0, 14, 9); None when the tag is no version."""
    tag = image.rsplit("@", 1)[0].rsplit(":", 1)[-1] if ":" in image else ""
    numbers = tag.lstrip("v").split("-")[0].split(".")
    if len(numbers) < 2 or not all(n.isdigit() for n in numbers):
        return None
    return tuple(int(n) for n in numbers)


def metallb_version(cache: Cache, namespace: str) -> tuple[int, ...] | None:
    """MetalLB's version from its controller/speaker image tag in its namespace [M9]."""
    for group, kind in (("apps", "Deployment"), ("apps", "DaemonSet")):
        for obj in cache.list(group, kind, namespace):
            template = spec_of(spec_of(obj).get("template") or {})
            for container in template.get("containers") or []:
                image = str(container.get("image") or "")
                if "metallb" in image and ("controller" in image or "speaker" in image):
                    version = image_version(image)
                    if version is not None:
                        return version
    return None


def _container_args(cache: Cache, namespace: str) -> list[str]:
    args: list[str] = []
    for group, kind in (("apps", "Deployment"), ("apps", "DaemonSet")):
        for obj in cache.list(group, kind, namespace):
            template = spec_of(spec_of(obj).get("template") or {})
            for container in template.get("containers") or []:
                args += [str(a) for a in container.get("args") or []]
    return args


def detected_lb_class(cache: Cache, namespace: str) -> str | None:
    """The ``--lb-class`` flag of MetalLB's workloads (None = handle class-less Services) [M6]."""
    for arg in _container_args(cache, namespace):
        if arg.startswith("--lb-class="):
            return arg.split("=", 1)[1] or None
    return None


def legacy_config_name(cache: Cache, namespace: str) -> str:
    """The ConfigMap the ≤0.12 controller reads: its ``--config`` flag, default ``config`` [M7]."""
    for arg in _container_args(cache, namespace):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return "config"


def metallb_config(cache: Cache, namespace: str) -> tuple[list[Obj], list[Obj], bool]:
    """IPAddressPools and L2Advertisements MetalLB runs with, and whether they come from the
    legacy ConfigMap [M7].

    From v0.13 the CRs are the configuration. A MetalLB older than 0.13 (by image tag), or one
    with no IPAddressPool objects but a ConfigMap holding ``address-pools``, reads the
    ConfigMap: every pool becomes an IPAddressPool, and every ``layer2`` pool is announced
    from every node on every interface (an L2Advertisement naming just that pool).
    """
    pools = cache.list(METALLB_GROUP, "IPAddressPool", namespace)
    advertisements = cache.list(METALLB_GROUP, "L2Advertisement", namespace)
    version = metallb_version(cache, namespace)
    if pools and (version is None or version >= (0, 13)):
        return pools, advertisements, False
    configmap = cache.get("", "ConfigMap", legacy_config_name(cache, namespace), namespace)
    document = _legacy_document(configmap)
    if document is None:
        return pools, advertisements, False
    legacy_pools: list[Obj] = []
    legacy_advs: list[Obj] = []
    for entry in document.get("address-pools") or []:
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("name", ""))
        spec: Obj = {"addresses": [str(a) for a in entry.get("addresses") or []]}
        if entry.get("auto-assign") is not None:
            spec["autoAssign"] = bool(entry["auto-assign"])
        if entry.get("avoid-buggy-ips") is not None:
            spec["avoidBuggyIPs"] = bool(entry["avoid-buggy-ips"])
        legacy_pools.append({"metadata": {"name": name, "namespace": namespace}, "spec": spec})
        if entry.get("protocol") == "layer2":
            legacy_advs.append({"metadata": {"name": f"legacy-{name}", "namespace": namespace},
                                "spec": {"ipAddressPools": [name]}})
    return legacy_pools, legacy_advs, True


def _legacy_document(configmap: Obj | None) -> Obj | None:
    if configmap is None:
        return None
    text = (configmap.get("data") or {}).get("config")
    if not isinstance(text, str):
        return None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(document, dict) or "address-pools" not in document:
        return None
    return document


# --------------------------------------------------------------------------- services


@dataclass
class Allocation:
    """What the allocator holds for one Service."""

    ips: tuple[IPAddress, ...]
    pool: str
    sharing_key: str
    backend_key: str
    ports: frozenset[tuple[str, int]]


def service_ports(svc: Obj) -> frozenset[tuple[str, int]]:
    """(protocol, port) pairs [M6 sharing rule 2]."""
    return frozenset(
        (str(p.get("protocol") or "TCP"), int(p.get("port") or 0))
        for p in spec_of(svc).get("ports") or [] if isinstance(p, dict))


def backend_key(svc: Obj) -> str:
    """Empty for externalTrafficPolicy Cluster, the pod selector for Local [M6 rule 3]."""
    spec = spec_of(svc)
    if spec.get("externalTrafficPolicy") == "Local":
        selector = spec.get("selector") or {}
        return ",".join(f"{k}={v}" for k, v in sorted(selector.items()))
    return ""


def service_families(svc: Obj) -> tuple[list[int], bool]:
    """IP families the Service wants, in order, and whether both are required [M6 dual stack]."""
    spec = spec_of(svc)
    families = [6 if f == "IPv6" else 4 for f in spec.get("ipFamilies") or []]
    if not families:
        for text in spec.get("clusterIPs") or [spec.get("clusterIP") or ""]:
            ip = parse_ip(str(text))
            if ip is not None and ip.version not in families:
                families.append(ip.version)
    if not families:
        families = [4]
    policy = spec.get("ipFamilyPolicy")
    if len(families) == 2 and policy in ("PreferDualStack", "RequireDualStack"):
        return families, policy == "RequireDualStack"
    return families[:1], True


class Allocator:
    """MetalLB's allocator: which Service holds which addresses, with the sharing rules [M6]."""

    def __init__(self) -> None:
        self.by_service: dict[str, Allocation] = {}
        self.by_ip: dict[IPAddress, set[str]] = {}

    def unassign(self, key: str) -> None:
        """Forget a Service's allocation."""
        alloc = self.by_service.pop(key, None)
        if alloc is None:
            return
        for ip in alloc.ips:
            holders = self.by_ip.get(ip, set())
            holders.discard(key)
            if not holders:
                self.by_ip.pop(ip, None)

    def sharing_error(self, key: str, ip: IPAddress, want: Allocation) -> str:
        """Why ``ip`` cannot be shared with its current holders ("" when it can) [M6]."""
        for other_key in sorted(self.by_ip.get(ip, set()) - {key}):
            other = self.by_service[other_key]
            if not want.sharing_key or want.sharing_key != other.sharing_key:
                return f"address {ip} is already in use by {other_key!r} (sharing key differs)"
            if want.ports & other.ports:
                return f"ports conflict with {other_key!r} on shared address {ip}"
            if want.backend_key != other.backend_key:
                return f"backend key differs from {other_key!r} on shared address {ip}"
        return ""

    def assign(self, key: str, svc: Obj, ips: list[IPAddress],
               pools: dict[str, MetalLBPool]) -> str:
        """Record ``ips`` for the Service (Allocator.Assign); the error is "" on success."""
        pool = next((p for p in pools.values() if all(p.contains(ip) for ip in ips)), None)
        if pool is None:
            return f"{', '.join(map(str, ips))} is not allowed in config"
        if not pool.compatible(svc):
            return f"pool {pool.name!r} is not allowed for service {key!r}"
        want = Allocation(tuple(ips), pool.name, metallb_annotation(svc, "allow-shared-ip"),
                          backend_key(svc), service_ports(svc))
        for ip in ips:
            error = self.sharing_error(key, ip, want)
            if error:
                return error
        self.unassign(key)
        self.by_service[key] = want
        for ip in ips:
            self.by_ip.setdefault(ip, set()).add(key)
        return ""

    def allocate_from_pool(self, key: str, svc: Obj, pool: MetalLBPool) -> list[IPAddress]:
        """Lowest free (or compatibly shared) address per wanted family, walking the pool's
        ranges in order [M2]; [] when the pool cannot serve the Service."""
        families, require_all = service_families(svc)
        want = Allocation((), pool.name, metallb_annotation(svc, "allow-shared-ip"),
                          backend_key(svc), service_ports(svc))
        found: list[IPAddress] = []
        for family in families:
            ip = self._lowest(key, pool, family, want)
            if ip is not None:
                found.append(ip)
            elif require_all:
                return []
        return found

    def _lowest(self, key: str, pool: MetalLBPool, family: int,
                want: Allocation) -> IPAddress | None:
        for rng in pool.ranges:
            if rng.version != family:
                continue
            for offset in range(rng.size):
                ip = rng.address(offset)
                if not pool.allocatable(ip):
                    continue
                holders = self.by_ip.get(ip)
                if not holders or holders == {key}:
                    return ip
                if want.sharing_key and not self.sharing_error(key, ip, want):
                    return ip
        return None


# --------------------------------------------------------------------------- the model


class MetalLBController(WorkloadModel):
    """MetalLB's controller Deployment: allocation while it runs, webhook on metallb.io writes.

    Runs while its Deployment (``controller`` in its namespace, or one labelled
    app.kubernetes.io/component=controller + app.kubernetes.io/name=metallb) has replicas > 0;
    with no such Deployment ever in the store it is treated as running; one seen and then
    deleted means stopped.
    """

    name = "metallb-controller"
    manager = "metallb-controller"

    def __init__(self, store: Store, cache: Cache, *, namespace: str = DEFAULT_NAMESPACE,
                 lb_class: str | None = None, enabled: bool = True) -> None:
        super().__init__(store, cache, enabled=enabled)
        self.namespace = namespace
        self.lb_class = lb_class
        self.running = False
        self.pools: dict[str, MetalLBPool] | None = None
        """The last valid configuration (None until one loaded) [M10]."""
        self.config_error = ""
        self.legacy = False
        """True when the configuration comes from the ≤0.12 ConfigMap [M7]."""
        self.allocator = Allocator()
        self.workload = WorkloadRule("apps", "Deployment", self._is_controller_deployment,
                                     lambda found: any(deployment_replicas(o) > 0 for o in found))
        store.add_admission_hook(self._admission_hook)

    def _is_controller_deployment(self, obj: Obj) -> bool:
        """``controller`` in MetalLB's namespace, or the Helm chart's labels anywhere [M9]."""
        labels = labels_of(obj)
        return (name_of(obj) == "controller" and namespace_of(obj) == self.namespace) or (
            labels.get("app.kubernetes.io/component") == "controller"
            and labels.get("app.kubernetes.io/name") == "metallb")

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Controller process start: load config, re-adopt status IPs, then allocate [M6]."""
        self.running = self.workload.running(self.cache.list("apps", "Deployment"))
        self.allocator = Allocator()
        self.pools = None
        if self.running:
            self._load_config()
            self._reprocess_all()

    def stop(self) -> None:
        """The controller process is gone: nothing in memory survives."""
        self.running = False
        self.allocator = Allocator()
        self.pools = None

    def handle(self, event: Event) -> None:
        """One watched event, in order."""
        if self.follow_workload(event):
            return
        group, kind = event.group_kind
        if not self.running:
            return  # [M8] controller at 0: no allocation; restart re-reads everything
        if (group, kind) in ((METALLB_GROUP, "IPAddressPool"), ("", "Namespace"),
                             ("", "ConfigMap")):
            if group == METALLB_GROUP and namespace_of(event.obj) != self.namespace:
                return  # [M1] objects outside MetalLB's namespace are ignored
            if kind == "ConfigMap" and namespace_of(event.obj) != self.namespace:
                return
            if self._load_config():
                self._reprocess_all()
        elif (group, kind) == ("", "Service"):
            if event.type == "DELETED":
                self.allocator.unassign(service_key(event.obj))
                self._retry_pending()
            else:
                current = self.cache.get("", "Service", name_of(event.obj),
                                         namespace_of(event.obj))
                if current is not None:
                    self._converge(current)

    # ----------------------------------------------------------------- configuration

    def _load_config(self) -> bool:
        """Reload pools; keep the last valid config when the new one is invalid [M10].
        True when the config changed."""
        objects, _, self.legacy = metallb_config(self.cache, self.namespace)
        pools, error = parse_pools(objects, self.cache.list("", "Namespace"))
        self.config_error = error
        if error:
            self.record(f"{self.namespace}/controller", "ConfigInvalid", error)
            return False
        changed = self.pools is None or _pool_signature(pools) != _pool_signature(self.pools)
        if changed and self.pools is not None and self._stale_under(pools):
            return False
        self.pools = pools
        return changed

    def _stale_under(self, pools: dict[str, MetalLBPool]) -> bool:
        """Before v0.14 a config that leaves an assigned IP outside every pool is refused as
        stale and the old one kept [M2]; from v0.14 it is taken and the IP cleared."""
        version = metallb_version(self.cache, self.namespace)
        if version is None or version >= (0, 14):
            return False
        for key, alloc in self.allocator.by_service.items():
            if not any(all(p.contains(ip) for ip in alloc.ips) for p in pools.values()):
                self.record(key, "ConfigStale",
                            "new config not allowed: service would lose its IP (stale config)")
                return True
        return False

    def _reprocess_all(self) -> None:
        """Services that already have IPs first (re-adoption), then the rest [M6]."""
        if self.pools is None:
            return
        services = [s for s in self.cache.list("", "Service") if self._handles(s)]
        with_ips = [s for s in services if ingress_ips(s)]
        without = [s for s in services if not ingress_ips(s)]
        for svc in with_ips + without:
            self._converge(svc)

    def _retry_pending(self) -> None:
        for svc in self.cache.list("", "Service"):
            if self._handles(svc) and service_key(svc) not in self.allocator.by_service:
                self._converge(svc)

    def _handles(self, svc: Obj) -> bool:
        """loadBalancerClass filter: no class unless ``--lb-class`` is set [M6] (given to
        the model, else read from the workloads' arguments)."""
        wanted = self.lb_class or detected_lb_class(self.cache, self.namespace)
        return spec_of(svc).get("loadBalancerClass") == wanted

    # ----------------------------------------------------------------- convergeBalancer

    def _converge(self, svc: Obj) -> None:
        """convergeBalancer [M2][M6]: keep a valid assignment, else clear and allocate."""
        if self.pools is None or not self._handles(svc):
            return
        key = service_key(svc)
        spec = spec_of(svc)
        if spec.get("type") != "LoadBalancer" or spec.get("clusterIP") == "None":
            self._clear(key, svc, "notLoadBalancer")
            return
        requested, request_error = self._desired_ips(svc)
        if request_error:
            self.record(key, "LoadBalancerFailed", request_error)
            return
        current = [parse_ip(t) for t in ingress_ips(svc)]
        lb_ips: list[IPAddress] = [ip for ip in current if ip is not None]
        cleared = False
        if len(lb_ips) != len(current):
            lb_ips, cleared = [], True
        if not lb_ips:
            self.allocator.unassign(key)
        else:
            wanted_families, _ = service_families(svc)
            if any(ip.version not in wanted_families for ip in lb_ips):
                self.record(key, "ClearAssignment", "ipFamily changed")
                lb_ips, cleared = [], True
            else:
                error = self.allocator.assign(key, svc, lb_ips, self.pools)
                if error:
                    self.record(key, "ClearAssignment",
                                f"current IP for {key!r} not allowed by config, clearing: {error}")
                    lb_ips, cleared = [], True
        desired_pool = metallb_annotation(svc, "address-pool")
        if lb_ips and desired_pool and self._pool_of(key) != desired_pool:
            self.record(key, "ClearAssignment", "user requested a different pool")
            lb_ips, cleared = [], True
        if lb_ips and requested and sorted(map(str, requested)) != sorted(map(str, lb_ips)):
            self.record(key, "ClearAssignment", "user requested a different IP")
            lb_ips, cleared = [], True
        if cleared:
            self.allocator.unassign(key)
        if not lb_ips:
            lb_ips, error = self._allocate(key, svc, requested, desired_pool)
            if error:
                self.record(key, "AllocationFailed", f"Failed to allocate IP for {key!r}: {error}")
                self._write(svc, [], None)
                return
            self.record(key, "IPAllocated", f"Assigned IP {[str(i) for i in lb_ips]}")
        self._write(svc, lb_ips, self._pool_of(key))

    def _pool_of(self, key: str) -> str | None:
        alloc = self.allocator.by_service.get(key)
        return alloc.pool if alloc else None

    def _desired_ips(self, svc: Obj) -> tuple[list[IPAddress], str]:
        """loadBalancerIPs annotation or spec.loadBalancerIP; both at once is an error [M6]."""
        annotation = metallb_annotation(svc, "loadBalancerIPs")
        legacy = str(spec_of(svc).get("loadBalancerIP") or "")
        if annotation and legacy:
            return [], "service can not have both metallb.io/loadBalancerIPs and " \
                "svc.Spec.LoadBalancerIP"
        texts = [t.strip() for t in annotation.split(",") if t.strip()] if annotation else (
            [legacy] if legacy else [])
        ips: list[IPAddress] = []
        for text in texts:
            ip = parse_ip(text)
            if ip is None:
                return [], f"invalid IP {text!r} requested"
            ips.append(ip)
        if len(ips) > 2 or (len(ips) == 2 and ips[0].version == ips[1].version):
            return [], "at most two IPs, one per family, can be requested"
        return ips, ""

    def _allocate(self, key: str, svc: Obj, requested: list[IPAddress],
                  desired_pool: str) -> tuple[list[IPAddress], str]:
        """allocateIPs: requested IPs, else the named pool, else every pool in order [M2]."""
        assert self.pools is not None
        if requested:
            families, _ = service_families(svc)
            if any(ip.version not in families for ip in requested):
                return [], "requested IP family does not match the Service's"
            if desired_pool:
                pool = self.pools.get(desired_pool)
                if pool is None or not all(pool.contains(ip) for ip in requested):
                    return [], f"requested IPs are not in pool {desired_pool!r}"
            error = self.allocator.assign(key, svc, requested, self.pools)
            return (requested, "") if not error else ([], error)
        if desired_pool:
            pool = self.pools.get(desired_pool)
            if pool is None:
                return [], f"pool {desired_pool!r} does not exist"
            if not pool.compatible(svc):
                return [], f"pool {desired_pool!r} not compatible with the service"
            return self._take(key, svc, pool)
        # [M2] pinned pools (serviceAllocation matching, autoAssign) by priority (positive
        # ascending, then 0/unset), then pools with autoAssign and no serviceAllocation. Go map
        # order among equals is random; the model uses the pool name so tests repeat.
        pinned = sorted(
            (p for p in self.pools.values()
             if p.has_service_allocation and p.auto_assign and p.compatible(svc)),
            key=lambda p: (p.priority <= 0, p.priority, p.name))
        fallback = sorted((p for p in self.pools.values()
                           if p.auto_assign and not p.has_service_allocation),
                          key=lambda p: p.name)
        for pool in pinned + fallback:
            ips, error = self._take(key, svc, pool)
            if not error:
                return ips, ""
        return [], "no available IPs"

    def _take(self, key: str, svc: Obj, pool: MetalLBPool) -> tuple[list[IPAddress], str]:
        ips = self.allocator.allocate_from_pool(key, svc, pool)
        if not ips:
            return [], f"no available IPs in pool {pool.name!r}"
        assert self.pools is not None
        error = self.allocator.assign(key, svc, ips, self.pools)
        return (ips, "") if not error else ([], error)

    def _clear(self, key: str, svc: Obj, reason: str) -> None:
        self.allocator.unassign(key)
        if ingress_ips(svc):
            self.record(key, "ClearAssignment", reason)
        self._write(svc, [], None)

    def _write(self, svc: Obj, ips: list[IPAddress], pool: str | None) -> None:
        """Annotation ``metallb.io/ip-allocated-from-pool`` then the status [M6]."""
        name, namespace = name_of(svc), namespace_of(svc)
        current = self.store.try_get("", "Service", name, namespace)
        if current is None:
            return
        annotations = meta(current).setdefault("annotations", {}) or {}
        meta(current)["annotations"] = annotations
        if annotations.get(ALLOCATED_FROM_POOL) != pool:
            if pool is None:
                annotations.pop(ALLOCATED_FROM_POOL, None)
            else:
                annotations[ALLOCATED_FROM_POOL] = pool
            meta(current).pop("resourceVersion", None)
            try:
                current = self.store.update(current, manager=self.manager)
            except ApiError as exc:
                self.record(service_key(svc), "UpdateFailed", exc.message)
                return
        status = dict(current.get("status") or {})
        lb: Obj = {"ingress": [{"ip": str(ip)} for ip in ips]} if ips else {}
        if (status.get("loadBalancer") or {}) == lb:
            return
        status["loadBalancer"] = lb
        self.write_status("", "Service", name, namespace, status)

    # ----------------------------------------------------------------- webhook

    def is_up_now(self) -> bool:
        """Whether the controller pod runs right now (from the store, for admission)."""
        try:
            deployments = self.store.list("apps", "Deployment", self.namespace)
        except ApiError:
            deployments = []
        return self.workload.running(deployments)

    def _admission_hook(self, operation: str, new: Obj, old: Obj | None) -> None:
        """The validating webhooks the controller serves [M8][M10].

        A metallb.io write is intercepted when ValidatingWebhookConfiguration
        ``metallb-webhook-configuration`` has a webhook whose rules cover it. With the
        controller at 0 replicas the call fails (500, connection refused) unless that
        webhook's failurePolicy is Ignore; with it running the config is validated.
        """
        if not self.enabled or not str(new.get("apiVersion", "")).startswith(METALLB_GROUP + "/"):
            return
        try:
            config = self.store.try_get("admissionregistration.k8s.io",
                                        "ValidatingWebhookConfiguration", WEBHOOK_CONFIGURATION)
        except ApiError:
            config = None
        if config is None:
            return
        kind = str(new.get("kind", ""))
        plural = _plural(kind)
        for webhook in config.get("webhooks") or []:
            if not _webhook_covers(webhook, operation, plural):
                continue
            hook_name = str(webhook.get("name", ""))
            if not self.is_up_now():
                if webhook.get("failurePolicy", "Fail") == "Ignore":
                    continue
                raise ApiError(500, "InternalError", self._refused_message(hook_name, webhook,
                                                                           kind))
            if operation in ("CREATE", "UPDATE"):
                error = self._validate(new, old)
                if error:
                    raise ApiError(403, "Forbidden",
                                   f'admission webhook "{hook_name}" denied the request: {error}')

    def _refused_message(self, hook_name: str, webhook: Obj, kind: str) -> str:
        service = ((webhook.get("clientConfig") or {}).get("service") or {})
        svc_name = str(service.get("name") or "metallb-webhook-service")
        svc_ns = str(service.get("namespace") or self.namespace)
        path = str(service.get("path") or f"/validate-metallb-io-v1beta1-{kind.lower()}")
        target = self.store.try_get("", "Service", svc_name, svc_ns)
        cluster_ip = str(spec_of(target).get("clusterIP")) if target else "10.96.0.1"
        return (f'Internal error occurred: failed calling webhook "{hook_name}": failed to call '
                f'webhook: Post "https://{svc_name}.{svc_ns}.svc:443{path}?timeout=10s": '
                f"dial tcp {cluster_ip}:443: connect: connection refused")

    def _validate(self, new: Obj, old: Obj | None) -> str:
        """Re-parse the whole config with the object written [M10]."""
        if namespace_of(new) != self.namespace:
            return f"resource must be created in {self.namespace} namespace"
        kind = str(new.get("kind", ""))
        if kind == "IPAddressPool":
            others = [p for p in self.store.list(METALLB_GROUP, "IPAddressPool", self.namespace)
                      if name_of(p) != name_of(new)]
            _, error = parse_pools([*others, new], self.store.list("", "Namespace"))
            return error
        if kind == "L2Advertisement":
            return l2advertisement_error(new)
        return ""


def _plural(kind: str) -> str:
    lowered = kind.lower()
    if lowered.endswith("status"):
        return lowered + "es"
    if lowered.endswith("y"):
        return lowered[:-1] + "ies"
    return lowered + "s"


def _webhook_covers(webhook: Obj, operation: str, plural: str) -> bool:
    for rule in webhook.get("rules") or []:
        groups = rule.get("apiGroups") or []
        resources = rule.get("resources") or []
        operations = rule.get("operations") or []
        if ((METALLB_GROUP in groups or "*" in groups)
                and (plural in resources or "*" in resources)
                and (operation in operations or "*" in operations)):
            return True
    return False


def _pool_signature(pools: dict[str, MetalLBPool]) -> list[tuple[object, ...]]:
    return [
        (p.name, tuple(map(str, p.ranges)), p.auto_assign, p.avoid_buggy_ips,
         p.has_service_allocation, p.priority, tuple(sorted(p.namespaces)),
         repr(p.service_selectors))
        for p in pools.values()
    ]

