"""MetalLB BGP -> Cilium's BGP control plane (BGPv2 kinds), pure and deterministic [M4][C3].

What it writes, per MetalLB object:

- each BGPPeer -> a CiliumBGPPeerConfig (transport, timers, password Secret reference,
  graceful restart, multihop, address families whose ``advertisements`` selector names the
  CiliumBGPAdvertisements this peer receives) and a peer entry of a ClusterConfig instance;
- each BGPAdvertisement -> a CiliumBGPAdvertisement labelled with its name, whose entries
  select the Services of its pools by the tool's pool label (attributes: communities with
  aliases resolved, local preference, aggregation from Cilium 1.18);
- the node selectors of peers and advertisements -> one CiliumBGPClusterConfig per set of
  nodes they tell apart (``bgp_nodes.partition``): Cilium gives a node one ClusterConfig; a
  peer whose advertisements differ between node sets gets one PeerConfig per variant;
- routerID and sourceAddress -> a CiliumBGPNodeConfigOverride per node (Nodes in the input).

Every ClusterConfig also requires the hand-over label (``mappings/bgp.yaml``) on the node, so
applying the objects peers from no node until one is labelled: a router keeps one session per
neighbour address, and MetalLB's speaker and Cilium cannot both peer from one node. The
``BGPTranslation`` record says, for the hand-over, which nodes peer with which routers through
which ClusterConfig, which Services each node set advertises, and which are
``externalTrafficPolicy: Local``. A password never appears anywhere: only the Secret it lives in.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from migrate.model import bgp as views
from migrate.model import metallb as mlb
from migrate.model.findings import Finding, Severity
from migrate.model.kube import Node
from migrate.model.selectors import SelectorError, combine, matches
from migrate.sources.snapshot import ClusterSnapshot
from migrate.translate.bgp_nodes import (
    NodeSet,
    Term,
    conjoin,
    merge,
    partition,
    selector_of,
    term_matches,
    term_of,
)
from migrate.translate.mappings import CiliumVersion, load_table, pool_label
from migrate.translate.translator import (
    EXCLUDE_LB_LABEL,
    MANAGED_BY,
    SOURCE_ANNOTATION,
    ServicePin,
    selection_labels,
)

ALL_SERVICES = {"matchExpressions": [{"key": "io.kubernetes.service.name",
                                      "operator": "Exists"}]}
"""Every Service: Cilium reads an unset advertisement selector as none, and its BGP service
reconciler adds the ``io.kubernetes.service.name`` pseudo-label to every Service's labels
before matching (serviceLabelSet; bgp-control-plane-v2.rst)."""
MAX_INSTANCES = 16  # CiliumBGPClusterConfig spec.bgpInstances maxItems
_FIELD = "<the note's field>"


@dataclass(frozen=True)
class BGPVersion:
    """What one Cilium minor serves for the BGPv2 kinds (``mappings/bgp.yaml``)."""

    minor: str
    api_version: str | None
    """None before 1.16: no BGPv2 API the translation writes."""
    service_aggregation: bool
    merges_overlapping: bool


def bgp_version(cilium: CiliumVersion) -> BGPVersion:
    """The BGP row of a Cilium version (api_version None below the table's minimum).

    Every minor the translation knows (``mappings/cilium-versions.yaml``) must have a row: a
    test checks the two tables agree."""
    table = load_table("bgp")
    row = table["versions"].get(cilium.minor)
    if row is None:
        return BGPVersion(cilium.minor, None, False, False)
    return BGPVersion(cilium.minor, str(row["api_version"]), bool(row["service_aggregation"]),
                      bool(row["merges_overlapping"]))


def bgp_note(kind: str, field_path: str) -> tuple[Severity, str]:
    """Severity and message template of a BGP field without an exact Cilium equivalent."""
    entry = load_table("bgp")[kind][field_path]
    return Severity(entry.get("severity", "WARNING")), " ".join(str(entry["message"]).split())


def label_value(name: str) -> str:
    """An object name as a label value (63 characters at most; longer ones hashed)."""
    if len(name) <= 63:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[:54].rstrip('-.')}-{digest}"


def _json(record: Any) -> Any:
    """A record as JSON: its fields in camelCase, as Kubernetes writes them (values as-is)."""
    if not dataclasses.is_dataclass(record) or isinstance(record, type):
        return record
    return {
        "".join(w.capitalize() if i else w for i, w in enumerate(f.name.split("_"))):
            _json(getattr(record, f.name))
        for f in dataclasses.fields(record)
    }


@dataclass(frozen=True)
class BGPSecret:
    """The Secret a peer's password must be in for Cilium (key ``password``)."""

    peer: str
    namespace: str
    name: str
    copy_from: str | None
    """MetalLB's Secret (``namespace/name``) to copy; None for a plain-text password."""


@dataclass(frozen=True)
class BGPNodeSet:
    """One CiliumBGPClusterConfig: the nodes it selects and what they do."""

    cluster_config: str
    node_selector: dict[str, Any]
    """MetalLB's node selection, without the hand-over label (the ClusterConfig has both)."""
    peers: tuple[str, ...]
    """MetalLB BGPPeer names these nodes peer with."""
    peer_configs: dict[str, str]
    """Peer -> the CiliumBGPPeerConfig its session uses on these nodes."""
    advertisements: dict[str, tuple[str, ...]]
    """Peer -> the CiliumBGPAdvertisements sent to it from these nodes."""
    nodes: tuple[str, ...] | None
    """Input Nodes in this set (None when the input has no Node)."""


@dataclass(frozen=True)
class BGPPeerPlan:
    """One translated BGPPeer."""

    peer: str
    address: str
    peer_asn: int
    local_asn: int
    instance: str
    peer_configs: tuple[str, ...]
    graceful_restart: bool
    secret: BGPSecret | None
    nodes: tuple[str, ...] | None
    """Input Nodes that peer with it (None when the input has no Node)."""


@dataclass(frozen=True)
class BGPService:
    """A pinned Service advertised over BGP."""

    key: str
    pool: str
    ips: tuple[str, ...]
    external_traffic_policy: str
    """``Local``: advertised only from nodes with a ready local endpoint, by MetalLB and
    Cilium alike; the hand-over must keep one such node advertising at every moment."""
    advertisements: tuple[str, ...]
    peers: tuple[str, ...]
    nodes: tuple[str, ...] | None
    """Input Nodes that advertise it (for Local ones: those of them with a local endpoint)."""


@dataclass
class BGPTranslation:
    """The Cilium BGP objects, and what the node-by-node hand-over needs to know."""

    api_version: str
    handover_label: str
    handover_value: str
    advertisements: list[dict[str, Any]] = field(default_factory=list)
    peer_configs: list[dict[str, Any]] = field(default_factory=list)
    node_overrides: list[dict[str, Any]] = field(default_factory=list)
    cluster_configs: list[dict[str, Any]] = field(default_factory=list)
    node_sets: list[BGPNodeSet] = field(default_factory=list)
    peers: list[BGPPeerPlan] = field(default_factory=list)
    pools: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Pool -> the CiliumBGPAdvertisements that advertise its Services."""
    services: list[BGPService] = field(default_factory=list)
    secrets: list[BGPSecret] = field(default_factory=list)

    def objects(self) -> list[dict[str, Any]]:
        """Every Cilium BGP object, in the order to apply them (ClusterConfigs last)."""
        return [*self.advertisements, *self.peer_configs, *self.node_overrides,
                *self.cluster_configs]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of what the hand-over needs (the objects themselves aside)."""
        return {
            "apiVersion": self.api_version,
            "handoverLabel": {self.handover_label: self.handover_value},
            "nodeSets": [_json(s) for s in self.node_sets],
            "peers": [_json(p) for p in self.peers],
            "pools": {pool: list(names) for pool, names in self.pools.items()},
            "services": [_json(s) for s in self.services],
            "secrets": [_json(s) for s in self.secrets],
        }

    def node_set_of(self, labels: Mapping[str, str]) -> BGPNodeSet | None:
        """The node set (ClusterConfig) a node with these CiliumNode labels falls in once it
        carries the hand-over label; None when no ClusterConfig selects it."""
        labelled = {**labels, self.handover_label: self.handover_value}
        for node_set, config in zip(self.node_sets, self.cluster_configs, strict=True):
            if matches(config["spec"].get("nodeSelector"), labelled):
                return node_set
        return None


@dataclass
class _Peer:
    view: views.PeerView
    terms: list[Term]
    """Node selector terms (empty: every node)."""
    universal: bool
    indices: set[int] = field(default_factory=set)
    base: dict[str, Any] = field(default_factory=dict)
    """The PeerConfig spec without families."""
    secret: BGPSecret | None = None


@dataclass
class _Advert:
    view: views.AdvertisementView
    pools: list[str]
    peers: set[str] | None
    """Peers it goes to (None: every peer)."""
    entries: list[dict[str, Any]]
    terms: list[Term]
    universal: bool
    value: str
    """Its label value."""
    indices: set[int] = field(default_factory=set)


_Laid = tuple[Term, list[_Peer], dict[str, tuple[str, ...]]]
"""A node set being laid out: its term, the peers its nodes peer with, and per peer the
advertisements they send it."""


def _plaintext_secret(view: views.PeerView) -> str:
    """The Secret a plain-text password must go into for Cilium (the user creates it)."""
    return f"bgp-password-{view.name}"[:253]


class _BGPTranslator:
    def __init__(self, snapshot: ClusterSnapshot, version: CiliumVersion,
                 selected_pools: Callable[[mlb.BGPAdvertisement], list[str]],
                 pool_selector: Callable[[list[str]], dict[str, Any]],
                 pins: Sequence[ServicePin]) -> None:
        self.snapshot = snapshot
        self.cilium = version
        self.version = bgp_version(version)
        self.selected_pools = selected_pools
        self.pool_selector = pool_selector
        self.pins = pins
        self.findings: list[Finding] = []
        table = load_table("bgp")
        self.labels = table["labels"]
        self.defaults = table["defaults"]
        self.services = {s.key: s for s in snapshot.services}

    def finding(self, severity: Severity, code: str, obj: object, field_path: str | None,
                message: str, origin: str | None = None) -> None:
        self.findings.append(Finding(severity, code, str(obj), field_path, message, origin))

    def noted(self, kind: str, field_path: str, obj: object, origin: str | None,
              where: str | None = _FIELD, **values: Any) -> None:
        """A finding from the notes of mappings/bgp.yaml; ``where`` defaults to the field."""
        severity, template = bgp_note(kind, field_path)
        if where == _FIELD:
            where = field_path.split("=")[0] if field_path.startswith("spec.") else None
        self.finding(severity, f"no-equivalent:{kind}.{field_path}", obj, where,
                     template.format(**values), origin)

    # -- entry point -----------------------------------------------------------------------
    def run(self) -> BGPTranslation | None:
        if not self.snapshot.bgp_peers and not self.snapshot.bgp_advertisements:
            return None
        self.report_unsupported_config()
        if self.version.api_version is None:
            first = (self.snapshot.bgp_peers[0].ref if self.snapshot.bgp_peers
                     else self.snapshot.bgp_advertisements[0].ref)
            self.finding(
                Severity.ERROR, "bgp-cilium-too-old", first, None,
                f"Cilium {self.cilium.minor} has no BGP API the translation can write: its"
                " BGP control plane is configured with CiliumBGPPeeringPolicy, and the"
                " CiliumBGPClusterConfig, CiliumBGPPeerConfig and CiliumBGPAdvertisement kinds"
                f" are supported from {load_table('bgp')['minimum']}. Upgrade Cilium to 1.16"
                " (cilium.io/v2alpha1) or 1.18 (cilium.io/v2) before moving BGP to it.",
                first.origin)
            return None
        out = BGPTranslation(api_version=self.version.api_version,
                             handover_label=str(self.labels["handover"]),
                             handover_value=str(self.labels["handover_value"]))
        peers = self.translate_peers(out)
        adverts = self.translate_advertisements(out, peers)
        self.lay_out_nodes(out, peers, adverts)
        self.describe_services(out, adverts)
        self.check_overlaps(peers, adverts)
        self.report_handover(out)
        return out

    # -- objects of the BGP configuration that cannot be carried over ----------------------
    def report_unsupported_config(self) -> None:
        for body in self.snapshot.find("v1", "ConfigMap"):
            metadata = body.get("metadata") or {}
            if metadata.get("name") == "bgpextras" and (
                metadata.get("namespace") in (None, self.snapshot.metallb_namespace)
            ):
                self.noted("ConfigMap", "bgpextras",
                           f"ConfigMap {self.snapshot.metallb_namespace}/bgpextras", None,
                           where="data.extras")
        for body in self.snapshot.find("frrk8s.metallb.io/", "FRRConfiguration"):
            metadata = body.get("metadata") or {}
            name = str(metadata.get("name") or "")
            if name.startswith("metallb-"):
                continue  # written by MetalLB's speaker from its own objects (frrk8s.ConfigName)
            selector = (body.get("spec") or {}).get("nodeSelector") or {}
            nodes = [n.name for n in self.snapshot.nodes if matches(selector, n.labels)]
            where = ", ".join(sorted(nodes)) if nodes else (
                "every node" if not selector else "the nodes it selects")
            self.noted("FRRConfiguration", "*",
                       f"FRRConfiguration {metadata.get('namespace')}/{name}", None, nodes=where)

    # -- peers -----------------------------------------------------------------------------
    def translate_peers(self, out: BGPTranslation) -> list[_Peer]:
        peers: list[_Peer] = []
        bfd = {p.ref.name: views.bfd_view(p) for p in self.snapshot.bfd_profiles}
        used_bfd: set[str] = set()
        secrets_namespace = self.secrets_namespace()
        for raw in sorted(self.snapshot.bgp_peers, key=lambda p: p.ref.name):
            view = views.peer_view(raw)
            ref, origin = view.ref, view.ref.origin
            for name in view.pruned:
                self.noted("BGPPeer", "v1beta2-only", ref, origin, where=f"spec.{name}",
                           value=name)
            if view.bfd_profile:
                used_bfd.add(view.bfd_profile)
                self.report_bfd(view, bfd.get(view.bfd_profile))
            if view.vrf:
                self.noted("BGPPeer", "spec.vrf", ref, origin, value=view.vrf,
                           address=view.address or view.interface)
                continue
            if view.interface:
                self.noted("BGPPeer", "spec.interface", ref, origin, value=view.interface)
                continue
            if view.disable_mp:
                self.noted("BGPPeer", "spec.disableMP", ref, origin)
            if view.local_asn:
                self.noted("BGPPeer", "spec.localASN", ref, origin, value=view.local_asn)
            if view.dynamic_asn:
                self.noted("BGPPeer", "spec.dynamicASN", ref, origin, value=view.dynamic_asn,
                           other="external" if view.dynamic_asn == "internal" else "internal")
            terms = [t for t in (term_of(s) for s in view.node_selectors) if t is not None]
            peer = _Peer(view, terms, universal=not view.node_selectors)
            if view.node_selectors and not terms:
                self.finding(Severity.INFO, "bgp-peer-no-nodes", ref, "spec.nodeSelectors",
                             "its node selectors can never match a node: MetalLB peers with it"
                             " from no node, and so does the translation.", origin)
            peer.base = self.peer_config_base(view)
            peer.secret = self.secret_of(view, secrets_namespace)
            if peer.secret is not None:
                out.secrets.append(peer.secret)
            peers.append(peer)
        for profile in sorted(bfd.values(), key=lambda p: p.ref.name):
            if profile.ref.name not in used_bfd:
                self.noted("BFDProfile", "*", profile.ref, profile.ref.origin)
        return peers

    def report_bfd(self, view: views.PeerView, profile: views.BFDView | None) -> None:
        hold = int(view.hold_time) if view.hold_time else 90
        name = view.bfd_profile if profile else f"{view.bfd_profile} (not in the input; FRR's"\
            " defaults assumed)"
        interval = profile.receive_interval if profile else 300
        multiplier = profile.detect_multiplier if profile else 3
        self.noted("BGPPeer", "spec.bfdProfile", view.ref, view.ref.origin, profile=name,
                   detection=interval * multiplier, multiplier=multiplier, interval=interval,
                   hold=hold)

    def secrets_namespace(self) -> str:
        for body in self.snapshot.find("v1", "ConfigMap"):
            metadata = body.get("metadata") or {}
            if metadata.get("name") == "cilium-config":
                value = (body.get("data") or {}).get("bgp-secrets-namespace")
                if value:
                    return str(value)
        return str(self.defaults["secrets_namespace"])

    def secret_of(self, view: views.PeerView, namespace: str) -> BGPSecret | None:
        ref, origin = view.ref, view.ref.origin
        if view.password_secret is not None:
            source_ns = view.password_secret.namespace or self.snapshot.metallb_namespace
            name = view.password_secret.name
            secret = BGPSecret(view.name, namespace, name, f"{source_ns}/{name}")
            if source_ns == namespace:
                self.finding(
                    Severity.INFO, "bgp-password-secret", ref, "spec.passwordSecret",
                    f"reads its TCP MD5 password from Secret {source_ns}/{name}, which is in"
                    f" Cilium's bgp-secrets-namespace ({namespace}): its CiliumBGPPeerConfig"
                    " refers to it (authSecretRef), and Cilium reads its key password.", origin)
                return secret
            self.finding(
                Severity.WARNING, "bgp-password-secret", ref, "spec.passwordSecret",
                f"reads its TCP MD5 password from Secret {source_ns}/{name}; Cilium reads"
                f" Secrets from its bgp-secrets-namespace only ({namespace}), key password."
                f" Copy it there before any node peers through Cilium: kubectl -n {source_ns}"
                f" get secret {name} -o jsonpath='{{.data.password}}' | base64 -d | kubectl -n"
                f" {namespace} create secret generic {name} --from-file=password=/dev/stdin."
                " Without it Cilium peers with an empty password and the router refuses the"
                " session.", origin)
            return secret
        if view.has_password:
            name = _plaintext_secret(view)
            self.finding(
                Severity.WARNING, "bgp-password-plaintext", ref, "spec.password",
                "has its TCP MD5 password in plain text; Cilium reads a password only from a"
                f" Secret: its CiliumBGPPeerConfig refers to Secret {namespace}/{name} (key"
                " password), which you create with the password, e.g. kubectl -n"
                f" {namespace} create secret generic {name} --from-file=password=FILE (FILE"
                " holding the password), before any node peers through Cilium. The"
                " translation never writes the password anywhere.", origin)
            return BGPSecret(view.name, namespace, name, None)
        return None

    def peer_config_base(self, view: views.PeerView) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if view.port and view.port != 179:
            spec["transport"] = {"peerPort": view.port}
        timers: dict[str, int] = {}
        if view.connect_time is not None:
            timers["connectRetryTimeSeconds"] = int(view.connect_time)
        if view.hold_time is not None:
            hold = int(view.hold_time)
            if hold == 0:
                self.noted("BGPPeer", "spec.holdTime=0", view.ref, view.ref.origin)
            else:
                hold = min(hold, 65535)
                keepalive = int(view.keepalive_time or 0) or max(1, hold // 3)
                timers["holdTimeSeconds"] = hold
                timers["keepAliveTimeSeconds"] = min(keepalive, hold)
        if timers:
            spec["timers"] = timers
        if view.password_secret is not None:
            spec["authSecretRef"] = view.password_secret.name
        elif view.has_password:
            spec["authSecretRef"] = _plaintext_secret(view)
        if view.graceful_restart:
            spec["gracefulRestart"] = {
                "enabled": True,
                "restartTimeSeconds": int(self.defaults["restart_time_seconds"]),
            }
        if view.ebgp_multihop and not view.is_ibgp:
            spec["ebgpMultihop"] = int(self.defaults["ebgp_multihop_ttl"])
        return spec

    # -- advertisements --------------------------------------------------------------------
    def translate_advertisements(self, out: BGPTranslation, peers: list[_Peer]) -> list[
        _Advert
    ]:
        aliases = views.community_aliases(self.snapshot)
        names = {p.view.name for p in peers}
        all_pools = sorted(p.name for p in self.snapshot.pools)
        adverts: list[_Advert] = []
        taken: set[str] = set()
        for raw in sorted(self.snapshot.bgp_advertisements, key=lambda a: a.ref.name):
            view = views.advertisement_view(raw)
            ref, origin = view.ref, view.ref.origin
            pools = self.selected_pools(raw)
            if not pools:
                self.finding(Severity.INFO, "bgp-advertisement-no-pool", ref,
                             "spec.ipAddressPools", "selects no pool of the input, so it"
                             " advertises nothing; no CiliumBGPAdvertisement is written for"
                             " it.", origin)
                continue
            targets = None if not view.peers else {p for p in view.peers if p in names}
            if targets is not None and not targets:
                self.finding(Severity.INFO, "bgp-advertisement-no-peer", ref, "spec.peers",
                             "names no BGPPeer that is translated, so it advertises nothing"
                             " through Cilium; no CiliumBGPAdvertisement is written for it.",
                             origin)
                continue
            pool_part = None if pools == all_pools else self.pool_selector(pools)
            if pool_part is not None:
                self.finding(
                    Severity.INFO, "bgp-pool-label", ref, "spec.ipAddressPools",
                    f"advertises pools {', '.join(pools)} only: its CiliumBGPAdvertisement"
                    f" selects Services labelled {pool_label()} in ({', '.join(pools)}). The"
                    " migration labels the Services it pins; a Service created later must"
                    " carry the label to be advertised.", origin)
            entries = self.entries_of(view, pool_part, aliases)
            if not entries:
                continue
            name = view.name
            while name in taken:
                name = f"{name}-x"
            taken.add(name)
            value = label_value(name)
            out.advertisements.append({
                "apiVersion": self.version.api_version,
                "kind": "CiliumBGPAdvertisement",
                "metadata": {
                    "name": name,
                    "labels": {**MANAGED_BY, str(self.labels["advertisement"]): value},
                    "annotations": {SOURCE_ANNOTATION: str(ref)},
                },
                "spec": {"advertisements": entries},
            })
            for pool in pools:
                out.pools[pool] = (*out.pools.get(pool, ()), name)
            terms = [t for t in (term_of(s) for s in view.node_selectors) if t is not None]
            if view.node_selectors and not terms:
                self.finding(Severity.INFO, "bgp-advertisement-no-nodes", ref,
                             "spec.nodeSelectors", "its node selectors can never match a node:"
                             " no node advertises it, under MetalLB or Cilium.", origin)
            adverts.append(_Advert(view, pools, targets, entries, terms,
                                   universal=not view.node_selectors, value=value))
        return adverts

    def entries_of(self, view: views.AdvertisementView, pool_part: dict[str, Any] | None,
                   aliases: dict[str, views.Community]) -> list[dict[str, Any]]:
        ref, origin = view.ref, view.ref.origin
        service: dict[str, Any] = {"addresses": ["LoadBalancerIP"]}
        for key, value, full, cilium_key in (
            ("aggregationLength", view.aggregation_length, 32, "aggregationLengthIPv4"),
            ("aggregationLengthV6", view.aggregation_length_v6, 128, "aggregationLengthIPv6"),
        ):
            if value == full:
                continue
            if self.version.service_aggregation:
                service[cilium_key] = value
            else:
                self.noted("BGPAdvertisement", f"spec.{key}", ref, origin, value=value,
                           minor=self.cilium.minor)
        attributes: dict[str, Any] = {}
        communities: dict[str, list[str]] = {}
        for index, text in enumerate(view.communities):
            community = aliases.get(text) or views.parse_community(text)
            if community is None:
                self.finding(Severity.WARNING, "bgp-community-unknown", ref,
                             f"spec.communities[{index}]",
                             f"{text!r} is neither a community value nor an alias of a"
                             " Community object of the input; it is not carried over. Pass"
                             " the file that defines it too.", origin)
                continue
            bucket = communities.setdefault(community.kind, [])
            if community.value not in bucket:
                bucket.append(community.value)
        if communities:
            attributes["communities"] = {kind: communities[kind] for kind in sorted(communities)}
        if view.local_pref:
            attributes["localPreference"] = view.local_pref
        entries: list[dict[str, Any]] = []
        for index, selector in enumerate(view.service_selectors or ({},)):
            try:
                chosen = combine(pool_part, selector) or ALL_SERVICES
            except SelectorError as exc:
                self.finding(Severity.INFO, "bgp-selector-never-matches", ref,
                             f"spec.serviceSelectors[{index}]", f"can never match together"
                             f" with the pool selection ({exc}); skipped.", origin)
                continue
            entry: dict[str, Any] = {"advertisementType": "Service",
                                     "service": dict(service), "selector": chosen}
            if attributes:
                entry["attributes"] = attributes
            entries.append(entry)
        return entries

    # -- nodes -----------------------------------------------------------------------------
    def lay_out_nodes(self, out: BGPTranslation, peers: list[_Peer],
                      adverts: list[_Advert]) -> None:
        if not peers:
            if adverts:
                self.finding(
                    Severity.WARNING, "bgp-no-peer", adverts[0].view.ref, None,
                    "no BGPPeer of the input is translated: MetalLB advertises nothing over"
                    " BGP without one, and neither will Cilium. The CiliumBGPAdvertisements"
                    " are written; pass the BGPPeers too.", adverts[0].view.ref.origin)
            return
        terms: list[Term] = []
        owners: list[_Peer | _Advert] = [*peers, *adverts]
        for owner in owners:
            for term in owner.terms:
                if term not in terms:
                    terms.append(term)
                owner.indices.add(terms.index(term))
        sets = partition(terms, limit=int(self.defaults["node_sets_limit"]))
        if sets is None:
            sets = [NodeSet(term, frozenset({index})) for index, term in enumerate(terms)]
            if any(p.universal for p in peers) or not terms:
                sets.append(NodeSet((), frozenset()))
            self.finding(
                Severity.WARNING, "bgp-node-selectors-overlap", peers[0].view.ref,
                "spec.nodeSelectors",
                f"the node selectors of the BGPPeers and BGPAdvertisements overlap in more"
                f" than {self.defaults['node_sets_limit']} ways: one CiliumBGPClusterConfig"
                " is written per selector instead of one per disjoint set of nodes. Cilium"
                " gives a node one ClusterConfig (the first it finds): a node that several"
                " select peers only with the peers of that one, and the advertisements meant"
                " for it through the others are lost.", peers[0].view.ref.origin)
        exclude: Term = ((EXCLUDE_LB_LABEL, "DoesNotExist", ()),)
        laid: list[_Laid] = []
        nodes = sorted(self.snapshot.nodes, key=lambda n: n.name)
        unused = 0
        for node_set in sets:
            joined = conjoin(node_set.term, exclude)
            members = [p for p in peers if p.universal or p.indices & node_set.inside]
            if joined is None or not members:
                continue
            if nodes and node_set.inside and not any(term_matches(joined, n.labels)
                                                     for n in nodes):
                unused += 1  # a mix of selectors no Node of the input has
                continue
            shown = [a for a in adverts if a.universal or a.indices & node_set.inside]
            sent = {p.view.name: tuple(sorted(a.view.name for a in shown
                                              if a.peers is None or p.view.name in a.peers))
                    for p in members}
            laid.append((joined, members, sent))
        laid = _merge_alike(laid)
        laid.sort(key=lambda item: json.dumps(selector_of(item[0]), sort_keys=True))
        if unused:
            self.finding(
                Severity.INFO, "bgp-node-sets-unused", peers[0].view.ref, "spec.nodeSelectors",
                f"the node selectors of the BGPPeers and BGPAdvertisements also combine into"
                f" {unused} set(s) of labels that no Node of the input has; no"
                " CiliumBGPClusterConfig is written for those. A node that joins later with"
                " such labels gets no Cilium BGP configuration (MetalLB would peer it): run the"
                " translation again with the new Nodes.", peers[0].view.ref.origin)
        variants = self.peer_configs(out, peers, adverts, laid)
        instances = self.instance_names(peers)
        for index, (term, members, sent) in enumerate(laid, start=1):
            name = "lbmigrate-bgp" if len(laid) == 1 else f"lbmigrate-bgp-{index}"
            selector = selector_of(term)
            in_set = tuple(n.name for n in nodes if term_matches(term, n.labels)) if nodes \
                else None
            out.node_sets.append(BGPNodeSet(
                cluster_config=name, node_selector=selector,
                peers=tuple(p.view.name for p in members),
                peer_configs={p.view.name: variants[(p.view.name, sent[p.view.name])]
                              for p in members},
                advertisements=dict(sent), nodes=in_set,
            ))
            out.cluster_configs.append(self.cluster_config(name, selector, members, sent,
                                                           variants, instances))
        if len(laid) > 1:
            self.finding(
                Severity.INFO, "bgp-node-sets",
                f"CiliumBGPClusterConfig {out.node_sets[0].cluster_config}", "spec.nodeSelector",
                f"MetalLB's BGPPeers and BGPAdvertisements tell {len(laid)} sets of nodes apart"
                " by their node selectors; Cilium gives a node one CiliumBGPClusterConfig, so"
                f" one is written per set ({', '.join(s.cluster_config for s in out.node_sets)}),"
                " each selecting the nodes of its set only, with the peers and advertisements"
                " MetalLB gives those nodes.")
        self.node_overrides(out, peers, instances, laid, nodes)
        for peer in peers:
            nodes_of = sorted({n for s in out.node_sets if peer.view.name in s.peers
                               for n in (s.nodes or ())})
            plan_configs = tuple(sorted({s.peer_configs[peer.view.name] for s in out.node_sets
                                         if peer.view.name in s.peers}))
            if not plan_configs:
                continue
            out.peers.append(BGPPeerPlan(
                peer=peer.view.name, address=str(peer.view.address),
                peer_asn=peer.view.peer_asn, local_asn=peer.view.session_asn,
                instance=instances[peer.view.name], peer_configs=plan_configs,
                graceful_restart=peer.view.graceful_restart, secret=peer.secret,
                nodes=tuple(nodes_of) if nodes else None,
            ))

    def peer_configs(self, out: BGPTranslation, peers: list[_Peer], adverts: list[_Advert],
                     laid: list[_Laid]) -> dict[
        tuple[str, tuple[str, ...]], str
    ]:
        values = {a.view.name: a.value for a in adverts}
        names: dict[tuple[str, tuple[str, ...]], str] = {}
        taken: set[str] = set()
        for peer in peers:
            name = peer.view.name
            variants = sorted({sent[name] for _, members, sent in laid if peer in members})
            if variants and not any(variants):
                self.finding(Severity.INFO, "bgp-peer-no-advertisement", peer.view.ref, None,
                             "no BGPAdvertisement reaches this peer: MetalLB sends it no route,"
                             " and neither does its CiliumBGPPeerConfig (the session still"
                             " comes up).", peer.view.ref.origin)
            for index, ads in enumerate(variants, start=1):
                config = name if len(variants) == 1 else f"{name}-{index}"
                while config in taken:
                    config = f"{config}-x"
                taken.add(config)
                names[(name, ads)] = config
                spec = dict(peer.base)
                families = (["ipv4", "ipv6"] if peer.view.dual_stack
                            else ["ipv4" if peer.view.family == 4 else "ipv6"])
                spec["families"] = []
                for afi in families:
                    family: dict[str, Any] = {"afi": afi, "safi": "unicast"}
                    if ads:
                        family["advertisements"] = {"matchExpressions": [{
                            "key": str(self.labels["advertisement"]), "operator": "In",
                            "values": sorted(values[a] for a in ads)}]}
                    spec["families"].append(family)
                out.peer_configs.append({
                    "apiVersion": self.version.api_version,
                    "kind": "CiliumBGPPeerConfig",
                    "metadata": {"name": config, "labels": dict(MANAGED_BY),
                                 "annotations": {SOURCE_ANNOTATION: str(peer.view.ref)}},
                    "spec": spec,
                })
        return names

    def instance_names(self, peers: list[_Peer]) -> dict[str, str]:
        """Peer -> bgpInstance name: one instance per local ASN (and per routerID of it)."""
        by_key: dict[tuple[int, str], str] = {}
        out: dict[str, str] = {}
        for peer in sorted(peers, key=lambda p: (p.view.session_asn, p.view.router_id or "")):
            key = (peer.view.session_asn, peer.view.router_id or "")
            if key not in by_key:
                same_asn = sum(1 for k in by_key if k[0] == key[0])
                by_key[key] = f"instance-{key[0]}" + (f"-{same_asn + 1}" if same_asn else "")
            out[peer.view.name] = by_key[key]
        return out

    def cluster_config(self, name: str, selector: dict[str, Any], members: list[_Peer],
                       sent: dict[str, tuple[str, ...]],
                       variants: dict[tuple[str, tuple[str, ...]], str],
                       instances: dict[str, str]) -> dict[str, Any]:
        grouped: dict[str, list[_Peer]] = {}
        for peer in members:
            grouped.setdefault(instances[peer.view.name], []).append(peer)
        bgp_instances: list[dict[str, Any]] = []
        addresses: dict[str, str] = {}
        for instance in sorted(grouped, key=lambda n: (grouped[n][0].view.session_asn, n)):
            entries = []
            for peer in grouped[instance]:
                address = str(peer.view.address)
                if address in addresses:
                    self.finding(
                        Severity.WARNING, "bgp-duplicate-peer-address", peer.view.ref,
                        "spec.peerAddress", f"peers with {address} from the same nodes as"
                        f" {addresses[address]} ({name}): a router keeps one session per"
                        " neighbour address, so only one of them comes up.",
                        peer.view.ref.origin)
                addresses.setdefault(address, peer.view.name)
                entries.append({
                    "name": peer.view.name,
                    "peerAddress": address,
                    "peerASN": peer.view.peer_asn,
                    "peerConfigRef": {"name": variants[(peer.view.name, sent[peer.view.name])]},
                })
            bgp_instances.append({"name": instance,
                                  "localASN": grouped[instance][0].view.session_asn,
                                  "peers": entries})
        if len(bgp_instances) > MAX_INSTANCES:
            self.finding(Severity.ERROR, "bgp-too-many-instances", f"CiliumBGPClusterConfig"
                         f" {name}", "spec.bgpInstances", f"needs {len(bgp_instances)} BGP"
                         f" instances (one per local AS and router ID); Cilium allows"
                         f" {MAX_INSTANCES}.")
        handover = {"matchLabels": {str(self.labels["handover"]):
                                    str(self.labels["handover_value"])}}
        return {
            "apiVersion": self.version.api_version,
            "kind": "CiliumBGPClusterConfig",
            "metadata": {
                "name": name,
                "labels": dict(MANAGED_BY),
                "annotations": {SOURCE_ANNOTATION: ", ".join(str(p.view.ref) for p in members)},
            },
            "spec": {"nodeSelector": combine(selector, handover), "bgpInstances": bgp_instances},
        }

    def node_overrides(self, out: BGPTranslation, peers: list[_Peer],
                       instances: dict[str, str],
                       laid: list[_Laid],
                       nodes: list[Node]) -> None:
        wanting = [p for p in peers if p.view.router_id or p.view.source_address]
        if not wanting:
            return
        if not nodes:
            for peer in wanting:
                what = " and ".join(f for f, v in (("routerID", peer.view.router_id),
                                                   ("sourceAddress", peer.view.source_address))
                                    if v)
                self.finding(
                    Severity.WARNING, "bgp-node-override-needs-nodes", peer.view.ref,
                    f"spec.{what.split(' ')[0]}",
                    f"sets {what}, which Cilium sets per node (a CiliumBGPNodeConfigOverride"
                    f" named after the node, bgpInstances[{instances[peer.view.name]}]): the"
                    " input has no Node, so none is written. Pass the Nodes too (kubectl get"
                    " nodes -o yaml), or write the overrides by hand.", peer.view.ref.origin)
            return
        per_node: dict[str, dict[str, dict[str, Any]]] = {}
        sources: dict[str, list[str]] = {}
        for peer in wanting:
            selected = [n for n in nodes for term, members, _ in laid
                        if peer in members and term_matches(term, n.labels)]
            if not selected:
                continue
            instance = instances[peer.view.name]
            router_id = peer.view.router_id
            if router_id and ":" in router_id:
                self.finding(Severity.WARNING, "bgp-router-id-ipv6", peer.view.ref,
                             "spec.routerID", f"{router_id} is not an IPv4 address; a BGP"
                             " router ID is 32 bits and Cilium takes an IPv4 one: left to"
                             " Cilium (the node's IPv4 address).", peer.view.ref.origin)
                router_id = None
            if router_id:
                for node in selected:
                    per_node.setdefault(node.name, {}).setdefault(
                        instance, {"name": instance})["routerID"] = router_id
                    sources.setdefault(node.name, []).append(str(peer.view.ref))
            source = peer.view.source_address
            if source:
                owners = [n for n in selected if source in n.internal_ips]
                if not owners and len(selected) == 1:
                    owners = selected
                for node in owners:
                    entry = per_node.setdefault(node.name, {}).setdefault(
                        instance, {"name": instance})
                    entry.setdefault("peers", []).append(
                        {"name": peer.view.name, "localAddress": source})
                    sources.setdefault(node.name, []).append(str(peer.view.ref))
                others = sorted(n.name for n in selected if n not in owners)
                if others:
                    self.finding(
                        Severity.WARNING, "bgp-source-address", peer.view.ref,
                        "spec.sourceAddress",
                        f"dials from {source}, which "
                        + (f"only {', '.join(n.name for n in owners)} has" if owners
                           else "no Node of the input has")
                        + f" among the nodes it selects: MetalLB's sessions from"
                        f" {', '.join(others)} cannot bind it and never come up, while"
                        " Cilium peers from there with the node's own address. Limit the"
                        " peer's node selectors to the node that has the address if those"
                        " sessions must stay down.", peer.view.ref.origin)
        for node_name in sorted(per_node):
            out.node_overrides.append({
                "apiVersion": self.version.api_version,
                "kind": "CiliumBGPNodeConfigOverride",
                "metadata": {"name": node_name, "labels": dict(MANAGED_BY), "annotations": {
                    SOURCE_ANNOTATION: ", ".join(dict.fromkeys(sources[node_name]))}},
                "spec": {"bgpInstances": [per_node[node_name][i]
                                          for i in sorted(per_node[node_name])]},
            })

    # -- what the hand-over needs ----------------------------------------------------------
    def describe_services(self, out: BGPTranslation, adverts: list[_Advert]) -> None:
        by_name = {a.view.name: a for a in adverts}
        local: dict[str, list[ServicePin]] = {}
        endpoints = endpoint_nodes(self.snapshot)
        for pin in sorted(self.pins, key=lambda p: p.key):
            if pin.pool not in out.pools or not pin.ips:
                continue
            service = self.services[pin.key]
            labels = selection_labels(service, pin.labels)
            chosen = tuple(name for name in out.pools[pin.pool]
                           if any(matches(e["selector"], labels)
                                  for e in by_name[name].entries))
            if not chosen:
                continue
            sending = [s for s in out.node_sets
                       if any(set(ads) & set(chosen) for ads in s.advertisements.values())]
            peers = sorted({p for s in sending for p, ads in s.advertisements.items()
                            if set(ads) & set(chosen)})
            nodes = tuple(sorted({n for s in sending for n in (s.nodes or ())})) if (
                self.snapshot.nodes) else None
            if nodes is not None and service.external_traffic_policy == "Local" and (
                    pin.key in endpoints):
                nodes = tuple(n for n in nodes if n in endpoints[pin.key])
            out.services.append(BGPService(
                key=pin.key, pool=pin.pool, ips=pin.ips,
                external_traffic_policy=service.external_traffic_policy,
                advertisements=chosen, peers=tuple(peers), nodes=nodes))
            if service.external_traffic_policy == "Local":
                for name in chosen:
                    local.setdefault(name, []).append(pin)
        for name, pins in sorted(local.items()):
            advert = by_name[name]
            lengths = [(advert.view.aggregation_length, 32),
                       (advert.view.aggregation_length_v6, 128)]
            if not self.version.service_aggregation or all(v == f for v, f in lengths):
                continue
            keys = [p.key for p in pins]
            self.noted("BGPAdvertisement", "aggregation+externalTrafficPolicy", advert.view.ref,
                       advert.view.ref.origin, where="spec.aggregationLength",
                       value=min(v for v, f in lengths if v != f),
                       pool=", ".join(sorted({str(p.pool) for p in pins})),
                       services=", ".join(keys[:5]) + (" ..." if len(keys) > 5 else ""))
        if out.advertisements:
            first = adverts[0].view.ref
            self.noted("BGPAdvertisement", "endpoints", first, first.origin)

    def check_overlaps(self, peers: list[_Peer], adverts: list[_Advert]) -> None:
        """Before 1.18, a Service several advertisements select gets the attributes of one."""
        if self.version.merges_overlapping:
            return
        for left_index, left in enumerate(adverts):
            for right in adverts[left_index + 1:]:
                shared = sorted(set(left.pools) & set(right.pools))
                same_peer = left.peers is None or right.peers is None or (
                    left.peers & right.peers)
                attributes = [e.get("attributes") for e in left.entries]
                different = any(a != e.get("attributes") for a in attributes
                                for e in right.entries)
                if shared and same_peer and different and peers:
                    self.finding(
                        Severity.WARNING, "bgp-overlapping-advertisements", right.view.ref,
                        None, f"advertises pool(s) {', '.join(shared)} to the same peers as"
                        f" {left.view.ref} with other attributes (communities, local"
                        " preference). MetalLB sends their union; Cilium"
                        f" {self.cilium.minor} applies the attributes of one advertisement"
                        " only (1.18 merges them). Upgrade Cilium to 1.18, or merge the two"
                        " advertisements.", right.view.ref.origin)

    def report_handover(self, out: BGPTranslation) -> None:
        if not out.cluster_configs:
            return
        label = f"{out.handover_label}={out.handover_value}"
        names = [c["metadata"]["name"] for c in out.cluster_configs]
        subject = ("it selects" if len(names) == 1
                   else f"{', '.join(names)} select")
        self.finding(
            Severity.WARNING, "bgp-handover-label", f"CiliumBGPClusterConfig {names[0]}",
            "spec.nodeSelector",
            f"{subject} only nodes labelled {label} (Cilium's operator matches CiliumNode"
            " labels, which Cilium's agent copies from the Node, cilium/cilium#18609: label the"
            " Node): no node peers through Cilium until it is labelled. A router keeps one"
            " session per neighbour address: MetalLB's speaker and Cilium cannot both peer"
            " from one node, and switching every node at once withdraws every prefix until"
            " Cilium's sessions come up. migrate plan moves one node at a time (stages"
            " bgp-prepare and bgp-handover); by hand: make MetalLB's BGPPeers require the"
            f" label {out.handover_label} absent, then per node label it"
            f" {out.handover_label}=none, wait for MetalLB's sessions there to close, label it"
            f" {label}, and wait for its sessions (kubectl get ciliumbgpnodeconfig NODE -o"
            " yaml) before the next. Once MetalLB is gone, the label requirement may be"
            " dropped.")




def endpoint_nodes(snapshot: ClusterSnapshot) -> dict[str, set[str]]:
    """Service ``namespace/name`` -> the nodes of its ready, non-terminating endpoints, for the
    Services whose EndpointSlices the input holds (MetalLB and Cilium advertise an
    ``externalTrafficPolicy: Local`` Service from those nodes only)."""
    out: dict[str, set[str]] = {}
    for body in snapshot.find("discovery.k8s.io/", "EndpointSlice"):
        metadata = body.get("metadata") or {}
        owner = (metadata.get("labels") or {}).get("kubernetes.io/service-name")
        if not owner:
            continue
        nodes = out.setdefault(f"{metadata.get('namespace')}/{owner}", set())
        for endpoint in body.get("endpoints") or []:
            conditions = endpoint.get("conditions") or {}
            if conditions.get("terminating") or (
                    conditions.get("ready") is False and not conditions.get("serving")):
                continue
            if endpoint.get("nodeName"):
                nodes.add(str(endpoint["nodeName"]))
    return out


def _merge_alike(laid: list[_Laid]) -> list[_Laid]:
    """Join node sets that get the same peers and advertisements when one selector can
    select both (they differ on one label key), so fewer ClusterConfigs say the same."""
    laid = list(laid)
    merged = True
    while merged:
        merged = False
        for i, (term, members, sent) in enumerate(laid):
            for j in range(i + 1, len(laid)):
                other, other_members, other_sent = laid[j]
                if other_members != members or other_sent != sent:
                    continue
                joined = merge(term, other)
                if joined is not None:
                    laid[i] = (joined, members, sent)
                    del laid[j]
                    merged = True
                    break
            if merged:
                break
    return laid


def translate_bgp(snapshot: ClusterSnapshot, version: CiliumVersion, *,
                  selected_pools: Callable[[mlb.BGPAdvertisement], list[str]],
                  pool_selector: Callable[[list[str]], dict[str, Any]],
                  pins: Sequence[ServicePin]) -> tuple[BGPTranslation | None, list[Finding]]:
    """Translate a snapshot's MetalLB BGP configuration (None when it has none).

    ``pool_selector``: the L2 translation's selector of Services pinned to some MetalLB pools
    (it knows each pool's label value, which may be a shortened form of a long name)."""
    translator = _BGPTranslator(snapshot, version, selected_pools, pool_selector, pins)
    return translator.run(), translator.findings


def left_to_metallb(snapshot: ClusterSnapshot, bgp_pools: set[str]) -> list[Finding]:
    """What a translation without BGP (``translate(..., bgp=False)``) says of it: one WARNING
    per pool announced over BGP."""
    return [
        Finding(
            Severity.WARNING, "bgp-left-to-metallb", str(pool.ref), None,
            "is announced over BGP, which this translation leaves to MetalLB: its Cilium pool"
            " takes over the IPs, and MetalLB's speakers keep announcing them. migrate plan"
            " hands BGP over node by node (README, BGP); migrate convert writes the Cilium BGP"
            " objects.", pool.ref.origin)
        for pool in sorted(snapshot.pools, key=lambda p: p.name) if pool.name in bgp_pools
    ]
