"""Model of Cilium's BGP control plane (reference/cilium.md §3): the operator's BGP resource
manager and each agent's BGP speaker.

Operator (``operator/pkg/bgpv2/cluster.go`` @344d90ba, in the leading operator process, with
``enable-bgp-control-plane``): for every CiliumBGPClusterConfig, a CiliumBGPNodeConfig named
after each **CiliumNode** its ``nodeSelector`` matches (nil: every node), owned by the
ClusterConfig (ownerReference with its UID, ``controller: true``), its instances and peers
copied from the ClusterConfig with the node's CiliumBGPNodeConfigOverride applied
(``toNodeBGPInstance``: routerID, localPort, localASN per instance, localAddress per peer). A
NodeConfig owned by another ClusterConfig is a conflict: the node is skipped and the
ClusterConfig gets ``cilium.io/ConflictingClusterConfig`` True. A NodeConfig owned by the
ClusterConfig whose node it no longer selects is deleted (``deleteNodeConfigs``); one whose
owner is gone goes with it (the garbage collector). Conditions ``cilium.io/NoMatchingNode``,
``cilium.io/MissingPeerConfigs`` and the conflict one are written when status reporting is on.

Agent (``pkg/bgpv1/manager``, per node, with ``enable-bgp-control-plane``): the node's own
CiliumBGPNodeConfig is its configuration. Each instance's peers become sessions
(``reconcilerv2/neighbor.go``) with their CiliumBGPPeerConfig: ``transport.peerPort`` (179),
``timers`` (hold 90, keepalive 30, connect-retry 120 s), ``authSecretRef`` (key ``password`` of a
Secret in ``bgp-secrets-namespace``; missing: no password), ``gracefulRestart``, ``ebgpMultihop``
(eBGP only), ``families`` (default ipv4 and ipv6 unicast, advertising nothing). A family's
``advertisements`` selector picks CiliumBGPAdvertisements by their labels; a ``Service`` entry
with ``LoadBalancerIP`` among its addresses and a ``selector`` (unset: nothing) advertises the
status IPs of the LoadBalancer Services it matches (their labels plus the
``io.kubernetes.service.name/namespace`` pseudo-labels, ``serviceLabelSet``) whose class is
unset or ``io.cilium/bgp-control-plane``; ``externalTrafficPolicy: Local`` ones only from a node
with a local, non-terminating endpoint (``reconcilerv2/service.go`` ``getLBSvcPaths``). A
``service.aggregationLengthIPv4/IPv6`` (1.18) aggregates, except for Local Services. Attributes:
communities (standard, well-known, large) and ``localPreference`` (iBGP only); from 1.18
overlapping advertisements have their communities unioned and the highest local preference kept,
before the last one wins. The agent reports its sessions in the NodeConfig's status
(``reconcilerv2/crd_status.go``: every 5 s, ``peeringState``, ``establishedTime``, ``timers``,
``routeCount`` advertised per family) unless ``enable-bgp-control-plane-status-report`` is false.

The agent also keeps its CiliumNode's labels equal to its Node's (``pkg/nodediscovery``
``mutateNodeResource``, cilium/cilium#18609): a label written on the Node reaches the CiliumNode,
and so the operator's node selection, one agent reaction later; a label written on the
CiliumNode alone is replaced at the next sync.
"""

from __future__ import annotations

import contextlib
import copy
import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from migrate.lab.models._common import (
    GroupKind,
    Model,
    Obj,
    Process,
    ingress_ips,
    labels_of,
    meta,
    name_of,
    namespace_of,
    selector_matches,
    service_key,
    set_condition,
    spec_of,
)
from migrate.lab.models.bgp import (
    DEFAULT_CONNECT_RETRY,
    DEFAULT_PORT,
    DEFAULT_RESTART_TIME,
    ESTABLISHED,
    BGPRoute,
    SessionSpec,
    password_digest,
    secret_password,
)
from migrate.lab.models.cilium_lbipam import BGP_CLASS, service_labels
from migrate.lab.models.metallb_bgp import node_address
from migrate.lab.runtime import Timer
from migrate.lab.store import ApiError
from migrate.lab.versions import below, version_in

