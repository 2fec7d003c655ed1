"""ClusterSnapshot: every object the migration reads, validated, from files or a live cluster.

``build_snapshot`` is the single entry point; both the file reader and the live reader hand it
``SourceDocument``s, so the two paths cannot drift.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.errors import InputError
from migrate.model import bgp
from migrate.model import metallb as mlb
from migrate.model.addresses import IPAddress, RangeIndex
from migrate.model.findings import Finding, Severity
from migrate.model.kube import (
    METALLB_PREFIXES,
    Node,
    Service,
    metallb_annotation,
    parse_node,
    parse_service,
)
from migrate.model.metallb import ObjectRef
from migrate.sources import legacy
from migrate.sources.files import SourceDocument, load_documents

METALLB_KINDS = set(mlb.SERVED_VERSIONS)


@dataclass
class ClusterSnapshot:
    """What the migration knows of a cluster (or of a folder of manifests)."""

    documents: list[SourceDocument]
    metallb_namespace: str
    pools: list[mlb.IPAddressPool] = field(default_factory=list)
    l2_advertisements: list[mlb.L2Advertisement] = field(default_factory=list)
    bgp_advertisements: list[mlb.BGPAdvertisement] = field(default_factory=list)
    bgp_peers: list[mlb.BGPPeer] = field(default_factory=list)
    bfd_profiles: list[mlb.NamedOnly] = field(default_factory=list)
    communities: list[mlb.NamedOnly] = field(default_factory=list)
    services: list[Service] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    others: list[SourceDocument] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    legacy_sources: list[str] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    """What the reader learnt besides objects (source, served Cilium API versions...)."""
    pool_aliases: dict[str, str] = field(default_factory=dict)
    """Legacy pool names (as Services still write them) → the pool's DNS-1123 name [M7]."""

    @property
    def has_metallb(self) -> bool:
        """True when anything MetalLB-related was found (objects or annotated Services)."""
        return bool(
            self.pools
            or self.l2_advertisements
            or self.bgp_advertisements
            or self.bgp_peers
            or self.bfd_profiles
            or self.communities
            or any(_mentions_metallb(s) for s in self.services)
        )

    def pool(self, name: str) -> mlb.IPAddressPool | None:
        """The pool of that name (or legacy name), if any."""
        name = self.pool_aliases.get(name, name)
        return next((p for p in self.pools if p.name == name), None)

    def pool_holding(self, ip: IPAddress) -> str | None:
        """The MetalLB pool whose addresses contain the IP, if any (indexed)."""
        index = self.__dict__.get("_pool_index")
        if index is None:
            index = RangeIndex(
                (address.range, pool.name) for pool in self.pools for address in pool.addresses
            )
            self.__dict__["_pool_index"] = index
        return index.find(ip)

    def find(self, api_version_prefix: str, kind: str) -> list[dict[str, Any]]:
        """Raw bodies of other objects of a kind (apiVersion starting with the prefix)."""
        return [
            d.body
            for d in self.others
            if d.body.get("kind") == kind
            and str(d.body.get("apiVersion", "")).startswith(api_version_prefix)
        ]


def _mentions_metallb(service: Service) -> bool:
    return any(key.startswith(METALLB_PREFIXES) for key in service.annotations)


def read_snapshot(paths: Sequence[str | Path], *, metallb_namespace: str | None = None) -> (
    ClusterSnapshot
):
    """Read files and folders into a validated snapshot."""
    return build_snapshot(load_documents(paths), metallb_namespace=metallb_namespace)


def _ref(doc: SourceDocument, kind: str | None = None) -> ObjectRef:
    metadata = doc.body.get("metadata") or {}
    if not isinstance(metadata, dict):
        metadata = {}
    return ObjectRef(
        kind=kind or str(doc.body.get("kind")),
        namespace=metadata.get("namespace"),
        name=str(metadata.get("name") or ""),
        origin=doc.origin,
    )


def _metallb_version(doc: SourceDocument) -> str | None:
    """The version of a metallb.io object; None when the document is not MetalLB's.

    Raises InputError for a MetalLB-looking apiVersion that MetalLB would not serve.
    """
    api_version = doc.body.get("apiVersion")
    kind = doc.body.get("kind")
    if not isinstance(api_version, str) or "metallb" not in api_version or (
        api_version.partition("/")[0].endswith(".metallb.io")  # frr-k8s' own API group
    ):
        if kind in METALLB_KINDS and api_version is None:
            raise InputError(
                "is missing", source=doc.origin, obj=str(_ref(doc)), field="apiVersion"
            )
        return None
    group, slash, version = api_version.partition("/")
    expected = mlb.SERVED_VERSIONS.get(str(kind))
    if expected is None:
        raise InputError(
            f"{kind!r} is not a MetalLB kind (known: {', '.join(sorted(METALLB_KINDS))})",
            source=doc.origin, obj=str(_ref(doc)), field="kind",
        )
    if group != mlb.GROUP or not slash or version not in expected:
        raise InputError(
            f"{api_version!r} is not a version MetalLB serves for {kind}"
            f" (expected {' or '.join(f'{mlb.GROUP}/{v}' for v in expected)})",
            source=doc.origin, obj=str(_ref(doc)), field="apiVersion",
        )
    return version


