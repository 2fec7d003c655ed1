"""Typed, validated views of MetalLB's BGP objects: BGPPeer, BGPAdvertisement, BFDProfile,
Community [M4].

The views follow MetalLB's own parsing (``internal/config/config.go``: ``peerFromCR``,
``parseTimers``, ``bgpAdvertisementFromCR``, ``bfdProfileFromCR``, ``communitiesFromCrs``;
``internal/bgp/community/community.go``): anything MetalLB would refuse raises InputError naming
the object and the field. A peer's password is never kept: only whether it has one.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from migrate.model.metallb import (
    BGPAdvertisement,
    BGPPeer,
    NamedOnly,
    ObjectRef,
    _fail,
    _selectors,
    _str_list,
)
from migrate.model.selectors import matches

if TYPE_CHECKING:
    from migrate.sources.snapshot import ClusterSnapshot


def _flag(value: bool | None, default: bool) -> bool:
    """A boolean field (its type checked where the document was read), or its default."""
    return default if value is None else value

MAX_ASN = 4294967295
DYNAMIC_ASN_MODES = ("internal", "external")
# Fields of v1beta2 that a v1beta1 BGPPeer does not have: the API server prunes them [M4].
V1BETA2_ONLY = ("dynamicASN", "interface", "connectTime", "passwordSecret",
                "enableGracefulRestart", "vrf", "disableMP", "dualStackAddressFamily", "localASN")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
                 "m": 60.0, "h": 3600.0}
_DIGITS = re.compile(r"^[0-9]+$")


def go_duration_seconds(text: str) -> float | None:
    """Seconds in a Go duration string (``time.ParseDuration``: ``90s``, ``1m30s``, ``0``);
    None when it is not one."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return 0.0
    if not body:
        return None
    total, position = 0.0, 0
    while position < len(body):
        match = _DURATION_PART.match(body, position)
        if match is None:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    return sign * total


