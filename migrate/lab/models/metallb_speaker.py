"""Model of MetalLB's speakers in layer-2 mode (reference/metallb.md §3, §5, §8).

Every speaker computes the same ordered node list per Service and the first one answers ARP
for the Service's IPs [M8]; nothing is stored except the ServiceL2Status objects [M5]. The
model computes that election for all speakers at once.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass

from migrate.lab.models._common import (
    Cache,
    Event,
    IPAddress,
    Model,
    Obj,
    WorkloadRule,
    any_selector_matches,
    find_condition,
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
from migrate.lab.models.metallb_controller import (
    DEFAULT_NAMESPACE,
    METALLB_GROUP,
    MetalLBPool,
    detected_lb_class,
    l2advertisement_error,
    metallb_config,
    parse_pools,
)
from migrate.lab.store import ApiError, Store

EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"


@dataclass(frozen=True)
class SpeakerAnnouncement:
    """Who announces one Service's IPs."""

    service: str
    node: str
    ips: tuple[str, ...]
    interfaces: tuple[str, ...]
    """Interfaces named by the advertisements selecting the node; empty = all [M3]."""


@dataclass
class SpeakerConfig:
    """The configuration the speakers have accepted (pools + L2Advertisements)."""

    pools: dict[str, MetalLBPool]
    pool_labels: dict[str, dict[str, str]]
    advertisements: list[Obj]

    def pool_for(self, ips: list[IPAddress]) -> MetalLBPool | None:
        """The pool holding all of a Service's IPs (poolFor)."""
        for pool in self.pools.values():
            if all(pool.contains(ip) for ip in ips):
                return pool
        return None

    def advertisements_for(self, pool: str) -> list[Obj]:
        """Pool-selection rule [M3]: both lists empty = all pools; else names ∪ selectors."""
        found = []
        for adv in self.advertisements:
            spec = spec_of(adv)
            names = [str(n) for n in spec.get("ipAddressPools") or []]
            selectors = list(spec.get("ipAddressPoolSelectors") or [])
            if (not names and not selectors) or pool in names or any(
                    selector_matches(s, self.pool_labels.get(pool, {})) for s in selectors):
                found.append(adv)
        return found