def _legacy_documents(doc: SourceDocument) -> tuple[list[legacy.LegacyObject], str] | None:
    """CRD-shaped objects from a legacy ConfigMap, bare body, Helm values or HelmRelease [M7]."""
    body = doc.body
    kind = body.get("kind")
    metadata = body.get("metadata") or {}
    namespace = (metadata.get("namespace") if isinstance(metadata, dict) else None) or (
        mlb.DEFAULT_NAMESPACE
    )
    if kind == "ConfigMap" and str(body.get("apiVersion", "")) == "v1":
        data = body.get("data") or {}
        text = data.get("config") if isinstance(data, dict) else None
        if not isinstance(text, str):
            return None
        origin = f"{doc.origin} (ConfigMap {namespace}/{metadata.get('name')})"
        config = legacy.parse_config_text(text, origin, "data.config")
        if not (set(config) & {"address-pools", "peers"}):
            return None
        return legacy.convert(config, origin=origin, namespace=namespace, where="data.config"), (
            origin
        )
    if kind == "HelmRelease":
        spec = body.get("spec") or {}
        values = spec.get("values") if isinstance(spec, dict) else None
        found = legacy.find_config_inline(values)
        if not found:
            return None
        target = (spec.get("targetNamespace") if isinstance(spec, dict) else None) or namespace
        origin = f"{doc.origin} (HelmRelease {namespace}/{metadata.get('name')})"
        where = f"spec.values.{found[1]}"
        config = legacy.parse_config_text(found[0], origin, where)
        return legacy.convert(config, origin=origin, namespace=target, where=where), origin
    if kind is None and "apiVersion" not in body:
        if legacy.looks_legacy(body):
            origin = f"{doc.origin} (legacy MetalLB config)"
            return legacy.convert(
                body, origin=origin, namespace=mlb.DEFAULT_NAMESPACE, where="config"
            ), origin
        found = legacy.find_config_inline(body)
        if found:
            origin = f"{doc.origin} (Helm values)"
            config = legacy.parse_config_text(found[0], origin, found[1])
            return legacy.convert(
                config, origin=origin, namespace=mlb.DEFAULT_NAMESPACE, where=found[1]
            ), origin
    return None


def _choose_namespace(docs: Iterable[tuple[SourceDocument, str]], given: str | None) -> str:
    if given:
        return given
    counts = Counter(
        ns
        for doc, _ in docs
        if (ns := (doc.body.get("metadata") or {}).get("namespace"))
    )
    if not counts:
        return mlb.DEFAULT_NAMESPACE
    return str(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[0][0])


def build_snapshot(
    documents: Sequence[SourceDocument],
    *,
    metallb_namespace: str | None = None,
    facts: dict[str, Any] | None = None,
) -> ClusterSnapshot:
    """Classify and validate documents into a ClusterSnapshot (raises InputError)."""
    metallb_docs: list[tuple[SourceDocument, str]] = []
    implied: set[int] = set()  # ids of objects converted from a legacy configuration
    others: list[SourceDocument] = []
    services: list[Service] = []
    nodes: list[Node] = []
    legacy_sources: list[str] = []
    for doc in documents:
        version = _metallb_version(doc)
        if version is not None:
            metallb_docs.append((doc, version))
            continue
        converted = _legacy_documents(doc)
        if converted is not None:
            objects, origin = converted
            legacy_sources.append(origin)
            for obj in objects:
                converted_doc = SourceDocument(obj.origin, obj.body)
                implied.add(id(converted_doc))
                metallb_docs.append((converted_doc, obj.body["apiVersion"].split("/")[1]))
            others.append(doc)
            continue
        kind, api_version = doc.body.get("kind"), doc.body.get("apiVersion")
        if kind == "Service" and api_version == "v1":
            services.append(parse_service(_ref(doc), doc.body))
        elif kind == "Node" and api_version == "v1":
            nodes.append(parse_node(doc.body))
        else:
            others.append(doc)

    namespace = _choose_namespace(metallb_docs, metallb_namespace)
    snapshot = ClusterSnapshot(
        documents=list(documents),
        metallb_namespace=namespace,
        services=services,
        nodes=nodes,
        others=others,
        legacy_sources=legacy_sources,
        facts=dict(facts or {"source": "files"}),
    )
    seen: dict[tuple[str, str], ObjectRef] = {}
    for doc, version in metallb_docs:
        _add_metallb(snapshot, doc, version, seen, implied=id(doc) in implied)
    _check_overlaps(snapshot.pools)
    _check_services(snapshot)
    _check_references(snapshot)
    bgp.validate(snapshot)
    return snapshot


