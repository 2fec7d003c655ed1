"""Model of MetalLB's speakers in layer-2 mode (reference/metallb.md §3, §5, §8); their BGP side
is :mod:`migrate.lab.models.metallb_bgp`.

One :class:`MetalLBSpeaker` runs per speaker pod, i.e. per node its DaemonSet runs on. Each
speaker has its own informer view, its own configuration (the last valid one it parsed, BGP
kinds included: :mod:`migrate.lab.models.metallb_config`), and its own view of which speakers
are alive (memberlist, ``internal/speakerlist/speakerlist.go``). For every Service it computes
the ordered node list (``speaker/layer2_controller.go`` ``ShouldAnnounce``: ready endpoints,
nodes of the pool's L2Advertisements, sha256(node + "#" + first IP)) and announces when it is
first. It answers on the advertisement's interfaces that its node has, or on all of them
(``SetBalancer``: "the specified interfaces used to announce LB IP don't exist" otherwise).

``ServiceL2Status`` (``internal/k8s/controllers/layer2_status_controller.go``): the announcing
speaker writes one per Service, owned by its pod, and deletes the one naming its node when it
stops announcing. Written from v0.14.6 on; v0.14.4 and v0.14.5 only with
``--enable-l2-service-status`` (``speaker/main.go``); never before.
"""

from __future__ import annotations

import contextlib
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migrate.lab.models._common import (
    Announcer,
    Component,
    Event,
    Model,
    Obj,
    Process,
    any_selector_matches,
    container_flags,
    find_condition,
    flag_value,
    ingress_ips,
    labels_of,
    meta,
    name_of,
    namespace_of,
    parse_ip,
    service_key,
    spec_of,
)
from migrate.lab.models.interfaces import node_interfaces
from migrate.lab.models.metallb_config import (
    CONFIG_KINDS,
    DEFAULT_NAMESPACE,
    METALLB_GROUP,
    MetalLBConfig,
    bgp_type_of,
    owner_pod_reference,
    parse_config,
)
from migrate.lab.runtime import METALLB_SPEAKER
from migrate.lab.store import ApiError
from migrate.lab.versions import Version, at_least, version_in, within

if TYPE_CHECKING:
    from migrate.lab.models import Runtime

EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
STATUS_KIND = "ServiceL2Status"


@dataclass(frozen=True)
class SpeakerAnnouncement:
    """What one speaker announces for one Service."""

    service: str
    node: str
    ips: tuple[str, ...]
    interfaces: tuple[str, ...]
    """Interfaces named by the advertisements selecting the node; empty = all [M3]."""


def writes_l2_status(version: Version | None, args: list[str]) -> bool:
    """ServiceL2Status: from v0.14.6; v0.14.4/0.14.5 behind ``--enable-l2-service-status``."""
    if at_least(version, 0, 14, 6):
        return True
    if within(version, (0, 14, 4), (0, 14, 6)):
        value = flag_value(args, "--enable-l2-service-status")
        return value is not None and value.lower() not in ("false", "0")
    return False