if TYPE_CHECKING:
    from migrate.lab.models.cilium_l2 import CiliumL2Agent

GROUP = "cilium.io"
CLUSTER_CONFIG = "CiliumBGPClusterConfig"
PEER_CONFIG = "CiliumBGPPeerConfig"
ADVERTISEMENT = "CiliumBGPAdvertisement"
NODE_OVERRIDE = "CiliumBGPNodeConfigOverride"
NODE_CONFIG = "CiliumBGPNodeConfig"
BGP_KINDS: tuple[GroupKind, ...] = tuple((GROUP, k) for k in (
    CLUSTER_CONFIG, PEER_CONFIG, ADVERTISEMENT, NODE_OVERRIDE, NODE_CONFIG))
NO_MATCHING_NODE = "cilium.io/NoMatchingNode"
MISSING_PEER_CONFIGS = "cilium.io/MissingPeerConfigs"
CONFLICTING = "cilium.io/ConflictingClusterConfig"
OPERATOR_MANAGER = "cilium-operator-bgp"
AGENT_MANAGER = "cilium-agent"


def _flag(data: dict[str, str], key: str, default: bool) -> bool:
    return str(data.get(key, str(default))).strip().lower() == "true"


def cilium_config(cache: object, namespace: str) -> dict[str, str]:
    """``cilium-config`` data as a process's view holds it."""
    config = cache.get("", "ConfigMap", "cilium-config", namespace)  # type: ignore[attr-defined]
    return {str(k): str(v) for k, v in ((config or {}).get("data") or {}).items()}


# --------------------------------------------------------------------------- operator