def _add_metallb(
    snapshot: ClusterSnapshot,
    doc: SourceDocument,
    version: str,
    seen: dict[tuple[str, str], ObjectRef],
    *,
    implied: bool = False,
) -> None:
    kind = str(doc.body["kind"])
    if kind in mlb.STATUS_KINDS:
        snapshot.others.append(doc)
        return
    ref = _ref(doc)
    explicit_namespace = ref.namespace
    ref = ObjectRef(kind, explicit_namespace or snapshot.metallb_namespace, ref.name, ref.origin)
    mlb.check_name(ref)
    if explicit_namespace and explicit_namespace != snapshot.metallb_namespace:
        snapshot.findings.append(Finding(
            Severity.WARNING, "outside-metallb-namespace", str(ref), "metadata.namespace",
            f"MetalLB only reads its objects from its own namespace ({snapshot.metallb_namespace})"
            f"; this one, in {explicit_namespace}, is ignored by MetalLB and is not translated.",
            ref.origin,
        ))
        return
    kind_key = "IPAddressPool" if kind == "AddressPool" else kind
    previous = seen.get((kind_key, ref.name))
    if previous is not None:
        raise InputError(
            f"duplicate name: {previous} is already defined in {previous.origin}",
            source=ref.origin, obj=str(ref), field="metadata.name",
        )
    seen[(kind_key, ref.name)] = ref
    if kind in ("IPAddressPool", "AddressPool"):
        pool = mlb.parse_pool(ref, doc.body)
        snapshot.pools.append(pool)
        annotations = (doc.body.get("metadata") or {}).get("annotations") or {}
        legacy_name = annotations.get(legacy.LEGACY_NAME_ANNOTATION)
        if legacy_name:
            snapshot.pool_aliases[str(legacy_name)] = pool.name
        if kind == "AddressPool":
            _implied_advertisement(snapshot, pool, doc.body.get("spec") or {})
    elif kind == "L2Advertisement":
        advertisement = mlb.parse_l2advertisement(ref, doc.body)
        if implied:
            advertisement = dataclasses.replace(advertisement, implied=True)
        snapshot.l2_advertisements.append(advertisement)
    elif kind == "BGPAdvertisement":
        snapshot.bgp_advertisements.append(mlb.parse_bgpadvertisement(ref, doc.body))
    elif kind == "BGPPeer":
        snapshot.bgp_peers.append(mlb.parse_bgppeer(ref, doc.body, version))
        if version == "v1beta1":
            snapshot.findings.append(Finding(
                Severity.INFO, "bgppeer-v1beta1", str(ref), "apiVersion",
                "metallb.io/v1beta1 BGPPeer is deprecated; MetalLB stores it as v1beta2.",
                ref.origin,
            ))
    elif kind in ("BFDProfile", "Community"):
        spec = doc.body.get("spec") or {}
        if not isinstance(spec, dict):
            raise InputError("must be an object", source=ref.origin, obj=str(ref), field="spec")
        named = mlb.NamedOnly(ref, spec)
        (snapshot.bfd_profiles if kind == "BFDProfile" else snapshot.communities).append(named)