def _int(ref: ObjectRef, value: Any, field: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _fail(ref, field, f"must be an integer from {low} to {high}")
    return value


def _duration(ref: ObjectRef, value: Any, field: str) -> float | None:
    if value is None:
        return None
    seconds = go_duration_seconds(value) if isinstance(value, str) else None
    if seconds is None:
        raise _fail(ref, field, f"{value!r} is not a duration like 90s or 1m30s")
    if seconds < 0:
        raise _fail(ref, field, "must not be negative")
    return seconds


def _ip(ref: ObjectRef, value: Any, field: str) -> str | None:
    if value is None or value == "":
        return None
    try:
        return str(ipaddress.ip_address(str(value).strip()))
    except ValueError:
        raise _fail(ref, field, f"{value!r} is not an IP address") from None


@dataclass(frozen=True)
class SecretRef:
    """A Secret MetalLB reads a peer's password from (key ``password``) [M4]."""

    name: str
    namespace: str | None


@dataclass(frozen=True)
class PeerView:
    """What MetalLB makes of one BGPPeer (v1beta1 or v1beta2, as converted to v1beta2) [M4]."""

    ref: ObjectRef
    version: str
    my_asn: int
    peer_asn: int
    """0 when ``dynamicASN`` is used."""
    dynamic_asn: str | None
    local_asn: int | None
    address: str | None
    interface: str | None
    source_address: str | None
    port: int | None
    hold_time: float | None
    """Seconds, as MetalLB's parseTimers derives them (keepalive only: 3 × keepalive)."""
    keepalive_time: float | None
    """Seconds (hold only: hold / 3)."""
    connect_time: float | None
    router_id: str | None
    node_selectors: tuple[dict[str, Any], ...]
    has_password: bool
    """A plain-text ``password`` is set; its value is never kept."""
    password_secret: SecretRef | None
    bfd_profile: str | None
    graceful_restart: bool
    ebgp_multihop: bool
    vrf: str | None
    disable_mp: bool
    dual_stack: bool
    pruned: tuple[str, ...] = ()
    """v1beta2-only fields written on a v1beta1 object: the API server drops them."""

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def session_asn(self) -> int:
        """The ASN this side of the session uses: ``localASN`` (FRR's local-as replace-as)
        when set, else ``myASN``."""
        return self.local_asn or self.my_asn

    @property
    def is_ibgp(self) -> bool:
        if self.dynamic_asn:
            return self.dynamic_asn == "internal"
        return self.peer_asn == self.session_asn

    @property
    def family(self) -> int | None:
        """4 or 6 for the peer address; None for an unnumbered (interface) peer."""
        return ipaddress.ip_address(self.address).version if self.address else None


def peer_view(peer: BGPPeer) -> PeerView:
    """Validate a BGPPeer as MetalLB's peerFromCR does and return its typed view."""
    ref, spec, version = peer.ref, peer.fields, peer.version
    pruned = tuple(key for key in V1BETA2_ONLY if key in spec) if version == "v1beta1" else ()
    v2 = {k: v for k, v in spec.items() if k not in pruned}
    my_asn = _int(ref, v2.get("myASN"), "spec.myASN", 0, MAX_ASN)
    if not my_asn:
        raise _fail(ref, "spec.myASN", "is required (MetalLB refuses a missing local ASN)")
    peer_asn = _int(ref, v2.get("peerASN"), "spec.peerASN", 0, MAX_ASN) or 0
    dynamic = v2.get("dynamicASN") or None
    if dynamic is not None and dynamic not in DYNAMIC_ASN_MODES:
        raise _fail(ref, "spec.dynamicASN", f"must be internal or external, not {dynamic!r}")
    if not peer_asn and dynamic is None:
        raise _fail(ref, "spec.peerASN", "is required (or dynamicASN)")
    if peer_asn and dynamic is not None:
        raise _fail(ref, "spec.dynamicASN", "cannot be set together with peerASN")
    local_asn = _int(ref, v2.get("localASN"), "spec.localASN", 1, MAX_ASN)
    address = _ip(ref, v2.get("peerAddress"), "spec.peerAddress")
    interface = v2.get("interface") or None
    if address is None and interface is None:
        raise _fail(ref, "spec.peerAddress", "is required (or interface)")
    if address is not None and interface is not None:
        raise _fail(ref, "spec.interface", "cannot be set together with peerAddress")
    multihop = _flag(v2.get("ebgpMultiHop"), False)
    if multihop and peer_asn and peer_asn == my_asn:
        raise _fail(ref, "spec.ebgpMultiHop", "is set for an iBGP peer (MetalLB refuses it)")
    # 0 is unset (179): v1beta1 allows it, and its conversion to v1beta2 carries it over.
    port = _int(ref, v2.get("peerPort"), "spec.peerPort", 0, 16384) or None
    hold, keepalive = _timers(ref, v2)
    connect = _duration(ref, v2.get("connectTime"), "spec.connectTime")
    if connect is not None and (not 1 <= connect <= 65535 or connect != int(connect)):
        raise _fail(ref, "spec.connectTime", "must be a whole number of seconds from 1 to 65535")
    password = v2.get("password")
    if password is not None and not isinstance(password, str):
        raise _fail(ref, "spec.password", "must be a string")
    secret = _secret_ref(ref, v2.get("passwordSecret"))
    if password and secret is not None:
        raise _fail(ref, "spec.passwordSecret",
                    "cannot be set together with password (MetalLB refuses both)")
    bfd = v2.get("bfdProfile")
    vrf = v2.get("vrf")
    return PeerView(
        ref=ref, version=version, my_asn=my_asn, peer_asn=peer_asn, dynamic_asn=dynamic,
        local_asn=local_asn, address=address, interface=str(interface) if interface else None,
        source_address=_ip(ref, v2.get("sourceAddress"), "spec.sourceAddress"), port=port,
        hold_time=hold, keepalive_time=keepalive, connect_time=connect,
        router_id=_ip(ref, v2.get("routerID"), "spec.routerID"),
        node_selectors=tuple(_selectors(ref, v2.get("nodeSelectors"), "spec.nodeSelectors")),
        has_password=bool(password), password_secret=secret,
        bfd_profile=str(bfd) if bfd else None,
        graceful_restart=_flag(v2.get("enableGracefulRestart"), False),
        ebgp_multihop=multihop, vrf=str(vrf) if vrf else None,
        disable_mp=_flag(v2.get("disableMP"), False),
        dual_stack=_flag(v2.get("dualStackAddressFamily"), False),
        pruned=pruned,
    )


def _timers(ref: ObjectRef, spec: dict[str, Any]) -> tuple[float | None, float | None]:
    """MetalLB's parseTimers: one of hold/keepalive derives the other; hold is 0 or >= 3 s."""
    hold = _duration(ref, spec.get("holdTime"), "spec.holdTime")
    keepalive = _duration(ref, spec.get("keepaliveTime"), "spec.keepaliveTime")
    if hold is None and keepalive is None:
        return None, None
    if keepalive is None:
        assert hold is not None
        keepalive = hold / 3
    elif hold is None:
        hold = keepalive * 3
    if int(hold) != 0 and int(hold) < 3:
        raise _fail(ref, "spec.holdTime", "must be 0 or at least 3s")
    if keepalive > hold:
        raise _fail(ref, "spec.keepaliveTime", "must not be longer than holdTime")
    return hold, keepalive


def _secret_ref(ref: ObjectRef, value: Any) -> SecretRef | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _fail(ref, "spec.passwordSecret", "must be a Secret reference (name, namespace)")
    name = value.get("name")
    if not name:
        return None  # an empty reference, as MetalLB reads it: no password
    namespace = value.get("namespace")
    return SecretRef(str(name), str(namespace) if namespace else None)


@dataclass(frozen=True)
class Community:
    """A BGP community value: ``standard`` (``a:b``, 16-bit halves) or ``large`` (``a:b:c``)."""

    kind: str
    value: str


class CommunityError(ValueError):
    """A community value MetalLB refuses (a number out of range, a bad large marker)."""


def parse_community(text: str) -> Community | None:
    """MetalLB's community.New: ``a:b`` or ``large:a:b:c``, normalised; None when the text has
    another shape (MetalLB then treats it as an alias not defined yet)."""
    parts = text.split(":")
    if len(parts) == 2:
        if not all(_DIGITS.match(p) and int(p) <= 0xFFFF for p in parts):
            raise CommunityError(f"{text!r} is not a standard community (two numbers 0-65535)")
        return Community("standard", f"{int(parts[0])}:{int(parts[1])}")
    if len(parts) == 4:
        if parts[0] != "large" or not all(
            _DIGITS.match(p) and int(p) <= MAX_ASN for p in parts[1:]
        ):
            raise CommunityError(f"{text!r} is not a large community (large:N:N:N, 32-bit N)")
        return Community("large", ":".join(str(int(p)) for p in parts[1:]))
    return None


def community_aliases(snapshot: ClusterSnapshot) -> dict[str, Community]:
    """Every alias of every Community object; MetalLB refuses bad values and duplicates."""
    aliases: dict[str, Community] = {}
    for obj in snapshot.communities:
        items = obj.spec.get("communities") or []
        if not isinstance(items, list):
            raise _fail(obj.ref, "spec.communities", "must be a list of {name, value}")
        for index, item in enumerate(items):
            field = f"spec.communities[{index}]"
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                raise _fail(obj.ref, field, "needs a name and a value")
            try:
                value = parse_community(str(item.get("value") or ""))
            except CommunityError as exc:
                raise _fail(obj.ref, f"{field}.value", str(exc)) from None
            if value is None:
                raise _fail(obj.ref, f"{field}.value",
                            f"{item.get('value')!r} is not a community (a:b or large:a:b:c)")
            if item["name"] in aliases:
                raise _fail(obj.ref, f"{field}.name",
                            f"alias {item['name']!r} is defined twice (MetalLB refuses it)")
            aliases[item["name"]] = value
    return aliases


@dataclass(frozen=True)
class AdvertisementView:
    """What MetalLB makes of one BGPAdvertisement [M4]."""

    ref: ObjectRef
    aggregation_length: int
    aggregation_length_v6: int
    local_pref: int
    communities: tuple[str, ...]
    """As written: values or alias names."""
    node_selectors: tuple[dict[str, Any], ...]
    service_selectors: tuple[dict[str, Any], ...]
    peers: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.ref.name


def advertisement_view(ad: BGPAdvertisement) -> AdvertisementView:
    """Validate a BGPAdvertisement as MetalLB's bgpAdvertisementFromCR does."""
    ref, spec = ad.ref, ad.fields
    length = _int(ref, spec.get("aggregationLength"), "spec.aggregationLength", 1, 32)
    length6 = _int(ref, spec.get("aggregationLengthV6"), "spec.aggregationLengthV6", 0, 128)
    services = tuple(_selectors(ref, spec.get("serviceSelectors"), "spec.serviceSelectors"))
    if services and ((length or 32) != 32 or (length6 if length6 is not None else 128) != 128):
        raise _fail(ref, "spec.serviceSelectors", "cannot be used with an aggregation length"
                    " other than 32 / 128 (MetalLB refuses it)")
    return AdvertisementView(
        ref=ref,
        aggregation_length=32 if length is None else length,
        aggregation_length_v6=128 if length6 is None else length6,
        local_pref=_int(ref, spec.get("localPref"), "spec.localPref", 0, MAX_ASN) or 0,
        communities=tuple(_str_list(ref, spec.get("communities"), "spec.communities")),
        node_selectors=tuple(_selectors(ref, spec.get("nodeSelectors"), "spec.nodeSelectors")),
        service_selectors=services,
        peers=ad.peers,
    )


@dataclass(frozen=True)
class BFDView:
    """A BFDProfile; unset values are FRR's defaults (300 ms intervals, multiplier 3) [M4]."""

    ref: ObjectRef
    receive_interval: int
    transmit_interval: int
    detect_multiplier: int
    echo_mode: bool
    passive_mode: bool

    @property
    def detection_ms(self) -> int:
        """How long a silent link takes to be declared down (multiplier × receive interval)."""
        return self.detect_multiplier * self.receive_interval


def bfd_view(profile: NamedOnly) -> BFDView:
    """Validate a BFDProfile as MetalLB's bfdProfileFromCR does."""
    ref, spec = profile.ref, profile.spec
    for key, low, high in (("echoInterval", 10, 60000), ("minimumTtl", 1, 254)):
        _int(ref, spec.get(key), f"spec.{key}", low, high)
    return BFDView(
        ref=ref,
        receive_interval=_int(ref, spec.get("receiveInterval"), "spec.receiveInterval", 10,
                              60000) or 300,
        transmit_interval=_int(ref, spec.get("transmitInterval"), "spec.transmitInterval", 10,
                               60000) or 300,
        detect_multiplier=_int(ref, spec.get("detectMultiplier"), "spec.detectMultiplier", 2,
                               255) or 3,
        echo_mode=_flag(spec.get("echoMode"), False),
        passive_mode=_flag(spec.get("passiveMode"), False),
    )


def _check_aggregation(snapshot: ClusterSnapshot, ad: BGPAdvertisement) -> None:
    """MetalLB's validateBGPAdvPerPool: an aggregation length may not be shorter than the
    widest CIDR of an address of a pool the advertisement selects."""
    view = advertisement_view(ad)
    pools = [p for p in snapshot.pools if ad.selects_all_pools or p.name in ad.pool_names
             or any(matches(s, p.labels) for s in ad.pool_selectors)]
    for pool in pools:
        for address in pool.addresses:
            widest = min(n.prefixlen for n in address.range.networks())
            v4 = address.range.version == 4
            length = view.aggregation_length if v4 else view.aggregation_length_v6
            if length < widest:
                raise _fail(ad.ref, "spec.aggregationLength" if v4 else
                            "spec.aggregationLengthV6",
                            f"{length} is shorter than /{widest} of {address.text} in pool"
                            f" {pool.name} (MetalLB refuses it)")


def validate(snapshot: ClusterSnapshot) -> None:
    """Check every BGP object of a snapshot as MetalLB would (raises InputError)."""
    for peer in snapshot.bgp_peers:
        peer_view(peer)
    for ad in snapshot.bgp_advertisements:
        advertisement_view(ad)
    for profile in snapshot.bfd_profiles:
        bfd_view(profile)
    aliases = community_aliases(snapshot)
    for ad in snapshot.bgp_advertisements:
        _check_aggregation(snapshot, ad)
        for index, text in enumerate(ad.fields.get("communities") or []):
            if text in aliases:
                continue
            try:
                parse_community(text)
            except CommunityError as exc:
                raise _fail(ad.ref, f"spec.communities[{index}]", str(exc)) from None