class MetalLBSpeaker(Model):
    """The speaker DaemonSet, all nodes at once.

    Readiness: a Service needs a ready (or ready-unset, or serving) endpoint in its
    EndpointSlices, else in its Endpoints object. A Service for which the store holds neither
    is treated as having ready endpoints, because lab snapshots rarely carry them.

    Speakers run on the nodes matched by the ``speaker`` DaemonSet's template nodeSelector
    (the lab keeps no DaemonSet status); when speaker pods are in the store, only nodes with
    one count (memberlist liveness [M8]). A DaemonSet seen and then deleted means nobody
    announces; no DaemonSet ever seen means every node runs a speaker.
    """

    name = "metallb-speaker"
    manager = "metallb-speaker"

    def __init__(self, store: Store, cache: Cache, *, namespace: str = DEFAULT_NAMESPACE,
                 lb_class: str | None = None, enabled: bool = True) -> None:
        super().__init__(store, cache, enabled=enabled)
        self.namespace = namespace
        self.lb_class = lb_class
        self.config: SpeakerConfig | None = None
        self.stale_config = False
        """True while a new config is refused because announced Services would lose their
        pool ("service has no configuration under new config") [M8]."""
        self.announced: dict[str, SpeakerAnnouncement] = {}
        self.daemonset = WorkloadRule("apps", "DaemonSet", self._is_speaker_daemonset,
                                      lambda found: True)
        self.speaker_pods = WorkloadRule("", "Pod", self._is_speaker_pod, lambda found: True)
        self._l2status: dict[str, tuple[str, str]] = {}
        """service key -> (node, ServiceL2Status name)."""

    def _is_speaker_daemonset(self, obj: Obj) -> bool:
        """``speaker`` in MetalLB's namespace, or one labelled as the chart's speaker [M9]."""
        return (name_of(obj) == "speaker" and namespace_of(obj) == self.namespace) or (
            labels_of(obj).get("app.kubernetes.io/component") == "speaker")

    def _is_speaker_pod(self, obj: Obj) -> bool:
        labels = labels_of(obj)
        return namespace_of(obj) == self.namespace and (
            labels.get("app.kubernetes.io/component") == "speaker"
            or labels.get("component") == "speaker")

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Speakers (re)start: accept the current config as is, announce, sync L2 status."""
        self.config = None
        self.stale_config = False
        self._adopt_config()
        self._adopt_l2status()
        self._recompute_all()

    def stop(self) -> None:
        """Speakers gone: nothing is announced any more (their L2 status objects stay, as
        they would until garbage collection of the pods)."""
        self.announced = {}
        self.config = None

    def handle(self, event: Event) -> None:
        """Recompute what the event can change."""
        group, kind = event.group_kind
        if (group, kind) in (("", "Service"), ("", "Endpoints")):
            self._recompute_service(namespace_of(event.obj), name_of(event.obj))
        elif (group, kind) == ("discovery.k8s.io", "EndpointSlice"):
            owner = labels_of(event.obj).get("kubernetes.io/service-name")
            if owner:
                self._recompute_service(namespace_of(event.obj), owner)
        elif (group, kind) in ((METALLB_GROUP, "IPAddressPool"), (METALLB_GROUP, "L2Advertisement"),
                               ("", "Namespace"), ("", "ConfigMap")):
            if kind == "Namespace" or namespace_of(event.obj) == self.namespace:
                self._adopt_config()
                self._recompute_all()
        elif (group, kind) in (("", "Node"), ("apps", "DaemonSet")) or (
                (group, kind) == ("", "Pod") and self._is_speaker_pod(event.obj)):
            if self.stale_config:
                self._adopt_config()
            self._recompute_all()

    # ----------------------------------------------------------------- config

    def _adopt_config(self) -> None:
        """Take the new config unless it is invalid (keep the last valid one [M10]) or would
        leave a Service holding an IP in no pool (refused, old config kept [M8])."""
        pool_objs, advs, _ = metallb_config(self.cache, self.namespace)
        pools, error = parse_pools(pool_objs, self.cache.list("", "Namespace"))
        if error or any(l2advertisement_error(a) for a in advs):
            return
        new = SpeakerConfig(pools, {name_of(p): labels_of(p) for p in pool_objs}, advs)
        if self.config is not None:
            for svc in self.cache.list("", "Service"):
                ips = [ip for ip in map(parse_ip, ingress_ips(svc)) if ip is not None]
                if (ips and self._handles(svc) and self.config.pool_for(ips) is not None
                        and new.pool_for(ips) is None):
                    self.stale_config = True
                    self.record(service_key(svc), "ConfigStale",
                                "service has no configuration under new config")
                    return
        self.config = new
        self.stale_config = False

    def _handles(self, svc: Obj) -> bool:
        spec = spec_of(svc)
        wanted = self.lb_class or detected_lb_class(self.cache, self.namespace)
        return spec.get("type") == "LoadBalancer" and spec.get("loadBalancerClass") == wanted

    # ----------------------------------------------------------------- election

    def _recompute_all(self) -> None:
        keys = {service_key(s) for s in self.cache.list("", "Service")} | set(self.announced)
        for key in sorted(keys):
            namespace, _, name = key.partition("/")
            self._recompute_service(namespace, name)

    def _recompute_service(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        svc = self.cache.get("", "Service", name, namespace)
        result = self._elect(svc) if svc is not None else None
        previous = self.announced.get(key)
        if result is None:
            self.announced.pop(key, None)
        else:
            self.announced[key] = result
        if previous != result:
            if result is not None:
                self.record(key, "nodeAssigned",
                            f"announcing from node {result.node!r} with protocol \"layer2\"")
            self._sync_l2status(key, result)

    def _elect(self, svc: Obj) -> SpeakerAnnouncement | None:
        """ShouldAnnounce for every node at once [M8]."""
        if self.config is None or not self._handles(svc):
            return None
        texts = ingress_ips(svc)
        ips = [ip for ip in map(parse_ip, texts) if ip is not None]
        if not ips:
            return None
        pool = self.config.pool_for(ips)
        if pool is None:
            return None
        ready_nodes = self._ready_endpoint_nodes(svc)
        if ready_nodes is not None and not ready_nodes[0]:
            return None  # [M8] 1. no ready endpoint: nobody announces
        advs = [a for a in self.config.advertisements_for(pool.name)
                if any_selector_matches(spec_of(a).get("serviceSelectors") or [],
                                        labels_of(svc))]
        if not advs:
            return None  # [M3] no matching L2Advertisement: allocated but not announced
        candidates = []
        for node in self._speaker_nodes():
            selecting = [a for a in advs if any_selector_matches(
                spec_of(a).get("nodeSelectors") or [], labels_of(node))]
            if selecting:
                candidates.append((name_of(node), selecting))
        if spec_of(svc).get("externalTrafficPolicy") == "Local" and ready_nodes is not None:
            local = ready_nodes[1]
            candidates = [c for c in candidates if c[0] in local]
        if not candidates:
            return None
        first_ip = str(ips[0])
        # [M8] 4. ascending sha256(nodeName + "#" + ip), ip = first ingress entry
        winner, selecting = min(
            candidates, key=lambda c: hashlib.sha256(f"{c[0]}#{first_ip}".encode()).digest())
        interfaces: set[str] = set()
        for adv in selecting:
            names = [str(i) for i in spec_of(adv).get("interfaces") or []]
            if not names:
                interfaces = set()
                break
            interfaces |= set(names)
        return SpeakerAnnouncement(service_key(svc), winner, tuple(map(str, ips)),
                                   tuple(sorted(interfaces)))

    def _speaker_nodes(self) -> list[Obj]:
        """Nodes with a live speaker, minus NetworkUnavailable=True and excluded ones [M8]."""
        daemonsets = self.daemonset.found(self.cache.list("apps", "DaemonSet"))
        if daemonsets:
            self.daemonset.seen = True
        elif self.daemonset.seen:
            return []  # [M8] DaemonSet removed entirely: nobody answers
        pods = self.speaker_pods.found(self.cache.list("", "Pod", self.namespace))
        if pods:
            self.speaker_pods.seen = True
        pod_required = self.speaker_pods.seen
        nodes = []
        pod_nodes = {str(spec_of(p).get("nodeName") or "") for p in pods
                     if not meta(p).get("deletionTimestamp")}
        for node in self.cache.list("", "Node"):
            labels = labels_of(node)
            if daemonsets and not any(_node_selector_matches(ds, node) for ds in daemonsets):
                continue
            if pod_required and name_of(node) not in pod_nodes:
                continue
            conditions = (node.get("status") or {}).get("conditions") or []
            unavailable = find_condition(conditions, "NetworkUnavailable")
            if unavailable is not None and unavailable.get("status") == "True":
                continue
            if EXCLUDE_LB_LABEL in labels:
                continue
            nodes.append(node)
        return nodes

    def _ready_endpoint_nodes(self, svc: Obj) -> tuple[bool, set[str]] | None:
        """(any ready endpoint, nodes hosting one), or None when the store has no endpoint
        objects for the Service (treated as ready)."""
        namespace, name = namespace_of(svc), name_of(svc)
        slices = self.cache.endpoint_slices(namespace, name)
        if slices:
            nodes: set[str] = set()
            ready = False
            for eps in slices:
                for endpoint in eps.get("endpoints") or []:
                    conditions = endpoint.get("conditions") or {}
                    if conditions.get("ready") is not False or conditions.get("serving") is True:
                        ready = True
                        if endpoint.get("nodeName"):
                            nodes.add(str(endpoint["nodeName"]))
            return ready, nodes
        endpoints = self.cache.get("", "Endpoints", name, namespace)
        if endpoints is not None:
            nodes = set()
            ready = False
            for subset in endpoints.get("subsets") or []:
                for address in subset.get("addresses") or []:
                    ready = True
                    if address.get("nodeName"):
                        nodes.add(str(address["nodeName"]))
            return ready, nodes
        return None

    # ----------------------------------------------------------------- ServiceL2Status

    def _status_kind_served(self) -> bool:
        try:
            self.store.resource_type(METALLB_GROUP, "ServiceL2Status")
        except ApiError:
            return False
        return True

    def _adopt_l2status(self) -> None:
        """On start, take over the ServiceL2Status objects already in the store."""
        self._l2status = {}
        for obj in self.cache.list(METALLB_GROUP, "ServiceL2Status", self.namespace):
            labels = labels_of(obj)
            key = f"{labels.get('metallb.io/service-namespace')}/" \
                f"{labels.get('metallb.io/service-name')}"
            node = labels.get("metallb.io/node", "")
            if key in self._l2status:
                self._delete_l2status(name_of(obj))
            else:
                self._l2status[key] = (node, name_of(obj))

    def _sync_l2status(self, key: str, result: SpeakerAnnouncement | None) -> None:
        """The announcing speaker creates one object; one that stops deletes its own [M5]."""
        if not self._status_kind_served():
            return
        held = self._l2status.get(key)
        if held is not None and (result is None or held[0] != result.node):
            self._delete_l2status(held[1])
            self._l2status.pop(key, None)
            held = None
        if result is None:
            return
        namespace, _, name = key.partition("/")
        status: Obj = {"node": result.node, "serviceName": name, "serviceNamespace": namespace}
        if result.interfaces:
            status["interfaces"] = [{"name": i} for i in result.interfaces]
        if held is not None:
            current = self.store.try_get(METALLB_GROUP, "ServiceL2Status", held[1],
                                         self.namespace)
            if current is not None and current.get("status") != status:
                self.write_status(METALLB_GROUP, "ServiceL2Status", held[1], self.namespace,
                                  status)
            if current is not None:
                return
        body: Obj = {
            "apiVersion": f"{METALLB_GROUP}/v1beta1",
            "kind": "ServiceL2Status",
            "metadata": {
                "generateName": "l2-",
                "namespace": self.namespace,
                "labels": {"metallb.io/node": result.node, "metallb.io/service-name": name,
                           "metallb.io/service-namespace": namespace},
            },
        }
        pod = self._speaker_pod_on(result.node)
        if pod is not None:
            meta(body)["ownerReferences"] = [{
                "apiVersion": "v1", "kind": "Pod", "name": name_of(pod),
                "uid": str(meta(pod).get("uid", "")), "controller": True}]
        try:
            created = self.store.create(body, manager=self.manager, keep_status=False)
        except ApiError as exc:
            self.record(key, "ServiceL2StatusFailed", exc.message)
            return
        self._l2status[key] = (result.node, name_of(created))
        self.write_status(METALLB_GROUP, "ServiceL2Status", name_of(created), self.namespace,
                          status)

    def _delete_l2status(self, name: str) -> None:
        with contextlib.suppress(ApiError):  # already gone
            self.store.delete(METALLB_GROUP, "ServiceL2Status", name, self.namespace,
                              manager=self.manager)

    def _speaker_pod_on(self, node: str) -> Obj | None:
        for pod in self.speaker_pods.found(self.cache.list("", "Pod", self.namespace)):
            if spec_of(pod).get("nodeName") == node:
                return pod
        return None


def _node_selector_matches(daemonset: Obj, node: Obj) -> bool:
    """The DaemonSet template's nodeSelector against the Node's labels, with the labels every
    kubelet sets (``kubernetes.io/os``, ``kubernetes.io/arch``) filled in when a snapshot
    leaves them out."""
    labels = dict(labels_of(node))
    info = (node.get("status") or {}).get("nodeInfo") or {}
    labels.setdefault("kubernetes.io/os", str(info.get("operatingSystem") or "linux"))
    labels.setdefault("kubernetes.io/arch", str(info.get("architecture") or "amd64"))
    template_spec = spec_of(spec_of(daemonset).get("template") or {})
    selector = template_spec.get("nodeSelector") or {}
    return all(labels.get(str(k)) == str(v) for k, v in selector.items())