def _implied_advertisement(snapshot: ClusterSnapshot, pool: mlb.IPAddressPool,
                           spec: dict[str, Any]) -> None:
    """A legacy AddressPool (MetalLB 0.13-0.14.2) announces by its ``protocol``, with no
    advertisement object: record the advertisement it implies, marked as implied [M1][M7]
    (a bgp pool: one per entry of its ``bgpAdvertisements``, or one with MetalLB's defaults)."""
    protocol = pool.legacy_protocol
    ref = pool.ref
    implied = ObjectRef(
        "L2Advertisement" if protocol == "layer2" else "BGPAdvertisement", ref.namespace,
        f"{pool.name}-{protocol}", f"{ref.origin} (implied by {ref} protocol {protocol})",
    )
    if protocol == "layer2":
        snapshot.l2_advertisements.append(mlb.L2Advertisement(
            ref=implied, pool_names=(pool.name,), pool_selectors=(), node_selectors=(),
            interfaces=(), service_selectors=(), implied=True))
    elif protocol == "bgp":
        entries = spec.get("bgpAdvertisements") or [{}]
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise InputError("must be a list of advertisements", source=ref.origin,
                             obj=str(ref), field="spec.bgpAdvertisements")
        for index, entry in enumerate(entries, start=1):
            name = implied.name if len(entries) == 1 else f"{implied.name}-{index}"
            snapshot.bgp_advertisements.append(mlb.BGPAdvertisement(
                ref=dataclasses.replace(implied, name=name), pool_names=(pool.name,),
                pool_selectors=(), peers=(), fields=dict(entry)))
    snapshot.findings.append(Finding(
        Severity.WARNING, "legacy-addresspool", str(ref), "kind",
        "AddressPool was removed in MetalLB 0.14.3; it is translated like an IPAddressPool"
        + (f", announced over {protocol} as its protocol says (no advertisement object)"
           if protocol in ("layer2", "bgp") else "") + ".",
        ref.origin,
    ))


def _check_overlaps(pools: list[mlb.IPAddressPool]) -> None:
    """MetalLB refuses any two overlapping CIDRs or ranges, in one pool or across pools [M2]."""
    entries = [
        (address.range, pool, index)
        for pool in pools
        for index, address in enumerate(pool.addresses)
    ]
    entries.sort(key=lambda e: (e[0].version, int(e[0].first)))
    for (left, left_pool, left_index), (right, right_pool, right_index) in itertools.pairwise(
        entries
    ):
        if left.overlaps(right):
            raise InputError(
                f"{right_pool.addresses[right_index].text} overlaps"
                f" {left_pool.addresses[left_index].text} of {left_pool.ref}"
                f" ({left_pool.ref.origin}); MetalLB refuses overlapping pools",
                source=right_pool.ref.origin,
                obj=str(right_pool.ref),
                field=f"spec.addresses[{right_index}]",
            )


def _check_services(snapshot: ClusterSnapshot) -> None:
    seen: dict[tuple[str, str], Service] = {}
    for service in snapshot.services:
        key = (service.namespace, service.name)
        if key in seen:
            raise InputError(
                f"duplicate Service: already defined in {seen[key].ref.origin}",
                source=service.ref.origin, obj=str(service.ref), field="metadata.name",
            )
        seen[key] = service
        service.requested_ips()  # validates the annotations and spec.loadBalancerIP
        service.current_ips()


def _check_references(snapshot: ClusterSnapshot) -> None:
    names = {pool.name for pool in snapshot.pools}
    advertisements: list[mlb.L2Advertisement | mlb.BGPAdvertisement] = [
        *snapshot.l2_advertisements, *snapshot.bgp_advertisements
    ]
    for ad in advertisements:
        for index, name in enumerate(ad.pool_names):
            if name not in names:
                snapshot.findings.append(Finding(
                    Severity.WARNING, "unknown-pool", str(ad.ref),
                    f"spec.ipAddressPools[{index}]",
                    f"names pool {name!r}, which is not in the input; MetalLB ignores the name."
                    " If the pool is defined elsewhere, pass that file too.",
                    ad.ref.origin,
                ))
    peer_names = {peer.ref.name for peer in snapshot.bgp_peers}
    for bgp_ad in snapshot.bgp_advertisements:
        for index, name in enumerate(bgp_ad.peers):
            if name not in peer_names:
                snapshot.findings.append(Finding(
                    Severity.WARNING, "unknown-peer", str(bgp_ad.ref), f"spec.peers[{index}]",
                    f"names BGPPeer {name!r}, which is not in the input.", bgp_ad.ref.origin,
                ))
    profiles = {profile.ref.name for profile in snapshot.bfd_profiles}
    for peer in snapshot.bgp_peers:
        if peer.bfd_profile and peer.bfd_profile not in profiles:
            snapshot.findings.append(Finding(
                Severity.WARNING, "unknown-bfd-profile", str(peer.ref), "spec.bfdProfile",
                f"names BFDProfile {peer.bfd_profile!r}, which is not in the input.",
                peer.ref.origin,
            ))
    for service in snapshot.services:
        value, key = metallb_annotation(service.annotations, "address-pool")
        if value and snapshot.pool(value) is None:
            snapshot.findings.append(Finding(
                Severity.WARNING, "unknown-pool", str(service.ref),
                f"metadata.annotations[{key}]",
                f"asks for pool {value!r}, which is not in the input. If the pool is defined"
                " elsewhere, pass that file too.",
                service.ref.origin,
            ))
