"""ClusterSnapshot: every object the migration reads, validated, from files or a live cluster.

``build_snapshot`` is the single entry point; both the file reader and the live reader hand it
``SourceDocument``s, so the two paths cannot drift.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from migrate.errors import InputError, InputProblems, describe_object, reading
from migrate.model import bgp
from migrate.model import metallb as mlb
from migrate.model.addresses import AddressRange, IPAddress, RangeIndex
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
from migrate.sources.files import SourceDocument, read_documents
from migrate.sources.validate import check_document, identity


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
    """Read files and folders into a validated snapshot (InputProblems listing every problem
    of every file)."""
    documents, problems = read_documents(paths)
    return build_snapshot(documents, metallb_namespace=metallb_namespace, problems=problems)


def _ref(doc: SourceDocument, kind: str | None = None) -> ObjectRef:
    metadata = doc.body["metadata"]
    return ObjectRef(
        kind=kind or doc.body["kind"],
        namespace=metadata.get("namespace"),
        name=metadata.get("name") or "",
        origin=doc.origin,
    )


def _file_of(source: str | None) -> str:
    """The file a problem's source names (``path#2``, ``path:9``, ``path items[0]`` → path)."""
    return re.sub(r"(#\d+|:\d+)?( items\[\d+\])?$", "", source or "")


def _where(doc: SourceDocument) -> str:
    """The document, as the internal-error line names it."""
    ident = identity(doc.body)
    obj = describe_object(ident.kind, ident.namespace, ident.name)
    return f"{doc.origin} ({obj})" if obj else doc.origin


@dataclass(frozen=True)
class _MetalLBDocument:
    doc: SourceDocument
    version: str
    derivation: legacy.Derivation | None = None
    """Set for an object converted from the legacy configuration."""
    unknown: tuple[str, ...] = ()
    """The fields of the object migrate does not understand."""


def _legacy_documents(doc: SourceDocument) -> tuple[list[legacy.LegacyObject], str] | None:
    """CRD-shaped objects from a legacy ConfigMap, bare body, Helm values or HelmRelease [M7]."""
    body = doc.body
    ident = identity(body)
    kind = ident.kind
    namespace = ident.namespace or mlb.DEFAULT_NAMESPACE
    obj = describe_object(kind, namespace, ident.name)
    if kind == "ConfigMap" and ident.api_version == "v1":
        text = (body.get("data") or {}).get("config")
        owned = "metallb" in f"{ident.namespace} {ident.name}"
        config = legacy.legacy_config(text, source=doc.origin, ident=ident, where="data.config",
                                      metallb_owned=owned)
        if config is None:
            return None
        origin = f"{doc.origin} (ConfigMap {namespace}/{ident.name})"
        return legacy.convert(config, origin=origin, namespace=namespace, where="data.config",
                              source=doc.origin, obj=obj), origin
    if kind == "HelmRelease":
        spec = body.get("spec") or {}
        found = legacy.find_config_inline(spec.get("values"))
        if not found:
            return None
        chart = ((spec.get("chart") or {}).get("spec") or {}).get("chart") or ""
        where = f"spec.values.{found[1]}"
        config = legacy.legacy_config(found[0], source=doc.origin, ident=ident, where=where,
                                      metallb_owned="metallb" in f"{chart} {ident.name}")
        if config is None:
            return None
        target = spec.get("targetNamespace") or namespace
        origin = f"{doc.origin} (HelmRelease {namespace}/{ident.name})"
        return legacy.convert(config, origin=origin, namespace=target, where=where,
                              source=doc.origin, obj=obj), origin
    if kind is None and "apiVersion" not in body:
        if legacy.looks_legacy(body):
            origin = f"{doc.origin} (legacy MetalLB config)"
            config = legacy.legacy_config(body, source=doc.origin, ident=ident, where="",
                                          metallb_owned=True)
            where = ""
        else:
            found = legacy.find_config_inline(body)
            if not found:
                return None
            origin = f"{doc.origin} (Helm values)"
            where = found[1]
            config = legacy.legacy_config(found[0], source=doc.origin, ident=ident, where=where,
                                          metallb_owned=where in ("configInline",
                                                                  "metallb.configInline"))
        if config is None:
            return None
        return legacy.convert(config, origin=origin, namespace=mlb.DEFAULT_NAMESPACE,
                              where=where, source=doc.origin, obj=None), origin
    return None


