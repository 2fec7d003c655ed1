"""Model of MetalLB's controller: IP allocation for LoadBalancer Services, and its validating
webhook (reference/metallb.md §2, §6, §8, §10; cited as [M2] … below).

One :class:`MetalLBController` runs per controller pod (the Deployment normally has one; two
would both allocate, as two real controllers would). The controller only allocates: it writes
``status.loadBalancer.ingress`` and the ``ip-allocated-from-pool`` annotation. Announcing is the
speakers' job (:mod:`migrate.lab.models.metallb_speaker`). The webhook answers while a
controller pod runs and is not Terminating (a Terminating pod leaves the webhook Service's
endpoints at once).

Version bands (the image tag of the process's own pod; an unknown tag is the newest, 0.16.1):

* before v0.14.0 a restart processes the Services in informer order, so a pending Service can
  take the IP of a Service not processed yet (metallb commit 667ab7e93 "Make the controller
  preserve state on reboot", in v0.14.0, sorts the Services with IPs first;
  ``internal/k8s/controllers/service_controller_reload.go``);
* through v0.14.8 only ``metallb.universe.tf/`` Service annotations are read (and
  ``metallb.universe.tf/ip-allocated-from-pool`` written): ``controller/service.go``
  ``AnnotationPrefix``;
* from v0.14.9 (PR #2495) ``metallb.io/`` is read first and ``metallb.universe.tf/`` is the
  fallback (``valueForAnnotation``: the new key wins when present, even empty), and a Service
  using an old key gets a ``deprecatedAnnotation`` event when the controller writes it
  (``controller/main.go``); v0.16.1 still does the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from migrate.lab.models._common import (
    Component,
    Event,
    IPAddress,
    Model,
    Obj,
    Process,
    annotations_of,
    container_flags,
    flag_value,
    ingress_ips,
    meta,
    name_of,
    namespace_of,
    parse_ip,
    service_key,
    spec_of,
)
from migrate.lab.models.metallb_config import (
    CONFIG_KINDS,
    DEFAULT_NAMESPACE,
    METALLB_GROUP,
    MetalLBConfig,
    MetalLBPool,
    bgp_type_of,
    l2advertisement_error,
    parse_config,
    parse_pools,
)
from migrate.lab.runtime import METALLB_CONTROLLER
from migrate.lab.store import ApiError
from migrate.lab.versions import Version, at_least, below, version_in

if TYPE_CHECKING:
    from migrate.lab.models import Runtime

WEBHOOK_CONFIGURATION = "metallb-webhook-configuration"
NEW_PREFIX = "metallb.io/"
OLD_PREFIX = "metallb.universe.tf/"
ALLOCATED_FROM_POOL = NEW_PREFIX + "ip-allocated-from-pool"

__all__ = ["ALLOCATED_FROM_POOL", "DEFAULT_NAMESPACE", "METALLB_GROUP", "MetalLBController",
           "MetalLBControllers", "MetalLBPool", "metallb_annotation"]


def metallb_annotation(svc: Obj, name: str, version: Version | None = None) -> str:
    """A MetalLB Service annotation as a controller of ``version`` reads it [M6]."""
    annotations = annotations_of(svc)
    if below(version, 0, 14, 9):
        return annotations.get(OLD_PREFIX + name, "")
    if NEW_PREFIX + name in annotations:
        return annotations[NEW_PREFIX + name]
    return annotations.get(OLD_PREFIX + name, "")


def allocated_from_pool_key(version: Version | None) -> str:
    """The annotation the controller records the pool in."""
    return (OLD_PREFIX if below(version, 0, 14, 9) else NEW_PREFIX) + "ip-allocated-from-pool"


# --------------------------------------------------------------------------- services

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

    def __init__(self, version: Version | None = None) -> None:
        self.version = version
        self.by_service: dict[str, Allocation] = {}
        self.by_ip: dict[IPAddress, set[str]] = {}

    def sharing_key(self, svc: Obj) -> str:
        """The ``allow-shared-ip`` annotation as this version reads it."""
        return metallb_annotation(svc, "allow-shared-ip", self.version)

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
        want = Allocation(tuple(ips), pool.name, self.sharing_key(svc), backend_key(svc),
                          service_ports(svc))
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
        want = Allocation((), pool.name, self.sharing_key(svc),
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


class MetalLBController(Model):
    """The code of one MetalLB controller process."""

    name = "metallb-controller"
    manager = "metallb-controller"

    def __init__(self, process: Process) -> None:
        super().__init__(process)
        component = process.component
        assert isinstance(component, MetalLBControllers)
        self.namespace = component.namespace
        source = process.spec_source
        self.version = version_in([source], "controller") if source else None
        args, env = container_flags(source, "controller")
        self.lb_class = component.lb_class or flag_value(args, "--lb-class") or None
        self.legacy_name = flag_value(args, "--config") or "config"
        self.bgp_type = bgp_type_of(env)
        self.config: MetalLBConfig | None = None
        """The last valid configuration (None until one loaded) [M10]."""
        self.config_error = ""
        self.allocator = Allocator(self.version)

    @property
    def pools(self) -> dict[str, MetalLBPool] | None:
        """The pools of the last valid configuration."""
        return self.config.pools if self.config is not None else None

    @property
    def legacy(self) -> bool:
        """True when the configuration comes from the ≤0.12 ConfigMap [M7]."""
        return self.config is not None and self.config.legacy

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Process start: load config, re-adopt status IPs, then allocate [M6]."""
        self.allocator = Allocator(self.version)
        self.config = None
        self._load_config()
        self._reprocess_all()

    def stop(self, *, graceful: bool) -> None:
        """The process is gone: nothing in memory survives."""
        self.allocator = Allocator(self.version)
        self.config = None

    def handle(self, event: Event) -> None:
        """One watched event, in order."""
        group, kind = event.group_kind
        if (group == METALLB_GROUP and kind in CONFIG_KINDS) or (group, kind) in (
                ("", "Namespace"), ("", "ConfigMap"), ("", "Secret"), ("", "Node")):
            if kind not in ("Namespace", "Node") and namespace_of(event.obj) != self.namespace:
                return  # [M1] objects outside MetalLB's namespace are ignored
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
        """Reload the whole configuration; keep the last valid one when the new one is
        invalid [M10]. True when the pools changed."""
        config, error = parse_config(self.cache, self.namespace, version=self.version,
                                     bgp_type=self.bgp_type, legacy_name=self.legacy_name)
        self.config_error = error
        if config is None:
            self.record(f"{self.namespace}/controller", "ConfigInvalid", error)
            return False
        old = self.pools
        changed = old is None or _pool_signature(config.pools) != _pool_signature(old)
        if changed and old is not None and self._stale_under(config.pools):
            return False
        self.config = config
        return changed

    def _stale_under(self, pools: dict[str, MetalLBPool]) -> bool:
        """Before v0.14 a config that leaves an assigned IP outside every pool is refused as
        stale and the old one kept [M2]; from v0.14 it is taken and the IP cleared."""
        if at_least(self.version, 0, 14):
            return False
        for key, alloc in self.allocator.by_service.items():
            if not any(all(p.contains(ip) for ip in alloc.ips) for p in pools.values()):
                self.record(key, "ConfigStale",
                            "new config not allowed: service would lose its IP (stale config)")
                return True
        return False

    def _reprocess_all(self) -> None:
        """reprocessAll: from v0.14.0 the Services that have IPs first (re-adoption), then
        the rest (commit 667ab7e93); before, in informer (namespace/name) order, so a pending
        Service can take an IP whose holder comes later."""
        if self.pools is None:
            return
        services = [s for s in self.cache.list("", "Service") if self._handles(s)]
        if at_least(self.version, 0, 14):
            services.sort(key=lambda s: -len(ingress_ips(s)))  # sort.Slice by ingress count
        for svc in services:
            current = self.cache.get("", "Service", name_of(svc), namespace_of(svc))
            if current is not None:
                self._converge(current)

    def _retry_pending(self) -> None:
        for svc in self.cache.list("", "Service"):
            if self._handles(svc) and service_key(svc) not in self.allocator.by_service:
                self._converge(svc)

    def _handles(self, svc: Obj) -> bool:
        """loadBalancerClass filter: no class unless ``--lb-class`` is set [M6]."""
        return spec_of(svc).get("loadBalancerClass") == self.lb_class

    def annotation(self, svc: Obj, name: str) -> str:
        """A Service annotation as this controller's version reads it."""
        return metallb_annotation(svc, name, self.version)

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
        desired_pool = self.annotation(svc, "address-pool")
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
        annotation = self.annotation(svc, "loadBalancerIPs")
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
        """The pool annotation then the status [M6]."""
        name, namespace = name_of(svc), namespace_of(svc)
        current = self.store.try_get("", "Service", name, namespace)
        if current is None:
            return
        pool_key = allocated_from_pool_key(self.version)
        annotations = meta(current).setdefault("annotations", {}) or {}
        meta(current)["annotations"] = annotations
        status = dict(current.get("status") or {})
        lb: Obj = {"ingress": [{"ip": str(ip)} for ip in ips]} if ips else {}
        changes = annotations.get(pool_key) != pool or (status.get("loadBalancer") or {}) != lb
        if changes and at_least(self.version, 0, 14, 9):
            for annotation in sorted(annotations):
                if annotation.startswith(OLD_PREFIX):
                    self.record(service_key(svc), "deprecatedAnnotation",
                                f"Service uses deprecated annotation {annotation}")
        if annotations.get(pool_key) != pool:
            if pool is None:
                annotations.pop(pool_key, None)
            else:
                annotations[pool_key] = pool
            meta(current).pop("resourceVersion", None)
            self.api("UPDATE", "services", name)
            try:
                current = self.store.update(current, manager=self.manager)
            except ApiError as exc:
                self.record(service_key(svc), "UpdateFailed", exc.message)
                return
        status = dict(current.get("status") or {})
        if (status.get("loadBalancer") or {}) == lb:
            return
        status["loadBalancer"] = lb
        self.write_status("", "Service", name, namespace, status)