class OperatorBGP(Model):
    """The BGP resource manager of the leading operator process."""

    name = "cilium-operator-bgp"
    manager = OPERATOR_MANAGER

    def __init__(self, process: Process, namespace: str) -> None:
        super().__init__(process)
        self.namespace = namespace
        data = cilium_config(self.cache, namespace)
        self.enabled = _flag(data, "enable-bgp-control-plane", False)
        self.status_report = _flag(data, "enable-bgp-control-plane-status-report", True)

    def start(self) -> None:
        """Leading starts: reconcile every ClusterConfig."""
        self.reconcile()

    def handle(self, event: object) -> None:
        """A BGP kind or a CiliumNode changed: reconcile (as the manager's trigger does)."""
        gk = event.group_kind  # type: ignore[attr-defined]
        if gk in BGP_KINDS or gk == (GROUP, "CiliumNode"):
            self.reconcile()

    def _node_config_version(self) -> str:
        return self.store.resource_type(GROUP, NODE_CONFIG).api_version()

    def reconcile(self) -> None:
        """reconcileBGPClusterConfigs, then the garbage collector's share."""
        if not self.enabled:
            return
        try:
            version = self._node_config_version()
        except ApiError:
            return  # the CRD is not installed
        configs = self.cache.list(GROUP, CLUSTER_CONFIG)
        for config in sorted(configs, key=lambda c: (
                str(meta(c).get("creationTimestamp") or ""), name_of(c))):
            self._reconcile_one(config, version)
        uids = {str(meta(c).get("uid") or "") for c in configs}
        for node_config in self.cache.list(GROUP, NODE_CONFIG):
            owners = [o for o in meta(node_config).get("ownerReferences") or []
                      if isinstance(o, dict) and o.get("kind") == CLUSTER_CONFIG]
            if owners and not any(str(o.get("uid")) in uids for o in owners):
                self._delete(name_of(node_config))

    def _reconcile_one(self, config: Obj, version: str) -> None:
        selector = spec_of(config).get("nodeSelector")
        uid = str(meta(config).get("uid") or "")
        matching: set[str] = set()
        conflicting: set[str] = set()
        for node in self.cache.list(GROUP, "CiliumNode"):
            if selector is not None and not selector_matches(selector, labels_of(node)):
                continue
            name = name_of(node)
            matching.add(name)
            old = self.cache.get(GROUP, NODE_CONFIG, name)
            if old is not None and not _owned_by(old, uid):
                owner = next((str(o.get("name")) for o in meta(old).get("ownerReferences") or []
                              if isinstance(o, dict) and o.get("kind") == CLUSTER_CONFIG), "")
                if owner:
                    conflicting.add(owner)
                continue
            override = self.cache.get(GROUP, NODE_OVERRIDE, name)
            wanted = {"bgpInstances": node_instances(config, override)}
            if old is None:
                body: Obj = {
                    "apiVersion": version, "kind": NODE_CONFIG,
                    "metadata": {"name": name, "ownerReferences": [{
                        "apiVersion": version, "kind": CLUSTER_CONFIG,
                        "name": name_of(config), "uid": uid, "controller": True}]},
                    "spec": wanted,
                }
                self.api("CREATE", "ciliumbgpnodeconfigs", name)
                try:
                    self.store.create(body, manager=self.manager, keep_status=False)
                except ApiError as exc:
                    self.record(name, "NodeConfigCreateFailed", exc.message)
            elif spec_of(old) != wanted:
                current = self.store.try_get(GROUP, NODE_CONFIG, name)
                if current is not None:
                    current["spec"] = wanted
                    meta(current).pop("resourceVersion", None)
                    self.api("UPDATE", "ciliumbgpnodeconfigs", name)
                    with contextlib.suppress(ApiError):
                        self.store.update(current, manager=self.manager)
        for node_config in self.cache.list(GROUP, NODE_CONFIG):
            if name_of(node_config) not in matching and _owned_by(node_config, uid):
                self._delete(name_of(node_config))
        if self.status_report:
            self._conditions(config, matching, conflicting)

    def _delete(self, name: str) -> None:
        self.api("DELETE", "ciliumbgpnodeconfigs", name)
        with contextlib.suppress(ApiError):  # already gone
            self.store.delete(GROUP, NODE_CONFIG, name, manager=self.manager)

    def _conditions(self, config: Obj, matching: set[str], conflicting: set[str]) -> None:
        missing = sorted({str((p.get("peerConfigRef") or {}).get("name"))
                          for i in spec_of(config).get("bgpInstances") or []
                          for p in i.get("peers") or []
                          if (p.get("peerConfigRef") or {}).get("name")
                          and self.cache.get(GROUP, PEER_CONFIG,
                                             str(p["peerConfigRef"]["name"])) is None})
        status = copy.deepcopy(config.get("status") or {})
        conditions = list(status.get("conditions") or [])
        now = self.store.clock.rfc3339()
        generation = int(meta(config).get("generation") or 1)
        for ctype, true, reason, message in (
            (NO_MATCHING_NODE, not matching, "NoMatchingNode",
             "No node matches spec.nodeSelector"),
            (MISSING_PEER_CONFIGS, bool(missing), "MissingPeerConfigs",
             f"Referenced CiliumBGPPeerConfig(s) are missing: {missing}" if missing else ""),
            (CONFLICTING, bool(conflicting), "ConflictingClusterConfigs",
             f"Selecting the same node(s) with ClusterConfig(s): {sorted(conflicting)}"
             if conflicting else ""),
        ):
            set_condition(conditions, {"type": ctype, "status": "True" if true else "False",
                                       "reason": reason, "message": message,
                                       "lastTransitionTime": now,
                                       "observedGeneration": generation})
        conditions.sort(key=lambda c: str(c.get("type")))
        status["conditions"] = conditions
        if status != (config.get("status") or {}):
            self.write_status(GROUP, CLUSTER_CONFIG, name_of(config), None, status)


