"""Model of a MetalLB speaker's BGP side (reference/metallb.md §4, §5), one per speaker.

Follows metallb ``speaker/bgp_controller.go``:

- ``SetConfig``: each BGPPeer of the configuration becomes a peer; one equal to a peer the
  speaker has (``reflect.DeepEqual`` of the parsed ``config.Peer``, node selectors included)
  keeps its session, any other one is new, and a peer no longer there (or changed) has its
  session closed ("peer deconfigured, closing BGP session");
- ``syncPeers`` (after a config change, and on a change of the speaker's own Node labels,
  ``SetNode``): a peer runs on this node when it has no node selector or one matches the
  Node's labels; a session that should not run is closed, a missing one is created;
- ``ShouldAnnounce`` / ``SetBalancer``: a Service is advertised from this node when its pool
  has BGPAdvertisements selecting this node (``nodeSelectors``, empty: every node) and the
  Service (``serviceSelectors``), the node is not ``NetworkUnavailable`` nor labelled
  ``node.kubernetes.io/exclude-from-external-load-balancers``, and it has a ready endpoint
  (``externalTrafficPolicy: Local``: on this node). Each advertisement makes one prefix per IP,
  masked to ``aggregationLength`` / ``aggregationLengthV6``, with its ``localPref`` and
  communities (Community aliases resolved), sent to the advertisement's ``peers`` (all when
  empty);
- ``ServiceBGPStatus`` (from v0.15.0, ``internal/k8s/controllers/bgp_status_controller.go``):
  one per Service this node advertises, listing the peers it is advertised to (the configured
  sessions, not their state); deleted when there are none.

How a session change reaches the wire depends on ``METALLB_BGP_TYPE``
(``internal/bgp/{native,frr,frrk8s}``): the native speaker dials or aborts at once
(``native.go`` ``Close``: the connection is aborted), so a peer that is closed and created
again in one ``SetConfig`` resets its session; the FRR modes render one FRR configuration
and apply it after a debounce (``frr/config.go`` ``debouncer``; 3 s by default), so a peer closed
and created again within it leaves FRR's neighbour, and its session, as they were. frr-k8s
(MetalLB writes an FRRConfiguration, frr-k8s renders it) is modelled like FRR.
"""

from __future__ import annotations

import contextlib
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from migrate.lab.models._common import (
    Obj,
    any_selector_matches,
    find_condition,
    ingress_ips,
    labels_of,
    meta,
    name_of,
    namespace_of,
    parse_go_duration,
    parse_ip,
    service_key,
    spec_of,
)
from migrate.lab.models.bgp import (
    DEFAULT_CONNECT_RETRY,
    DEFAULT_PORT,
    BGPRoute,
    SessionSpec,
    password_digest,
    secret_password,
)
from migrate.lab.models.metallb_config import METALLB_GROUP, MetalLBConfig, owner_pod_reference
from migrate.lab.runtime import Timer
from migrate.lab.store import ApiError
from migrate.lab.versions import at_least

if TYPE_CHECKING:
    from migrate.lab.models.metallb_speaker import MetalLBSpeaker

EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
BGP_STATUS_KIND = "ServiceBGPStatus"
FRR_HOLD, FRR_KEEPALIVE = 180.0, 60.0
"""FRR's default timers, which MetalLB's FRR modes leave in place when a peer sets none."""
NATIVE_HOLD = 90.0
FRR_MULTIHOP_TTL = 255
"""MetalLB writes ``neighbor X ebgp-multihop`` with no TTL: FRR's maximum."""


@dataclass(frozen=True)
class Peer:
    """A BGPPeer as the speaker parsed it (``config.Peer``): ``session`` is everything but the
    node selectors, i.e. what FRR's neighbour configuration holds."""

    name: str
    selectors: tuple[Obj, ...]
    session: SessionSpec
    selectors_text: str

    def runs_on(self, labels: dict[str, str]) -> bool:
        """syncPeers: no selector, or one matching the node's labels."""
        return any_selector_matches(list(self.selectors), labels)


@dataclass(frozen=True)
class Advert:
    """One ``bgp.Advertisement``: a prefix with its attributes, for some peers."""

    prefix: str
    local_pref: int
    communities: tuple[str, ...]
    peers: tuple[str, ...]
    service: str

    def matches_peer(self, peer: str) -> bool:
        """``Advertisement.MatchesPeer``: no peer list means every peer."""
        return not self.peers or peer in self.peers


def node_address(node: Obj | None) -> str | None:
    """A node's first InternalIP (the address its speakers peer from)."""
    for address in ((node or {}).get("status") or {}).get("addresses") or []:
        if isinstance(address, dict) and address.get("type") == "InternalIP":
            return str(address.get("address"))
    return None