class MetalLBSpeaker(Announcer):
    """The code of the speaker on one node.

    Readiness: a Service needs a ready (or ready-unset, or serving) endpoint in its
    EndpointSlices, else in its Endpoints object. A Service for which the view holds neither
    is treated as having ready endpoints, because lab snapshots rarely carry them.
    """

    name = "metallb-speaker"
    manager = "metallb-speaker"
    stack = "metallb"

    def __init__(self, process: Process) -> None:
        super().__init__(process)
        component = process.component
        assert isinstance(component, MetalLBSpeakers)
        self.namespace = component.namespace
        self.node = process.node or ""
        source = process.spec_source
        self.version = version_in([source], "speaker") if source else None
        args, env = container_flags(source, "speaker")
        self.lb_class = component.lb_class or flag_value(args, "--lb-class") or None
        self.legacy_name = flag_value(args, "--config") or "config"
        self.bgp_type = bgp_type_of(env)
        self.status_enabled = writes_l2_status(self.version, args)
        self.config: MetalLBConfig | None = None
        self.config_error = ""
        self.stale_config = False
        """True while a new config is refused because announced Services would lose their
        pool ("service has no configuration under new config") [M8]."""
        self.members: frozenset[str] = frozenset()
        self.announced: dict[str, SpeakerAnnouncement] = {}
        """Service key -> what this speaker answers for (its node only)."""
        self._failed: set[str] = set()
        """Services it won but cannot announce (the interfaces are missing): retried on
        every resync, as updateInterfaces finds new ones."""
        self._mine: dict[str, str] = {}
        """Service key -> the ServiceL2Status this speaker wrote (its view may not show it
        yet)."""
        from migrate.lab.models.metallb_bgp import SpeakerBGP

        self.bgp = SpeakerBGP(self)
        """The BGP controller of this speaker (``speaker/bgp_controller.go``)."""

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """The speaker starts: join memberlist, parse the config, announce, and clear the
        ServiceL2Status objects of its node it does not announce."""
        self.members = self.process.component.members()  # type: ignore[attr-defined]
        self.config = None
        self.stale_config = False
        self._adopt_config()
        self._recompute_all()
        if self.config is not None:
            self.bgp.set_config(self.config)
        if self.status_enabled and self._status_kind_served():
            for obj in self.cache.list(METALLB_GROUP, STATUS_KIND, self.namespace):
                labels = labels_of(obj)
                key = f"{labels.get('metallb.io/service-namespace')}/" \
                    f"{labels.get('metallb.io/service-name')}"
                if labels.get("metallb.io/node") == self.node and key not in self.announced:
                    self._delete_status(name_of(obj))

    def stop(self, *, graceful: bool) -> None:
        """The speaker exits: nothing is announced any more (its ServiceL2Status objects stay
        until its pod is garbage-collected)."""
        self.silence()
        self.bgp.stop(graceful=graceful)
        self.announced = {}
        self.config = None

    def handle(self, event: Event) -> None:
        """Recompute what the event can change."""
        if event.type == "MEMBERS":
            self.members = frozenset(event.obj["members"])
            self._recompute_all()
            return
        group, kind = event.group_kind
        if (group, kind) in (("", "Service"), ("", "Endpoints")):
            self._recompute_service(namespace_of(event.obj), name_of(event.obj))
        elif (group, kind) == ("discovery.k8s.io", "EndpointSlice"):
            owner = labels_of(event.obj).get("kubernetes.io/service-name")
            if owner:
                self._recompute_service(namespace_of(event.obj), owner)
        elif (group == METALLB_GROUP and kind in CONFIG_KINDS) or (group, kind) in (
                ("", "Namespace"), ("", "ConfigMap"), ("", "Secret")):
            if kind == "Namespace" or namespace_of(event.obj) == self.namespace:
                before = self.config
                self._adopt_config()
                if self.config is not None and self.config is not before:
                    self.bgp.set_config(self.config)
                self._recompute_all()
        elif (group, kind) == ("", "Node"):
            if self.stale_config:
                before = self.config
                self._adopt_config()
                if self.config is not None and self.config is not before:
                    self.bgp.set_config(self.config)
            if name_of(event.obj) == self.node and event.type != "DELETED":
                self.bgp.set_node(event.obj)
            self._recompute_all()
        elif (group, kind) == (METALLB_GROUP, STATUS_KIND) and event.type == "DELETED":
            labels = labels_of(event.obj)
            key = f"{labels.get('metallb.io/service-namespace')}/" \
                f"{labels.get('metallb.io/service-name')}"
            if key in self.announced:
                self._sync_status(key, self.announced[key])  # recreate what is still true

    # ----------------------------------------------------------------- config

    def _adopt_config(self) -> None:
        """Take the new config unless it fails to parse (keep the last valid one [M10],
        config_controller.go) or would leave a Service holding an IP in no pool (refused, old
        config kept [M8])."""
        new, error = parse_config(self.cache, self.namespace, version=self.version,
                                  bgp_type=self.bgp_type, legacy_name=self.legacy_name)
        self.config_error = error
        if new is None:
            self.record(f"{self.namespace}/speaker@{self.node}", "ConfigInvalid",
                        f"failed to parse the configuration: {error}")
            return
        if self.config is not None:
            if new.signature == self.config.signature:
                self.stale_config = False
                return
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
        return spec.get("type") == "LoadBalancer" and spec.get("loadBalancerClass") == \
            self.lb_class

    # ----------------------------------------------------------------- election

    def _recompute_all(self) -> None:
        keys = {service_key(s) for s in self.cache.list("", "Service")} | set(self.announced)
        for key in sorted(keys):
            namespace, _, name = key.partition("/")
            self._recompute_service(namespace, name)

    def _recompute_service(self, namespace: str, name: str) -> None:
        key = f"{namespace}/{name}"
        svc = self.cache.get("", "Service", name, namespace)
        self.bgp.service(key, svc)
        result = self._elect(svc) if svc is not None else None
        previous = self.announced.get(key)
        if result is None:
            self.announced.pop(key, None)
        else:
            self.announced[key] = result
        if previous != result or key in self._failed:
            if result is not None and previous != result:
                self.record(key, "nodeAssigned",
                            f"announcing from node {result.node!r} with protocol \"layer2\"")
            self._announce(key, result)

    def _elect(self, svc: Obj) -> SpeakerAnnouncement | None:
        """ShouldAnnounce for this speaker's node [M8]; None when it does not announce."""
        if self.config is None or not self._handles(svc):
            return None
        ips = [ip for ip in map(parse_ip, ingress_ips(svc)) if ip is not None]
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
        candidates: list[tuple[str, list[Obj]]] = []
        for node in self._usable_nodes():
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
        if winner != self.node:
            return None
        interfaces: set[str] = set()
        for adv in selecting:
            names = [str(i) for i in spec_of(adv).get("interfaces") or []]
            if not names:
                interfaces = set()
                break
            interfaces |= set(names)
        return SpeakerAnnouncement(service_key(svc), winner, tuple(map(str, ips)),
                                   tuple(sorted(interfaces)))

    def _usable_nodes(self) -> list[Obj]:
        """Nodes with a live speaker (memberlist), minus NetworkUnavailable=True and excluded
        ones [M8]."""
        nodes = []
        for node in self.cache.list("", "Node"):
            if name_of(node) not in self.members:
                continue
            conditions = (node.get("status") or {}).get("conditions") or []
            unavailable = find_condition(conditions, "NetworkUnavailable")
            if unavailable is not None and unavailable.get("status") == "True":
                continue
            if EXCLUDE_LB_LABEL in labels_of(node):
                continue
            nodes.append(node)
        return nodes

    def _ready_endpoint_nodes(self, svc: Obj) -> tuple[bool, set[str]] | None:
        """(any ready endpoint, nodes hosting one), or None when the view has no endpoint
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

    # ----------------------------------------------------------------- the wire

    def answering_interfaces(self, ann: SpeakerAnnouncement) -> tuple[str, ...] | None:
        """The node's interfaces this announcement answers on (``()``: all), or None when the
        interfaces it names do not exist on the node (``SetBalancer``: announceFailed)."""
        if not ann.interfaces:
            return ()
        have = node_interfaces(self.cache.get("", "Node", self.node))
        if have is None:
            return ann.interfaces  # the node's interfaces are unknown: as named
        present = tuple(i for i in ann.interfaces if i in have)
        return present or None

    def _announce(self, key: str, result: SpeakerAnnouncement | None) -> None:
        """Start or stop answering (after the datapath delay), then the status object."""
        ips: tuple[str, ...] = ()
        self._failed.discard(key)
        if result is not None:
            if self.answering_interfaces(result) is None:
                self._failed.add(key)
                self.record(key, "announceFailed",
                            f"the interfaces specified by LB IP {result.ips[0]!r} don't exist "
                            f"in assigned node {self.node!r} with protocol \"layer2\"")
                result = None
            else:
                ips = result.ips
        self.hand_to_datapath(key, ips)
        # The status follows the announcer, never the other way round: SetBalancer and
        # DeleteBalancer change the responder's set at once (internal/layer2/announcer.go),
        # then call onStatusChange (speaker/layer2_controller.go), whose reconciler writes or
        # deletes the ServiceL2Status. So a status that is gone means the wire is quiet.
        self.process.in_order("datapath", 0.0, lambda: self._sync_status(key, result))

    # ----------------------------------------------------------------- ServiceL2Status

    def _status_kind_served(self) -> bool:
        try:
            self.store.resource_type(METALLB_GROUP, STATUS_KIND)
        except ApiError:
            return False
        return True

    def _statuses_of(self, key: str) -> list[Obj]:
        """The Service's ServiceL2Status objects in this speaker's view, with the one it wrote
        itself even when its view does not show it yet."""
        namespace, _, name = key.partition("/")
        found = [o for o in self.cache.list(METALLB_GROUP, STATUS_KIND, self.namespace)
                 if labels_of(o).get("metallb.io/service-name") == name
                 and labels_of(o).get("metallb.io/service-namespace") == namespace]
        mine = self._mine.get(key)
        if mine is not None and all(name_of(o) != mine for o in found):
            found.insert(0, {"metadata": {"name": mine, "labels": {"metallb.io/node": self.node}},
                             "status": {"node": self.node}})
        return found

    def _sync_status(self, key: str, result: SpeakerAnnouncement | None) -> None:
        """Layer2StatusReconciler: the announcing speaker creates (or takes over) the
        Service's object; one that stops deletes the object naming its node."""
        if not self.status_enabled or not self._status_kind_served():
            return
        existing = self._statuses_of(key)
        if result is None:
            self._mine.pop(key, None)
            for obj in existing:
                if (obj.get("status") or {}).get("node") == self.node or labels_of(obj).get(
                        "metallb.io/node") == self.node:
                    self._delete_status(name_of(obj))
            return
        namespace, _, name = key.partition("/")
        status: Obj = {"node": self.node, "serviceName": name, "serviceNamespace": namespace}
        interfaces = self.answering_interfaces(result)
        if interfaces:
            status["interfaces"] = [{"name": i} for i in interfaces]
        labels = {"metallb.io/node": self.node, "metallb.io/service-name": name,
                  "metallb.io/service-namespace": namespace}
        if existing:
            current = self.store.try_get(METALLB_GROUP, STATUS_KIND, name_of(existing[0]),
                                         self.namespace)
            if current is not None:
                self._mine[key] = name_of(current)
                if labels_of(current) != labels:
                    meta(current)["labels"] = labels
                    meta(current)["ownerReferences"] = owner_pod_reference(self.process.pod)
                    meta(current).pop("resourceVersion", None)
                    self.api("UPDATE", "servicel2statuses", name_of(current))
                    with contextlib.suppress(ApiError):
                        self.store.update(current, manager=self.manager)
                if current.get("status") != status:
                    self.write_status(METALLB_GROUP, STATUS_KIND, name_of(current),
                                      self.namespace, status)
                return
        body: Obj = {
            "apiVersion": f"{METALLB_GROUP}/v1beta1",
            "kind": STATUS_KIND,
            "metadata": {"generateName": "l2-", "namespace": self.namespace, "labels": labels},
        }
        owners = owner_pod_reference(self.process.pod)
        if owners:
            meta(body)["ownerReferences"] = owners
        self.api("CREATE", "servicel2statuses", key)
        try:
            created = self.store.create(body, manager=self.manager, keep_status=False)
        except ApiError as exc:
            self.record(key, "ServiceL2StatusFailed", exc.message)
            return
        self._mine[key] = name_of(created)
        self.write_status(METALLB_GROUP, STATUS_KIND, name_of(created), self.namespace, status)

    def _delete_status(self, name: str) -> None:
        self.api("DELETE", "servicel2statuses", name)
        with contextlib.suppress(ApiError):  # already gone
            self.store.delete(METALLB_GROUP, STATUS_KIND, name, self.namespace,
                              manager=self.manager)