def _choose_namespace(docs: Iterable[_MetalLBDocument], given: str | None) -> str:
    if given:
        return given
    counts = Counter(ns for entry in docs if (ns := entry.doc.body["metadata"].get("namespace")))
    if not counts:
        return mlb.DEFAULT_NAMESPACE
    return str(sorted(counts.items(), key=lambda item: (-item[1], item[0]))[0][0])


UNKNOWN_FIELD_MESSAGE = (
    "not understood: this version of migrate does not know this field (a newer MetalLB's, or"
    " a typo), so the translation may be incomplete; check what it does before migrating."
)


class _Builder:
    """Classifies documents into a snapshot, collecting every problem on the way."""

    def __init__(self, problems: Iterable[InputError]) -> None:
        self.problems: list[InputError] = list(problems)
        self.metallb: list[_MetalLBDocument] = []
        self.others: list[SourceDocument] = []
        self.services: list[Service] = []
        self.nodes: list[Node] = []
        self.legacy_sources: list[str] = []
        self.findings: list[Finding] = []

    def add_problem(self, error: InputError,
                    derivation: legacy.Derivation | None = None) -> None:
        if isinstance(error, InputProblems):
            self.problems.extend(error.problems)
        else:
            self.problems.append(derivation.relocate(error) if derivation else error)

    def classify(self, doc: SourceDocument) -> None:
        checked = check_document(doc)
        if not checked.ok:
            self.problems.extend(checked.problems)
            return
        ident = identity(doc.body)
        if checked.metallb_version is not None:
            self.metallb.append(_MetalLBDocument(doc, checked.metallb_version,
                                                 unknown=tuple(checked.unknown)))
            return
        converted = _legacy_documents(doc)
        if converted is not None:
            objects, origin = converted
            self.legacy_sources.append(origin)
            for obj in objects:
                self.metallb.append(_MetalLBDocument(
                    SourceDocument(obj.origin, obj.body), obj.body["apiVersion"].split("/")[1],
                    obj.derivation))
            self.others.append(doc)
            return
        if ident.kind == "Service" and ident.api_version == "v1":
            self.services.append(parse_service(_ref(doc), doc.body))
        elif ident.kind == "Node" and ident.api_version == "v1":
            self.nodes.append(parse_node(doc.body))
        else:
            self.others.append(doc)