@dataclass
class _Path:
    """One prefix being built from the advertisements that select a Service."""

    services: set[str] = field(default_factory=set)
    communities: set[str] = field(default_factory=set)
    large: set[str] = field(default_factory=set)
    local_pref: int | None = None


def _owned_by(obj: Obj, uid: str) -> bool:
    return any(isinstance(o, dict) and str(o.get("uid")) == uid
               for o in meta(obj).get("ownerReferences") or [])


def node_instances(config: Obj, override: Obj | None) -> list[Obj]:
    """toNodeBGPInstance: the ClusterConfig's instances with the node's override applied."""
    overrides = {str(i.get("name")): i for i in spec_of(override or {}).get("bgpInstances") or []}
    out = []
    for instance in spec_of(config).get("bgpInstances") or []:
        node_instance: Obj = {"name": instance.get("name")}
        for key in ("localASN", "localPort"):
            if instance.get(key) is not None:
                node_instance[key] = instance[key]
        change = overrides.get(str(instance.get("name"))) or {}
        for key in ("routerID", "localPort", "localASN"):
            if change.get(key) is not None:
                node_instance[key] = change[key]
        peer_overrides = {str(p.get("name")): p for p in change.get("peers") or []}
        peers = []
        for peer in instance.get("peers") or []:
            node_peer = {k: copy.deepcopy(peer[k]) for k in ("name", "peerAddress", "peerASN",
                                                             "peerConfigRef") if k in peer}
            local = (peer_overrides.get(str(peer.get("name"))) or {}).get("localAddress")
            if local:
                node_peer["localAddress"] = local
            peers.append(node_peer)
        if peers:
            node_instance["peers"] = peers
        out.append(node_instance)
    return out


# --------------------------------------------------------------------------- agent


AGENT_KINDS: tuple[GroupKind, ...] = (
    *BGP_KINDS, ("", "Secret"), ("discovery.k8s.io", "EndpointSlice"), ("", "Endpoints"))
"""What the agent's BGP side watches besides what its L2 announcer does."""


