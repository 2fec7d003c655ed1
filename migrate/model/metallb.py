"""Typed, validated views of MetalLB objects [M1]-[M4], [M7].

The structure of every object (types, required fields, bounds) was checked where it was read
(``migrate/sources/validate.py``, from MetalLB's CRDs); these views check what MetalLB's own
validation adds (``internal/config/config.go``: address formats, duplicates, selector
operators, ranges), raising InputError naming the file, the object and the field.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import InputError
from migrate.model.addresses import AddressError, MetalLBAddress, parse_metallb_address
from migrate.model.selectors import SelectorError, normalise

GROUP = "metallb.io"
SERVED_VERSIONS = {
    "IPAddressPool": ("v1beta1",),
    "L2Advertisement": ("v1beta1",),
    "BGPAdvertisement": ("v1beta1",),
    "BGPPeer": ("v1beta1", "v1beta2"),
    "BFDProfile": ("v1beta1",),
    "Community": ("v1beta1",),
    "ServiceL2Status": ("v1beta1",),
    "ServiceBGPStatus": ("v1beta1",),
    "ConfigurationState": ("v1beta1",),
    "AddressPool": ("v1alpha1", "v1beta1"),
}
STATUS_KINDS = ("ServiceL2Status", "ServiceBGPStatus", "ConfigurationState")
DEFAULT_NAMESPACE = "metallb-system"
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


@dataclass(frozen=True)
class ObjectRef:
    """Where an object came from and how to name it in messages."""

    kind: str
    namespace: str | None
    name: str
    origin: str

    def __str__(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}" if self.namespace else (
            f"{self.kind} {self.name}"
        )

    @property
    def where(self) -> str:
        """The document and the object, as the internal-error line names them."""
        return f"{self.origin} ({self})"


def _fail(ref: ObjectRef, field_path: str | None, message: str) -> InputError:
    return InputError(message, source=ref.origin, obj=str(ref), field=field_path)


def _str_list(ref: ObjectRef, value: list[str] | None, field_path: str) -> list[str]:
    if not value:
        return []
    if len(set(value)) != len(value):
        duplicate = next(v for v in value if value.count(v) > 1)
        raise _fail(ref, field_path, f"lists {duplicate!r} twice (MetalLB refuses duplicates)")
    return list(value)


def _selectors(ref: ObjectRef, value: list[dict[str, Any]] | None, field_path: str) -> list[
    dict[str, Any]
]:
    out = []
    for index, item in enumerate(value or []):
        try:
            out.append(normalise(item, f"{field_path}[{index}]"))
        except SelectorError as exc:
            raise _fail(ref, exc.field or f"{field_path}[{index}]", str(exc)) from None
    seen: list[dict[str, Any]] = []
    for item in out:
        if item in seen:
            raise _fail(ref, field_path, "holds the same selector twice (MetalLB refuses it)")
        seen.append(item)
    return out


@dataclass(frozen=True)
class ServiceAllocation:
    """``spec.serviceAllocation`` of an IPAddressPool [M2]."""

    priority: int
    namespaces: tuple[str, ...]
    namespace_selectors: tuple[dict[str, Any], ...]
    service_selectors: tuple[dict[str, Any], ...]


@dataclass(frozen=True)
class IPAddressPool:
    """A MetalLB address pool (CRD or legacy ConfigMap) [M2][M7]."""

    ref: ObjectRef
    labels: dict[str, str]
    addresses: tuple[MetalLBAddress, ...]
    auto_assign: bool
    avoid_buggy_ips: bool
    service_allocation: ServiceAllocation | None
    legacy_protocol: str | None = None

    @property
    def name(self) -> str:
        return self.ref.name


def parse_pool(ref: ObjectRef, body: dict[str, Any]) -> IPAddressPool:
    """Validate an IPAddressPool (or legacy AddressPool) object."""
    spec = body["spec"]
    raw = spec["addresses"]
    if not raw:
        raise _fail(ref, "spec.addresses", "must be a non-empty list of CIDRs or ranges")
    addresses = []
    for index, text in enumerate(raw):
        try:
            addresses.append(parse_metallb_address(text))
        except AddressError as exc:
            raise _fail(ref, f"spec.addresses[{index}]", str(exc)) from None
    allocation = None
    raw_alloc = spec.get("serviceAllocation")
    if raw_alloc is not None:
        where = "spec.serviceAllocation"
        allocation = ServiceAllocation(
            priority=raw_alloc.get("priority") or 0,
            namespaces=tuple(_str_list(ref, raw_alloc.get("namespaces"), f"{where}.namespaces")),
            namespace_selectors=tuple(_selectors(ref, raw_alloc.get("namespaceSelectors"),
                                                 f"{where}.namespaceSelectors")),
            service_selectors=tuple(_selectors(ref, raw_alloc.get("serviceSelectors"),
                                               f"{where}.serviceSelectors")),
        )
    auto_assign = spec.get("autoAssign")
    return IPAddressPool(
        ref=ref,
        labels=_labels(body),
        addresses=tuple(addresses),
        auto_assign=True if auto_assign is None else auto_assign,
        # the legacy AddressPool has no avoidBuggyIPs: the API server prunes it [M1]
        avoid_buggy_ips=bool(spec.get("avoidBuggyIPs")) and ref.kind != "AddressPool",
        service_allocation=allocation,
        legacy_protocol=spec.get("protocol"),
    )


@dataclass(frozen=True)
class L2Advertisement:
    """A MetalLB L2Advertisement [M3]."""

    ref: ObjectRef
    pool_names: tuple[str, ...]
    pool_selectors: tuple[dict[str, Any], ...]
    node_selectors: tuple[dict[str, Any], ...]
    interfaces: tuple[str, ...]
    service_selectors: tuple[dict[str, Any], ...]
    has_preferred_node_selectors: bool = False
    implied: bool = False
    """True when no object exists: announced by a legacy pool's ``protocol`` (ConfigMap,
    AddressPool) [M7]."""

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def selects_all_pools(self) -> bool:
        """Both pool lists empty means every pool [M3]."""
        return not self.pool_names and not self.pool_selectors


def parse_l2advertisement(ref: ObjectRef, body: dict[str, Any]) -> L2Advertisement:
    """Validate an L2Advertisement object."""
    spec = body.get("spec") or {}
    return L2Advertisement(
        ref=ref,
        pool_names=tuple(_str_list(ref, spec.get("ipAddressPools"), "spec.ipAddressPools")),
        pool_selectors=tuple(
            _selectors(ref, spec.get("ipAddressPoolSelectors"), "spec.ipAddressPoolSelectors")
        ),
        node_selectors=tuple(_selectors(ref, spec.get("nodeSelectors"), "spec.nodeSelectors")),
        interfaces=tuple(_str_list(ref, spec.get("interfaces"), "spec.interfaces")),
        service_selectors=tuple(
            _selectors(ref, spec.get("serviceSelectors"), "spec.serviceSelectors")
        ),
        has_preferred_node_selectors=bool(spec.get("preferredNodeSelectors")),
    )


@dataclass(frozen=True)
class BGPAdvertisement:
    """A MetalLB BGPAdvertisement [M4]; ``migrate.model.bgp`` gives its typed view."""

    ref: ObjectRef
    pool_names: tuple[str, ...]
    pool_selectors: tuple[dict[str, Any], ...]
    peers: tuple[str, ...]
    fields: dict[str, Any] = field(default_factory=dict, repr=False)
    """The spec as written."""

    @property
    def selects_all_pools(self) -> bool:
        return not self.pool_names and not self.pool_selectors


def parse_bgpadvertisement(ref: ObjectRef, body: dict[str, Any]) -> BGPAdvertisement:
    """Validate the parts of a BGPAdvertisement the migration relies on."""
    spec = body.get("spec") or {}
    for key, low, high in (("aggregationLength", 1, 32), ("aggregationLengthV6", 0, 128)):
        value = spec.get(key)
        if value is not None and not low <= value <= high:  # internal/config/config.go
            raise _fail(ref, f"spec.{key}", f"must be an integer from {low} to {high}")
    return BGPAdvertisement(
        ref=ref,
        pool_names=tuple(_str_list(ref, spec.get("ipAddressPools"), "spec.ipAddressPools")),
        pool_selectors=tuple(
            _selectors(ref, spec.get("ipAddressPoolSelectors"), "spec.ipAddressPoolSelectors")
        ),
        peers=tuple(_str_list(ref, spec.get("peers"), "spec.peers")),
        fields=spec,
    )


@dataclass(frozen=True)
class BGPPeer:
    """A MetalLB BGPPeer (v1beta1 or v1beta2) [M4]; ``migrate.model.bgp`` gives its typed
    view."""

    ref: ObjectRef
    bfd_profile: str | None
    fields: dict[str, Any] = field(default_factory=dict, repr=False)
    """The spec as written (it may hold a password: never shown)."""
    version: str = "v1beta2"


def parse_bgppeer(ref: ObjectRef, body: dict[str, Any], version: str) -> BGPPeer:
    """Validate a BGPPeer: required ASNs and address as MetalLB requires them [M4]."""
    spec = body.get("spec")
    if not isinstance(spec, dict):
        raise _fail(ref, "spec", "is missing")
    if "myASN" not in spec:
        raise _fail(ref, "spec.myASN", "is required")
    has_asn = "peerASN" in spec or (version == "v1beta2" and "dynamicASN" in spec)
    if not has_asn:
        raise _fail(ref, "spec.peerASN", "is required")
    has_address = "peerAddress" in spec or (version == "v1beta2" and "interface" in spec)
    if not has_address:
        raise _fail(ref, "spec.peerAddress", "is required")
    for key in ("myASN", "peerASN"):
        value = spec.get(key)
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 4294967295
        ):
            raise _fail(ref, f"spec.{key}", "must be an AS number (0 to 4294967295)")
    bfd = spec.get("bfdProfile")
    return BGPPeer(ref=ref, bfd_profile=bfd if isinstance(bfd, str) and bfd else None, fields=spec,
                   version=version)


@dataclass(frozen=True)
class NamedOnly:
    """A BFDProfile or Community; ``migrate.model.bgp`` gives its typed view."""

    ref: ObjectRef
    spec: dict[str, Any] = field(default_factory=dict, repr=False)


def _labels(body: dict[str, Any]) -> dict[str, str]:
    return dict(body["metadata"].get("labels") or {})


def check_name(ref: ObjectRef) -> None:
    """MetalLB objects need a DNS-1123 name."""
    if not ref.name or len(ref.name) > 253 or not _DNS1123.match(ref.name):
        raise _fail(ref, "metadata.name", f"{ref.name!r} is not a valid Kubernetes name")


def sanitise_legacy_name(name: str) -> str:
    """Pool names from the legacy ConfigMap, made DNS-1123 like configmaptocrs does [M7]."""
    out = name.lower().replace("_", "-")[:63]
    return out.lstrip("0123456789-.") or "pool"