def build_snapshot(
    documents: Sequence[SourceDocument],
    *,
    metallb_namespace: str | None = None,
    facts: dict[str, Any] | None = None,
    problems: Iterable[InputError] = (),
) -> ClusterSnapshot:
    """Check, classify and validate documents into a ClusterSnapshot.

    Every document is checked once where it enters (``migrate/sources/validate.py``) before
    any view is built. Every problem of every document (and ``problems``, those found while
    reading the files) is raised together as InputProblems, one line each.
    """
    builder = _Builder(problems)
    for doc in documents:
        with reading(_where(doc)):
            try:
                builder.classify(doc)
            except InputError as error:
                builder.add_problem(error)
    namespace = _choose_namespace(builder.metallb, metallb_namespace)
    snapshot = ClusterSnapshot(
        documents=list(documents),
        metallb_namespace=namespace,
        services=builder.services,
        nodes=builder.nodes,
        others=builder.others,
        legacy_sources=builder.legacy_sources,
        findings=builder.findings,
        facts=dict(facts or {"source": "files"}),
    )
    seen: dict[tuple[str, str], ObjectRef] = {}
    derivations: dict[ObjectRef, legacy.Derivation] = {}
    for entry in builder.metallb:
        with reading(_where(entry.doc)):
            try:
                ref = _add_metallb(snapshot, entry.doc, entry.version, seen,
                                   implied=entry.derivation is not None, unknown=entry.unknown)
            except InputError as error:
                builder.add_problem(error, entry.derivation)
                continue
        if ref is not None and entry.derivation is not None:
            derivations[ref] = entry.derivation
    for problem, ref in [*_check_overlaps(snapshot.pools), *_check_services(snapshot)]:
        builder.add_problem(problem, derivations.get(ref))
    if builder.problems:  # file by file, each in the order found
        raise InputProblems(sorted(builder.problems, key=lambda p: _file_of(p.source)))
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
    unknown: Sequence[str] = (),
) -> ObjectRef | None:
    """Build the view of one MetalLB object into the snapshot, with a WARNING for each field
    in ``unknown``; its ref, or None when the object is not one the migration reads."""
    kind = doc.body["kind"]
    if kind in mlb.STATUS_KINDS:
        snapshot.others.append(doc)
        return None
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
        return None
    snapshot.findings.extend(
        Finding(Severity.WARNING, "unknown-field", str(ref), path, UNKNOWN_FIELD_MESSAGE,
                ref.origin)
        for path in unknown
    )
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
        annotations = doc.body["metadata"].get("annotations") or {}
        legacy_name = annotations.get(legacy.LEGACY_NAME_ANNOTATION)
        if legacy_name:
            snapshot.pool_aliases[legacy_name] = pool.name
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
        named = mlb.NamedOnly(ref, doc.body.get("spec") or {})
        (snapshot.bfd_profiles if kind == "BFDProfile" else snapshot.communities).append(named)
    return ref


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


def _check_overlaps(pools: list[mlb.IPAddressPool]) -> list[tuple[InputError, ObjectRef]]:
    """MetalLB refuses any two overlapping CIDRs or ranges, in one pool or across pools [M2]:
    one problem per address that overlaps an earlier one."""
    entries = [
        (address.range, pool, index)
        for pool in pools
        for index, address in enumerate(pool.addresses)
    ]
    entries.sort(key=lambda e: (e[0].version, int(e[0].first)))
    out: list[tuple[InputError, ObjectRef]] = []
    widest: tuple[AddressRange, mlb.IPAddressPool, int] | None = None
    for entry in entries:
        right, right_pool, right_index = entry
        if widest is not None and widest[0].overlaps(right):
            _, left_pool, left_index = widest
            out.append((InputError(
                f"{right_pool.addresses[right_index].text} overlaps"
                f" {left_pool.addresses[left_index].text} of {left_pool.ref}"
                f" ({left_pool.ref.origin}); MetalLB refuses overlapping pools",
                source=right_pool.ref.origin,
                obj=str(right_pool.ref),
                field=f"spec.addresses[{right_index}]",
            ), right_pool.ref))
        if widest is None or widest[0].version != right.version or (
            int(right.last) > int(widest[0].last)
        ):
            widest = entry
    return out


def _check_services(snapshot: ClusterSnapshot) -> list[tuple[InputError, ObjectRef]]:
    """Duplicate Services, and IPs that are not IPs (annotations, loadBalancerIP, status)."""
    out: list[tuple[InputError, ObjectRef]] = []
    seen: dict[tuple[str, str], Service] = {}
    for service in snapshot.services:
        key = (service.namespace, service.name)
        if key in seen:
            out.append((InputError(
                f"duplicate Service: already defined in {seen[key].ref.origin}",
                source=service.ref.origin, obj=str(service.ref), field="metadata.name",
            ), service.ref))
            continue
        seen[key] = service
        try:
            service.requested_ips()  # validates the annotations and spec.loadBalancerIP
            service.current_ips()
        except InputError as error:
            out.append((error, service.ref))
    return out


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