class SpeakerBGP:
    """The BGP controller of one MetalLB speaker."""

    def __init__(self, speaker: MetalLBSpeaker) -> None:
        self.speaker = speaker
        self.node = speaker.node
        self.runtime = speaker.runtime
        self.fabric = speaker.runtime.bgp
        self.native = speaker.bgp_type == "native"
        self.status_enabled = at_least(speaker.version, 0, 15, 0)
        self.peers: dict[str, Peer] = {}
        self.sessions: set[str] = set()
        """Peers with a session (``peer.session != nil``)."""
        self.labels: dict[str, str] | None = None
        self.svc_ads: dict[str, list[Advert]] = {}
        self.active: dict[str, frozenset[str]] = {}
        """Service -> the peers it is advertised to (``activeAds``)."""
        self.running: dict[str, SessionSpec] = {}
        """FRR: the neighbours bgpd runs (native: the sessions dialled)."""
        self._reload: Timer | None = None
        self._statuses: dict[str, str] = {}
        """Service -> the name of the ServiceBGPStatus this speaker wrote."""

    # ----------------------------------------------------------------- config and node

    def set_config(self, config: MetalLBConfig) -> None:
        """SetConfig: keep the peers that did not change, close the others' sessions."""
        node = self.speaker.cache.get("", "Node", self.node)
        new: dict[str, Peer] = {}
        for obj in config.bgp_peers:
            peer = self._parse_peer(obj, config, node)
            if peer is not None:
                new[peer.name] = peer
        for name, old in list(self.peers.items()):
            if new.get(name) != old and name in self.sessions:
                self.sessions.discard(name)  # "peer deconfigured, closing BGP session"
                if self.native and name in self.running:
                    # native.go Close aborts the connection now; the new peer dials again.
                    self.fabric.close(self.running.pop(name).key, graceful=True)
        self.peers = new
        self.sync_peers()

    def set_node(self, node: Obj) -> None:
        """SetNode: only a change of this node's labels resyncs the peers."""
        labels = labels_of(node)
        if self.labels is not None and labels == self.labels:
            return
        self.labels = labels
        self.sync_peers()

    def sync_peers(self) -> None:
        """Open the sessions of the peers that run on this node, close the others."""
        if self.labels is None:
            node = self.speaker.cache.get("", "Node", self.node)
            self.labels = labels_of(node) if node is not None else {}
        for name, peer in sorted(self.peers.items()):
            should = peer.runs_on(self.labels)
            if name in self.sessions and not should:
                self.sessions.discard(name)
                self.speaker.record(name, "peerRemoved", "filteredByNodeSelector: peer"
                                    " deconfigured, closing BGP session")
            elif name not in self.sessions and should:
                self.sessions.add(name)
                self.speaker.record(name, "peerAdded", "peer configured, starting BGP session")
        self.sessions &= set(self.peers)
        self.update_ads()

    def _parse_peer(self, obj: Obj, config: MetalLBConfig, node: Obj | None) -> Peer | None:
        spec = spec_of(obj)
        address = str(spec.get("peerAddress") or "")
        if not address:
            return None  # an unnumbered (interface) peer: not modelled
        hold = parse_go_duration(spec.get("holdTime"), -1.0)
        keepalive = parse_go_duration(spec.get("keepaliveTime"), -1.0)
        if hold < 0 and keepalive < 0:
            hold, keepalive = (NATIVE_HOLD, NATIVE_HOLD / 3) if self.native else (
                FRR_HOLD, FRR_KEEPALIVE)
        elif hold < 0:
            hold = keepalive * 3
        elif keepalive < 0:
            keepalive = hold / 3
        password = spec.get("password") or None
        secret_ref: str | None = None
        ref = spec.get("passwordSecret") or {}
        if ref.get("name"):
            secret_ref = f"{ref.get('namespace') or namespace_of(obj)}/{ref['name']}"
            password = secret_password(config.secrets.get(str(ref["name"])))
        my_asn = int(spec.get("localASN") or spec.get("myASN") or 0)
        peer_asn = int(spec.get("peerASN") or 0)
        multihop = FRR_MULTIHOP_TTL if spec.get("ebgpMultiHop") and peer_asn != my_asn else None
        session = SessionSpec(
            node=self.node, stack="metallb", peer=name_of(obj), peer_address=address,
            local_asn=my_asn, peer_asn=peer_asn,
            peer_port=int(spec.get("peerPort") or DEFAULT_PORT),
            source_address=str(spec.get("sourceAddress") or "") or node_address(node),
            router_id=str(spec.get("routerID") or "") or None,
            password_secret=secret_ref, password_inline=bool(spec.get("password")),
            password=password_digest(password), ebgp_multihop=multihop,
            hold_time=hold, keepalive_time=keepalive,
            connect_retry=parse_go_duration(spec.get("connectTime"), DEFAULT_CONNECT_RETRY),
            graceful_restart=bool(spec.get("enableGracefulRestart")) and not self.native,
        )
        selectors = tuple(spec.get("nodeSelectors") or ())
        return Peer(name_of(obj), selectors, session, repr(selectors))

    # ----------------------------------------------------------------- services

    def should_announce(self, svc: Obj | None) -> list[Advert]:
        """ShouldAnnounce + SetBalancer for one Service: the advertisements this node makes
        (empty when it does not advertise it)."""
        speaker = self.speaker
        config = speaker.config
        if svc is None or config is None or not speaker._handles(svc):
            return []
        ips = [ip for ip in map(parse_ip, ingress_ips(svc)) if ip is not None]
        pool = config.pool_for(ips) if ips else None
        if pool is None:
            return []
        node = speaker.cache.get("", "Node", self.node)
        node_labels = labels_of(node) if node is not None else {}
        ads = [a for a in config.bgp_advertisements_for(pool.name)
               if any_selector_matches(spec_of(a).get("nodeSelectors") or [], node_labels)
               and any_selector_matches(spec_of(a).get("serviceSelectors") or [],
                                        labels_of(svc))]
        if not ads:
            return []  # notOwner / noMatchingAdvertisement
        conditions = ((node or {}).get("status") or {}).get("conditions") or []
        unavailable = find_condition(conditions, "NetworkUnavailable")
        if unavailable is not None and unavailable.get("status") == "True":
            return []
        if EXCLUDE_LB_LABEL in node_labels:
            return []
        ready = speaker._ready_endpoint_nodes(svc)
        if ready is not None:
            if spec_of(svc).get("externalTrafficPolicy") == "Local":
                if self.node not in ready[1]:
                    return []  # noLocalEndpoints
            elif not ready[0]:
                return []  # noEndpoints
        key = service_key(svc)
        out = []
        for ip in ips:
            for adv in ads:
                spec = spec_of(adv)
                length = int(spec.get("aggregationLength") or 32) if ip.version == 4 else int(
                    spec.get("aggregationLengthV6") or 128)
                network = ipaddress.ip_network(f"{ip}/{length}", strict=False)
                communities = []
                for text in spec.get("communities") or []:
                    value = config.communities.get(str(text), str(text))
                    communities.append(value)
                out.append(Advert(str(network), int(spec.get("localPref") or 0),
                                  tuple(sorted(set(communities))),
                                  tuple(str(p) for p in spec.get("peers") or ()), key))
        return out

    def service(self, key: str, svc: Obj | None) -> None:
        """A Service changed: advertise it as ShouldAnnounce says (or withdraw it)."""
        config = self.speaker.config
        if key not in self.svc_ads and (config is None or not config.bgp_advertisements):
            return  # no BGPAdvertisement: nothing to advertise, nothing advertised
        ads = self.should_announce(svc)
        if (self.svc_ads.get(key) or []) == ads:
            return
        if ads:
            self.svc_ads[key] = ads
        else:
            self.svc_ads.pop(key, None)
        self.update_ads()

    # ----------------------------------------------------------------- advertisements

    def _routes_for(self, peer: Peer) -> tuple[BGPRoute, ...]:
        by_prefix: dict[str, list[Advert]] = {}
        for ads in self.svc_ads.values():
            for ad in ads:
                if ad.matches_peer(peer.name):
                    by_prefix.setdefault(ad.prefix, []).append(ad)
        ibgp = peer.session.peer_asn == peer.session.local_asn
        routes = []
        for prefix, ads in sorted(by_prefix.items()):
            standard = sorted({c for a in ads for c in a.communities
                               if not c.startswith("large:")})
            large = sorted({c.split(":", 1)[1] for a in ads for c in a.communities
                            if c.startswith("large:")})
            local_pref = max((a.local_pref for a in ads), default=0)
            routes.append(BGPRoute(prefix, tuple(sorted({a.service for a in ads})),
                                   tuple(standard), tuple(large),
                                   local_pref if ibgp and local_pref else None))
        return tuple(routes)

    def update_ads(self) -> None:
        """publishAds, then notifyAdsChanged (the ServiceBGPStatus objects)."""
        desired = {name: self.peers[name] for name in sorted(self.sessions)}
        if self.native:
            self._apply(desired)
        elif self._reload is None:
            delay = self.runtime.timing.frr_reload.sample(self.speaker.process.rng)
            self._reload = self.speaker.process.later(delay, self._frr_reload,
                                                      label=f"frr reload {self.node}")
        self._notify(desired)

    def _frr_reload(self) -> None:
        """The debouncer fires: FRR applies the configuration as it is now."""
        self._reload = None
        self._apply({name: self.peers[name] for name in sorted(self.sessions)})

    def _apply(self, desired: dict[str, Peer]) -> None:
        """What bgpd (or the native speaker) runs becomes ``desired``."""
        wanted = {name: peer.session for name, peer in desired.items()}
        for name, spec in list(self.running.items()):
            if wanted.get(name) != spec:
                self.fabric.close(spec.key, graceful=True)
                del self.running[name]
        for name, spec in sorted(wanted.items()):
            if name not in self.running:
                self.fabric.open(spec)
                self.running[name] = spec
            self.fabric.advertise(spec.key, self._routes_for(desired[name]))

    def _notify(self, desired: dict[str, Peer]) -> None:
        prefix_services: dict[str, set[str]] = {}
        for key, ads in self.svc_ads.items():
            for ad in ads:
                prefix_services.setdefault(ad.prefix, set()).add(key)
        active: dict[str, set[str]] = {}
        for name in desired:
            for ads in self.svc_ads.values():
                for ad in ads:
                    if ad.matches_peer(name):
                        for key in prefix_services[ad.prefix]:
                            active.setdefault(key, set()).add(name)
        new = {key: frozenset(peers) for key, peers in active.items()}
        changed = {k for k in set(new) | set(self.active) if new.get(k) != self.active.get(k)}
        self.active = new
        for key in sorted(changed):
            self._sync_status(key, new.get(key, frozenset()))

    # ----------------------------------------------------------------- lifecycle

    def stop(self, *, graceful: bool) -> None:
        """The speaker exits: bgpd ends every session (a NOTIFICATION on SIGTERM; a killed
        process just drops the connections)."""
        if self._reload is not None:
            self._reload.cancel()
            self._reload = None
        for spec in self.running.values():
            self.fabric.close(spec.key, graceful=graceful)
        self.running = {}
        self.sessions = set()

    # ----------------------------------------------------------------- ServiceBGPStatus

    def _status_served(self) -> bool:
        try:
            self.speaker.store.resource_type(METALLB_GROUP, BGP_STATUS_KIND)
        except ApiError:
            return False
        return True

    def _sync_status(self, key: str, peers: frozenset[str]) -> None:
        """ServiceBGPStatusReconciler for one Service of this node."""
        if not self.status_enabled or not self._status_served():
            return
        speaker = self.speaker
        namespace, _, name = key.partition("/")
        store = speaker.store
        mine = [o for o in speaker.cache.list(METALLB_GROUP, BGP_STATUS_KIND, speaker.namespace)
                if labels_of(o).get("metallb.io/node") == self.node
                and labels_of(o).get("metallb.io/service-name") == name
                and labels_of(o).get("metallb.io/service-namespace") == namespace]
        names = {name_of(o) for o in mine}
        if key in self._statuses:
            names.add(self._statuses[key])
        if not peers:
            self._statuses.pop(key, None)
            for each in sorted(names):
                speaker.api("DELETE", "servicebgpstatuses", each)
                with contextlib.suppress(ApiError):
                    store.delete(METALLB_GROUP, BGP_STATUS_KIND, each, speaker.namespace,
                                 manager=speaker.manager)
            return
        status = {"node": self.node, "serviceName": name, "serviceNamespace": namespace,
                  "peers": sorted(peers)}
        labels = {"metallb.io/node": self.node, "metallb.io/service-name": name,
                  "metallb.io/service-namespace": namespace}
        current = None
        for each in sorted(names):
            current = store.try_get(METALLB_GROUP, BGP_STATUS_KIND, each, speaker.namespace)
            if current is not None:
                break
        if current is None:
            body: Obj = {"apiVersion": f"{METALLB_GROUP}/v1beta1", "kind": BGP_STATUS_KIND,
                         "metadata": {"generateName": "bgp-", "namespace": speaker.namespace,
                                      "labels": labels}}
            owners = owner_pod_reference(speaker.process.pod)
            if owners:
                meta(body)["ownerReferences"] = owners
            speaker.api("CREATE", "servicebgpstatuses", key)
            try:
                current = store.create(body, manager=speaker.manager, keep_status=False)
            except ApiError as exc:
                speaker.record(key, "ServiceBGPStatusFailed", exc.message)
                return
        self._statuses[key] = name_of(current)
        speaker.write_status(METALLB_GROUP, BGP_STATUS_KIND, name_of(current),
                             speaker.namespace, status)