class MetalLBSpeakers(Component):
    """MetalLB's speaker DaemonSet: one process per node it runs on, and the memberlist
    they form (a speaker is a member from its start to its exit)."""

    kind = METALLB_SPEAKER
    watched = (("", "Namespace"), ("", "Node"), ("", "Service"), ("", "Endpoints"),
               ("discovery.k8s.io", "EndpointSlice"), ("", "ConfigMap"), ("", "Secret"),
               (METALLB_GROUP, STATUS_KIND), (METALLB_GROUP, "ServiceBGPStatus"),
               *((METALLB_GROUP, k) for k in CONFIG_KINDS))

    def __init__(self, runtime: Runtime, *, namespace: str = DEFAULT_NAMESPACE,
                 lb_class: str | None = None, enabled: bool = True) -> None:
        super().__init__(runtime, enabled=enabled)
        self.namespace = namespace
        self.lb_class = lb_class
        self._members: frozenset[str] = frozenset()

    def make_model(self, process: Process) -> Model:
        return MetalLBSpeaker(process)

    def models(self) -> list[MetalLBSpeaker]:
        """The code of every running speaker."""
        return [p.model for p in self.running() if isinstance(p.model, MetalLBSpeaker)]

    def members(self) -> frozenset[str]:
        """The nodes whose speaker runs now (the memberlist; while the lab starts, every
        speaker of the snapshot, which were all running already)."""
        return frozenset(p.node for p in self.present() if p.node)

    def on_change(self) -> None:
        """A speaker joined or left: every other speaker hears of it after its own delay
        (memberlist NodeJoin / NodeLeave, then a resync of every Service)."""
        members = self.members()
        if members == self._members:
            return
        self._members = members
        self.enqueue(Event("MEMBERS", {"members": sorted(members)}, None))

    @property
    def stale_config(self) -> bool:
        """Whether a running speaker refuses a new config that would strand a Service [M8]."""
        return any(m.stale_config for m in self.models())

    @property
    def config_error(self) -> str:
        """Why a running speaker refused the current configuration ("" when none did)."""
        return next((m.config_error for m in self.models() if m.config_error), "")