# --------------------------------------------------------------------------- the component


class MetalLBControllers(Component):
    """MetalLB's controller Deployment: its processes, and the validating webhook they
    serve [M8][M10]."""

    kind = METALLB_CONTROLLER
    watched = (("", "Namespace"), ("", "Service"), ("", "ConfigMap"), ("", "Secret"),
               ("", "Node"), *((METALLB_GROUP, k) for k in CONFIG_KINDS))

    def __init__(self, runtime: Runtime, *, namespace: str = DEFAULT_NAMESPACE,
                 lb_class: str | None = None, enabled: bool = True) -> None:
        super().__init__(runtime, enabled=enabled)
        self.namespace = namespace
        self.lb_class = lb_class
        runtime.store.add_admission_hook(self.admission_hook)

    def make_model(self, process: Process) -> Model:
        return MetalLBController(process)

    def models(self) -> list[MetalLBController]:
        """The controller code of every running process."""
        return [p.model for p in self.running() if isinstance(p.model, MetalLBController)]

    @property
    def legacy(self) -> bool:
        """Whether a running controller reads the ≤0.12 ConfigMap [M7]."""
        return any(m.legacy for m in self.models())

    @property
    def config_error(self) -> str:
        """Why a running controller refused the current configuration ("" when none did)."""
        return next((m.config_error for m in self.models() if m.config_error), "")

    def serving(self) -> bool:
        """Whether the webhook answers: a controller process runs in a pod that is not
        Terminating."""
        return any(not p.terminating for p in self.running())

    def admission_hook(self, operation: str, new: Obj, old: Obj | None) -> None:
        """The validating webhooks the controller serves [M8][M10].

        A metallb.io write is intercepted when ValidatingWebhookConfiguration
        ``metallb-webhook-configuration`` has a webhook whose rules cover it. With no
        controller serving, the call fails (500, connection refused) unless that webhook's
        failurePolicy is Ignore; with one serving the config is validated.
        """
        if not self.enabled or not str(new.get("apiVersion", "")).startswith(METALLB_GROUP + "/"):
            return
        try:
            config = self.runtime.store.try_get("admissionregistration.k8s.io",
                                                "ValidatingWebhookConfiguration",
                                                WEBHOOK_CONFIGURATION)
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
            if not self.serving():
                if webhook.get("failurePolicy", "Fail") == "Ignore":
                    continue
                raise ApiError(500, "InternalError", self._refused_message(hook_name, webhook,
                                                                           kind))
            if operation in ("CREATE", "UPDATE"):
                error = self._validate(new)
                if error:
                    raise ApiError(403, "Forbidden",
                                   f'admission webhook "{hook_name}" denied the request: {error}')

    def _refused_message(self, hook_name: str, webhook: Obj, kind: str) -> str:
        service = ((webhook.get("clientConfig") or {}).get("service") or {})
        svc_name = str(service.get("name") or "metallb-webhook-service")
        svc_ns = str(service.get("namespace") or self.namespace)
        path = str(service.get("path") or f"/validate-metallb-io-v1beta1-{kind.lower()}")
        target = self.runtime.store.try_get("", "Service", svc_name, svc_ns)
        cluster_ip = str(spec_of(target).get("clusterIP")) if target else "10.96.0.1"
        return (f'Internal error occurred: failed calling webhook "{hook_name}": failed to call '
                f'webhook: Post "https://{svc_name}.{svc_ns}.svc:443{path}?timeout=10s": '
                f"dial tcp {cluster_ip}:443: connect: connection refused")

    def _validate(self, new: Obj) -> str:
        """Re-parse the whole config with the object written [M10]."""
        if namespace_of(new) != self.namespace:
            return f"resource must be created in {self.namespace} namespace"
        kind = str(new.get("kind", ""))
        store = self.runtime.store
        if kind == "IPAddressPool":
            others = [p for p in store.list(METALLB_GROUP, "IPAddressPool", self.namespace)
                      if name_of(p) != name_of(new)]
            _, error = parse_pools([*others, new], store.list("", "Namespace"))
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