class AgentBGP:
    """The BGP control plane of one Cilium agent (lives in the agent's process)."""

    def __init__(self, agent: CiliumL2Agent) -> None:
        self.agent = agent
        self.node = agent.node
        self.runtime = agent.runtime
        self.fabric = agent.runtime.bgp
        self.enabled = False
        self.status_report = True
        self.secrets_namespace = "kube-system"
        source = agent.process.spec_source
        self.version = version_in([source], "cilium") if source else None
        self.specs: dict[tuple[str, str, str, str], SessionSpec] = {}
        self.routes: dict[tuple[str, str, str, str], tuple[BGPRoute, ...]] = {}
        self.families: dict[tuple[str, str, str, str], tuple[str, ...]] = {}
        self._status_timer: Timer | None = None
        self._written: Obj | None = None
        self._listener = self._mark

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """The agent starts: its flags, then its node's configuration."""
        data = cilium_config(self.agent.cache, self.agent.namespace)
        self.enabled = _flag(data, "enable-bgp-control-plane", False)
        self.status_report = _flag(data, "enable-bgp-control-plane-status-report", True)
        self.secrets_namespace = data.get("bgp-secrets-namespace") or "kube-system"
        if self.enabled:
            self.fabric.listeners.append(self._listener)
        self.reconcile()

    def stop(self, *, graceful: bool) -> None:
        """The agent exits: GoBGP stops (a NOTIFICATION on a graceful exit)."""
        with contextlib.suppress(ValueError):
            self.fabric.listeners.remove(self._listener)
        for key in list(self.specs):
            self.fabric.close(key, graceful=graceful)
        self.specs = {}
        self.routes = {}
        if self._status_timer is not None:
            self._status_timer.cancel()
            self._status_timer = None

    def handle(self, event: object) -> bool:
        """Handle what the BGP side watches; True when the event is not the L2 announcer's."""
        gk = event.group_kind  # type: ignore[attr-defined]
        obj = event.obj  # type: ignore[attr-defined]
        if gk == ("", "Node") and name_of(obj) == self.node:
            old = event.old  # type: ignore[attr-defined]
            if old is not None and labels_of(old) != labels_of(obj):
                self.sync_node_labels(obj)
        if not self.enabled:
            return gk in AGENT_KINDS  # the BGP control plane is off: nothing to reconcile
        if gk in AGENT_KINDS:
            if gk != (GROUP, NODE_CONFIG) or name_of(obj) == self.node:
                self.reconcile()
            return True
        if gk in (("", "Service"), ("", "Node"), ("cilium.io", "CiliumNode")):
            self.reconcile()
        return False

    def sync_node_labels(self, node: Obj) -> None:
        """mutateNodeResource: the CiliumNode's labels become the Node's."""
        agent = self.agent
        current = agent.store.try_get(GROUP, "CiliumNode", self.node)
        if current is None or labels_of(current) == labels_of(node):
            return
        meta(current)["labels"] = dict(labels_of(node))
        meta(current).pop("resourceVersion", None)
        agent.api("UPDATE", "ciliumnodes", self.node)
        with contextlib.suppress(ApiError):
            agent.store.update(current, manager=AGENT_MANAGER)

    # ----------------------------------------------------------------- reconcile

    def reconcile(self) -> None:
        """Sessions and routes follow the node's CiliumBGPNodeConfig."""
        wanted: dict[tuple[str, str, str, str], SessionSpec] = {}
        routes: dict[tuple[str, str, str, str], tuple[BGPRoute, ...]] = {}
        families_of: dict[tuple[str, str, str, str], tuple[str, ...]] = {}
        cache = self.agent.cache
        node_config = cache.get(GROUP, NODE_CONFIG, self.node) if self.enabled else None
        node = cache.get("", "Node", self.node)
        for instance in spec_of(node_config or {}).get("bgpInstances") or []:
            for peer in instance.get("peers") or []:
                spec, families = self._session(instance, peer, node)
                if spec is None:
                    continue
                wanted[spec.key] = spec
                routes[spec.key] = self._routes(spec, families)
                families_of[spec.key] = tuple(dict.fromkeys(
                    str(f.get("afi")) for f in families if f.get("afi")))
        for key in list(self.specs):
            if wanted.get(key) != self.specs[key]:
                self.fabric.close(key, graceful=True)
                del self.specs[key]
        for key, spec in sorted(wanted.items()):
            if key not in self.specs:
                self.fabric.open(spec)
                self.specs[key] = spec
            self.fabric.advertise(key, routes[key])
        self.routes = routes
        self.families = families_of
        self._mark()

    def _session(self, instance: Obj, peer: Obj, node: Obj | None) -> tuple[
            SessionSpec | None, list[Obj]]:
        address = str(peer.get("peerAddress") or "")
        local_asn = int(instance.get("localASN") or 0)
        if not address or not local_asn:
            return None, []
        ref = str((peer.get("peerConfigRef") or {}).get("name") or "")
        config = spec_of(self.agent.cache.get(GROUP, PEER_CONFIG, ref) or {}) if ref else {}
        timers = config.get("timers") or {}
        secret_name = str(config.get("authSecretRef") or "")
        password = None
        if secret_name:
            password = secret_password(self.agent.cache.get(
                "", "Secret", secret_name, self.secrets_namespace))
        peer_asn = int(peer.get("peerASN") or 0)
        multihop = int(config.get("ebgpMultihop") or 1)
        restart = config.get("gracefulRestart") or {}
        families = config.get("families") or [{"afi": "ipv4", "safi": "unicast"},
                                              {"afi": "ipv6", "safi": "unicast"}]
        spec = SessionSpec(
            node=self.node, stack="cilium", peer=str(peer.get("name") or address),
            peer_address=address, local_asn=local_asn, peer_asn=peer_asn,
            peer_port=int((config.get("transport") or {}).get("peerPort") or DEFAULT_PORT),
            source_address=str(peer.get("localAddress") or "") or node_address(node),
            router_id=str(instance.get("routerID") or "") or node_address(node),
            password_secret=f"{self.secrets_namespace}/{secret_name}" if secret_name else None,
            password=password_digest(password),
            ebgp_multihop=multihop if multihop > 1 and peer_asn != local_asn else None,
            hold_time=float(timers.get("holdTimeSeconds") or 90),
            keepalive_time=float(timers.get("keepAliveTimeSeconds") or 30),
            connect_retry=float(timers.get("connectRetryTimeSeconds") or DEFAULT_CONNECT_RETRY),
            graceful_restart=bool(restart.get("enabled")),
            restart_time=float(restart.get("restartTimeSeconds") or DEFAULT_RESTART_TIME),
            instance=str(instance.get("name") or ""),
        )
        return spec, [f for f in families if isinstance(f, dict)]

    def _routes(self, spec: SessionSpec, families: list[Obj]) -> tuple[BGPRoute, ...]:
        """The Service routes one session advertises (service.go, per family)."""
        cache = self.agent.cache
        merged: dict[str, _Path] = {}
        ibgp = spec.peer_asn == spec.local_asn
        merges = not below(self.version, 1, 18)
        for family in families:
            afi = str(family.get("afi") or "")
            chooser = family.get("advertisements")
            if not isinstance(chooser, dict):
                continue  # unset: nothing advertised for this family
            adverts = [a for a in cache.list(GROUP, ADVERTISEMENT)
                       if selector_matches(chooser, labels_of(a))]
            for advert in adverts:
                for entry in spec_of(advert).get("advertisements") or []:
                    if entry.get("advertisementType") != "Service":
                        continue
                    service = entry.get("service") or {}
                    selector = entry.get("selector")
                    if "LoadBalancerIP" not in (service.get("addresses") or []) or not \
                            isinstance(selector, dict):
                        continue
                    for svc in cache.list("", "Service"):
                        self._service_routes(svc, afi, service, selector, entry, merged, merges)
        return tuple(
            BGPRoute(prefix, tuple(sorted(path.services)), tuple(sorted(path.communities)),
                     tuple(sorted(path.large)),
                     path.local_pref if ibgp and path.local_pref is not None else None)
            for prefix, path in sorted(merged.items()))

    def _service_routes(self, svc: Obj, afi: str, service: Obj, selector: Obj, entry: Obj,
                        merged: dict[str, _Path], merges: bool) -> None:
        spec = spec_of(svc)
        if spec.get("type") != "LoadBalancer":
            return
        if spec.get("loadBalancerClass") not in (None, BGP_CLASS):
            return
        if not selector_matches(selector, service_labels(svc)):
            return
        local = spec.get("externalTrafficPolicy") == "Local"
        if local and not self._has_local_endpoint(svc):
            return
        attributes = entry.get("attributes") or {}
        communities = attributes.get("communities") or {}
        standard = {str(c) for c in communities.get("standard") or []} | {
            str(c) for c in communities.get("wellKnown") or []}
        large = {str(c) for c in communities.get("large") or []}
        local_pref = attributes.get("localPreference")
        for text in ingress_ips(svc):
            try:
                ip = ipaddress.ip_address(text)
            except ValueError:
                continue
            if (afi == "ipv4") != (ip.version == 4):
                continue
            length: int = ip.max_prefixlen
            key = "aggregationLengthIPv4" if ip.version == 4 else "aggregationLengthIPv6"
            if service.get(key) is not None and not local:
                length = int(service[key])
            prefix = str(ipaddress.ip_network(f"{ip}/{length}", strict=False))
            path = merged.get(prefix)
            if path is None or not merges:
                # Before 1.18 the last matching advertisement's attributes are the path's.
                path = merged[prefix] = _Path(set(path.services) if path else set())
            path.services.add(service_key(svc))
            path.communities |= standard
            path.large |= large
            if local_pref is not None:
                path.local_pref = max(int(local_pref), path.local_pref or 0)

    def _has_local_endpoint(self, svc: Obj) -> bool:
        """populateLocalServices: a non-terminating backend on this node (no endpoint object
        in the view: the lab treats the Service as served everywhere, as the speakers do)."""
        cache = self.agent.cache
        slices = cache.endpoint_slices(namespace_of(svc), name_of(svc))
        if slices:
            return any(e.get("nodeName") == self.node
                       and not (e.get("conditions") or {}).get("terminating")
                       for eps in slices for e in eps.get("endpoints") or [])
        endpoints = cache.get("", "Endpoints", name_of(svc), namespace_of(svc))
        if endpoints is not None:
            return any(a.get("nodeName") == self.node for subset in endpoints.get("subsets") or []
                       for a in subset.get("addresses") or [])
        return True

    # ----------------------------------------------------------------- status

    def _mark(self) -> None:
        """Something changed: write the status at the next report (crd_status.go)."""
        if not self.enabled or not self.status_report or self._status_timer is not None:
            return
        delay = self.runtime.timing.bgp_status.sample(self.agent.process.rng)
        self._status_timer = self.agent.process.later(delay, self._report,
                                                      label=f"bgp status {self.node}")

    def _report(self) -> None:
        self._status_timer = None
        node_config = self.agent.cache.get(GROUP, NODE_CONFIG, self.node)
        if node_config is None:
            self._written = None
            return
        status = self.status()
        if status in ((node_config.get("status") or {}), self._written):
            return
        self.agent.write_status(GROUP, NODE_CONFIG, self.node, None, status)
        self._written = status

    def status(self) -> Obj:
        """CiliumBGPNodeStatus as the agent would write it now."""
        instances: dict[str, Obj] = {}
        node_config = self.agent.cache.get(GROUP, NODE_CONFIG, self.node)
        for instance in spec_of(node_config or {}).get("bgpInstances") or []:
            entry: Obj = {"name": instance.get("name")}
            if instance.get("localASN") is not None:
                entry["localASN"] = instance["localASN"]
            peers = []
            for peer in instance.get("peers") or []:
                key = (self.node, "cilium", str(instance.get("name") or ""),
                       str(peer.get("name") or peer.get("peerAddress")))
                spec = self.specs.get(key)
                state = self.fabric.state_of(key) if spec is not None else None
                peer_status: Obj = {"name": peer.get("name"),
                                    "peerAddress": peer.get("peerAddress")}
                if peer.get("peerASN") is not None:
                    peer_status["peerASN"] = peer["peerASN"]
                if state is not None:
                    peer_status["peeringState"] = state
                if spec is not None and state == ESTABLISHED:
                    since = self.fabric.since_of(key)
                    if since is not None:
                        peer_status["establishedTime"] = self.agent.store.clock.rfc3339(since)
                    peer_status["timers"] = {"appliedHoldTimeSeconds": int(spec.hold_time),
                                             "appliedKeepaliveSeconds": int(spec.keepalive_time)}
                    counts: dict[str, int] = {}
                    for route in self.routes.get(key, ()):
                        counts[route.family] = counts.get(route.family, 0) + 1
                    peer_status["routeCount"] = [
                        {"afi": afi, "safi": "unicast", "advertised": counts.get(afi, 0),
                         "received": 0} for afi in self.families.get(key, ())]
                peers.append(peer_status)
            if peers:
                entry["peers"] = peers
            instances[str(instance.get("name"))] = entry
        return {"bgpInstances": [instances[n] for n in sorted(instances)]} if instances else {}

