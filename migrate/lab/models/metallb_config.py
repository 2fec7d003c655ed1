"""MetalLB's configuration as its controller and speakers parse it (reference/metallb.md §2,
§3, §7, §10): the whole set of MetalLB objects in its namespace becomes one configuration, or
fails as a whole.

Follows metallb ``internal/config/config.go`` (``For``: BFD profiles, peers, pools with their
L2 and BGP advertisements, communities, ``validateConfig``) and ``internal/config/validation.go``
(``ValidationFor``: native BGP refuses FRR-only settings, FRR refuses native-only ones), as of
v0.14.9 (unchanged in what is modelled through v0.16.1). Every process re-parses on each
change of a watched kind and keeps its last valid configuration when the new one fails
(``internal/k8s/controllers/config_controller.go``: "failed to parse the configuration",
the handler is not called).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import yaml

from migrate.lab.models._common import (
    Cache,
    IPAddress,
    IPRange,
    Obj,
    labels_of,
    meta,
    name_of,
    namespace_of,
    parse_go_duration,
    selector_matches,
    spec_of,
)
from migrate.lab.versions import Version, below
from migrate.model.addresses import AddressError
from migrate.model.addresses import parse_metallb_address as parse_address

METALLB_GROUP = "metallb.io"
DEFAULT_NAMESPACE = "metallb-system"
CONFIG_KINDS = ("IPAddressPool", "L2Advertisement", "BGPAdvertisement", "BGPPeer", "BFDProfile",
                "Community")
VALID_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


# --------------------------------------------------------------------------- pools


@dataclass
class MetalLBPool:
    """One parsed IPAddressPool [M2]."""

    name: str
    ranges: list[IPRange]
    auto_assign: bool = True
    avoid_buggy_ips: bool = False
    has_service_allocation: bool = False
    priority: int = 0
    namespaces: set[str] = field(default_factory=set)
    service_selectors: list[Obj] = field(default_factory=list)
    prefixes: list[int] = field(default_factory=list)
    """The prefix length of each CIDR the addresses cover (for BGP aggregation checks)."""

    def contains(self, ip: IPAddress) -> bool:
        """Whether ``ip`` is one of the pool's addresses."""
        return any(r.contains(ip) for r in self.ranges)

    def allocatable(self, ip: IPAddress) -> bool:
        """avoidBuggyIPs skips every IPv4 address ending in .0 or .255 [M2]."""
        if self.avoid_buggy_ips and ip.version == 4:
            return int(ip) & 0xFF not in (0, 255)
        return True

    def compatible(self, svc: Obj) -> bool:
        """serviceAllocation filter (isPoolCompatibleWithService) [M2]."""
        if not self.has_service_allocation:
            return True
        if self.namespaces and namespace_of(svc) not in self.namespaces:
            return False
        return not self.service_selectors or any(
            selector_matches(s, labels_of(svc)) for s in self.service_selectors)

    @property
    def has_ipv6(self) -> bool:
        """Whether any address of the pool is IPv6."""
        return any(r.version == 6 for r in self.ranges)


def parse_metallb_address(text: str, pool: str) -> IPRange:
    """``CIDR`` or ``start-end`` (ParseCIDR) [M2]; a bare IP is invalid. ValueError otherwise."""
    try:
        parsed = parse_address(text)
    except AddressError as exc:
        what = "IP range" if "-" in text else "CIDR"
        raise ValueError(f"invalid {what} {text!r} in pool {pool!r}: {exc}") from None
    return IPRange(parsed.range.first, parsed.range.last)


def selector_error(selector: object, what: str) -> str:
    """Why LabelSelectorAsSelector would refuse ``selector`` ("" when it accepts it)."""
    if not isinstance(selector, dict):
        return f"invalid label selector {selector!r} in {what}"
    for expr in selector.get("matchExpressions") or []:
        operator = expr.get("operator") if isinstance(expr, dict) else None
        values = expr.get("values") or [] if isinstance(expr, dict) else []
        if operator not in VALID_OPERATORS:
            return f"invalid label selector operator {operator!r} in {what}"
        if operator in ("In", "NotIn") and not values:
            return f"values must be non-empty for operator {operator} in {what}"
        if operator in ("Exists", "DoesNotExist") and values:
            return f"values must be empty for operator {operator} in {what}"
    return ""


def parse_pools(objects: list[Obj], namespaces: list[Obj]) -> tuple[dict[str, MetalLBPool], str]:
    """Parse IPAddressPools (in the order given); the error is "" when they are valid.

    Overlapping addresses (within or across pools), malformed addresses, empty address lists
    and invalid selectors make the whole configuration invalid [M2][M10].
    """
    pools: dict[str, MetalLBPool] = {}
    seen: list[tuple[IPRange, str, str]] = []
    for obj in objects:
        name = name_of(obj)
        if name in pools:
            return {}, f"duplicate definition of pool {name!r}"
        spec = spec_of(obj)
        addresses = spec.get("addresses") or []
        if not addresses:
            return {}, f"pool {name!r} has no addresses"
        ranges: list[IPRange] = []
        prefixes: list[int] = []
        for text in addresses:
            try:
                rng = parse_metallb_address(str(text), name)
            except ValueError as exc:
                return {}, str(exc)
            for other, other_pool, other_text in seen:
                if rng.overlaps(other):
                    return {}, (f"CIDR {text!r} in pool {name!r} overlaps with already defined "
                                f"CIDR {other_text!r} in pool {other_pool!r}")
            seen.append((rng, name, str(text)))
            ranges.append(rng)
            prefixes.append(min(n.prefixlen for n in rng.networks()))
        pool = MetalLBPool(
            name=name,
            ranges=ranges,
            auto_assign=spec.get("autoAssign") is not False,
            avoid_buggy_ips=bool(spec.get("avoidBuggyIPs")),
            prefixes=prefixes,
        )
        allocation = spec.get("serviceAllocation")
        if isinstance(allocation, dict):
            pool.has_service_allocation = True
            pool.priority = int(allocation.get("priority") or 0)
            listed = [str(n) for n in allocation.get("namespaces") or []]
            if len(listed) != len(set(listed)):
                return {}, "duplicate definition in namespaces field"
            pool.namespaces = set(listed)
            for selector in allocation.get("namespaceSelectors") or []:
                error = selector_error(selector, f"ip pool {name}")
                if error:
                    return {}, error
                pool.namespaces |= {
                    name_of(ns) for ns in namespaces if selector_matches(selector, labels_of(ns))}
            for selector in allocation.get("serviceSelectors") or []:
                error = selector_error(selector, f"ip pool {name}")
                if error:
                    return {}, error
            pool.service_selectors = list(allocation.get("serviceSelectors") or [])
        pools[name] = pool
    return pools, ""


def _duplicates(items: list[object], what: str) -> str:
    texts = [repr(i) for i in items]
    if len(texts) != len(set(texts)):
        return f"duplicate definition of {what}"
    return ""


def l2advertisement_error(obj: Obj) -> str:
    """Duplicate entries or invalid selectors in an L2Advertisement make the config invalid
    (``l2AdvertisementFromCR``) [M3]."""
    spec = spec_of(obj)
    for list_name in ("ipAddressPools", "ipAddressPoolSelectors", "nodeSelectors",
                      "interfaces", "serviceSelectors"):
        if _duplicates(list(spec.get(list_name) or []), list_name):
            return f"duplicate entry in {list_name} of L2Advertisement {name_of(obj)!r}"
    for list_name in ("ipAddressPoolSelectors", "nodeSelectors", "serviceSelectors"):
        for selector in spec.get(list_name) or []:
            error = selector_error(selector, f"L2Advertisement {name_of(obj)}")
            if error:
                return error
    return ""


# --------------------------------------------------------------------------- BGP kinds


def community_error(value: str) -> str:
    """``community.New``: ``NNNNN:NNNNN`` (16-bit halves) or ``large:A:B:C`` (32-bit parts)."""
    parts = value.split(":")
    if len(parts) == 2:
        if all(p.isdigit() and int(p) <= 0xFFFF for p in parts):
            return ""
        return f"invalid community value {value!r}"
    if len(parts) == 4:
        if parts[0] != "large":
            return f"invalid marker for large community {value!r}"
        if all(p.isdigit() and int(p) <= 0xFFFFFFFF for p in parts[1:]):
            return ""
        return f"invalid community value {value!r}"
    return f"invalid community format {value!r}"


def is_large_community(value: str) -> bool:
    """A large community (native BGP supports only legacy ones)."""
    return value.startswith("large:")


def _communities(objects: list[Obj]) -> tuple[dict[str, str], str]:
    """``communitiesFromCrs``: alias name -> value."""
    aliases: dict[str, str] = {}
    for obj in objects:
        for entry in spec_of(obj).get("communities") or []:
            alias = str(entry.get("name") or "")
            value = str(entry.get("value") or "")
            error = community_error(value)
            if error:
                return {}, f"parsing community {alias!r}: {error}"
            if alias in aliases:
                return {}, f"duplicate definition of community {alias!r}"
            aliases[alias] = value
    return aliases, ""


def _duration(value: object) -> float | None:
    if value in (None, ""):
        return None
    seconds = parse_go_duration(str(value), -1.0)
    return None if seconds < 0 else seconds


def _int(value: object) -> int:
    try:
        return int(str(value)) if value not in (None, "") else 0
    except ValueError:
        return -1


def peer_error(obj: Obj, bfd_profiles: set[str], secrets: dict[str, Obj]) -> str:
    """``peerFromCR`` and its checks in ``peersFor``."""
    spec = spec_of(obj)
    name = name_of(obj)
    my_asn = _int(spec.get("myASN"))
    asn = _int(spec.get("peerASN"))
    dynamic = str(spec.get("dynamicASN") or "")
    if my_asn == 0:
        return f"parsing peer {name}: missing local ASN"
    if asn == 0 and not dynamic:
        return f"parsing peer {name}: missing peer ASN and dynamicASN"
    if asn != 0 and dynamic:
        return f"parsing peer {name}: both peer ASN and dynamicASN specified"
    if dynamic and dynamic not in ("internal", "external"):
        return f"parsing peer {name}: invalid dynamicASN {dynamic}"
    if asn == my_asn and spec.get("ebgpMultiHop"):
        return f"parsing peer {name}: invalid ebgp-multihop parameter set for an ibgp peer"
    try:
        ipaddress.ip_address(str(spec.get("peerAddress") or ""))
    except ValueError:
        return f"parsing peer {name}: invalid BGPPeer address {spec.get('peerAddress')!r}"
    hold, keepalive = _duration(spec.get("holdTime")), _duration(spec.get("keepaliveTime"))
    if hold is not None or keepalive is not None:
        if hold is None:
            hold = (keepalive or 0.0) * 3
        if keepalive is None:
            keepalive = hold / 3
        if int(hold) != 0 and int(hold) < 3:
            return f"parsing peer {name}: invalid BGPPeer timers: invalid hold time " \
                f"{spec.get('holdTime')!r}: must be 0 or >=3s"
        if keepalive > hold:
            return f"parsing peer {name}: invalid BGPPeer timers: invalid keepaliveTime " \
                f"{spec.get('keepaliveTime')!r}, must be lower than holdTime"
    for field_name, what in (("routerID", "router ID"), ("sourceAddress", "source IP")):
        value = spec.get(field_name)
        if value:
            try:
                ipaddress.ip_address(str(value))
            except ValueError:
                return f"parsing peer {name}: invalid {what} {value!r}"
    selectors = list(spec.get("nodeSelectors") or [])
    if _duplicates(selectors, "nodeSelectors"):
        return f"parsing peer {name}: duplicate definition of nodeSelectors"
    for selector in selectors:
        error = selector_error(selector, f"peer {name} node selector")
        if error:
            return f"parsing peer {name}: {error}"
    secret_ref = spec.get("passwordSecret") or {}
    if spec.get("password") and secret_ref.get("name"):
        return (f"parsing peer {name}: can not have both password and secret ref set in peer "
                f"config {namespace_of(obj)!r}/{name!r}")
    if secret_ref.get("name"):
        secret = secrets.get(str(secret_ref["name"]))
        if secret is None:
            return f"parsing peer {name}: secret ref not found for peer config " \
                f"{namespace_of(obj)!r}/{name!r}"
        if secret.get("type") != "kubernetes.io/basic-auth":
            return f"parsing peer {name}: secret type mismatch, type " \
                "'kubernetes.io/basic-auth' is expected"
        if "password" not in (secret.get("data") or {}) and "password" not in (
                secret.get("stringData") or {}):
            return f"parsing peer {name}: password not specified in the secret"
    profile = str(spec.get("bfdProfile") or "")
    if profile and profile not in bfd_profiles:
        return f"peer {name} referencing non existing bfd profile {profile}"
    return ""


BFD_RANGES = (("detectMultiplier", 2, 255), ("receiveInterval", 10, 60000),
              ("transmitInterval", 10, 60000), ("minimumTtl", 1, 254),
              ("echoInterval", 10, 60000))


def bfd_error(obj: Obj) -> str:
    """``bfdProfileFromCR``: each value within its range."""
    spec = spec_of(obj)
    for field_name, low, high in BFD_RANGES:
        value = spec.get(field_name)
        if value is None:
            continue
        number = _int(value)
        if not low <= number <= high:
            return (f"parsing bfd profile {name_of(obj)}: invalid value {value}, must be in "
                    f"{low}-{high} range")
    return ""


def bgp_advertisement_error(obj: Obj, communities: dict[str, str],
                            pools: dict[str, MetalLBPool], pool_objs: list[Obj]) -> str:
    """``bgpAdvertisementFromCR`` and ``validateBGPAdvPerPool`` for one advertisement."""
    spec = spec_of(obj)
    name = name_of(obj)
    for list_name in ("ipAddressPools", "communities", "peers", "ipAddressPoolSelectors",
                      "nodeSelectors"):
        if _duplicates(list(spec.get(list_name) or []), list_name):
            return f"BGPAdvertisement {name}: duplicate definition of {list_name}"
    for list_name in ("ipAddressPoolSelectors", "nodeSelectors"):
        for selector in spec.get(list_name) or []:
            error = selector_error(selector, f"BGPAdvertisement {name}")
            if error:
                return error
    length = spec.get("aggregationLength")
    length = 32 if length is None else _int(length)
    if length > 32:
        return f"BGPAdvertisement {name}: invalid aggregation length {length} for IPv4"
    length_v6 = spec.get("aggregationLengthV6")
    length_v6 = 128 if length_v6 is None else _int(length_v6)
    if length_v6 > 128:
        return f"BGPAdvertisement {name}: invalid aggregation length {length_v6} for IPv6"
    for value in spec.get("communities") or []:
        text = str(value)
        if text in communities:
            continue
        error = community_error(text)
        if error:
            return f"BGPAdvertisement {name}: invalid community {text!r} in BGP advertisement"
    for pool in advertised_pools(spec, pools, pool_objs):
        for rng, prefix in zip(pool.ranges, pool.prefixes, strict=False):
            limit = length if rng.version == 4 else length_v6
            if limit < prefix:
                return (f"invalid aggregation length {limit}: prefix {prefix} in this pool is "
                        f"more specific than the aggregation length for addresses {rng}")
    return ""


def advertised_pools(spec: Obj, pools: dict[str, MetalLBPool],
                     pool_objs: list[Obj]) -> list[MetalLBPool]:
    """The pools an advertisement names or selects; all of them when it does neither."""
    names = [str(n) for n in spec.get("ipAddressPools") or []]
    selectors = list(spec.get("ipAddressPoolSelectors") or [])
    if not names and not selectors:
        return list(pools.values())
    chosen = {n for n in names if n in pools}
    for obj in pool_objs:
        if any(selector_matches(s, labels_of(obj)) for s in selectors):
            chosen.add(name_of(obj))
    return [pools[n] for n in sorted(chosen) if n in pools]


def validation_error(bgp_type: str, peers: list[Obj], bfds: list[Obj], bgp_advs: list[Obj],
                     communities: list[Obj], pools: dict[str, MetalLBPool],
                     pool_objs: list[Obj]) -> str:
    """``ValidationFor(bgpType)``: native refuses FRR-only settings (``DiscardFRROnly``), FRR
    and FRR-K8s refuse native-only ones (``DiscardNativeOnly``)."""
    if bgp_type == "native":
        for peer in peers:
            spec = spec_of(peer)
            address = spec.get("peerAddress")
            for field_name, what in (("bfdProfile", "bfd-profile"), ("vrf", "vrf"),
                                     ("connectTime", "connect time"),
                                     ("enableGracefulRestart", "EnableGracefulRestart flag"),
                                     ("disableMP", "disable MP flag"),
                                     ("dynamicASN", "dynamicASN")):
                if spec.get(field_name):
                    return f"peer {address} has {what} set on native bgp mode"
            keepalive = _duration(spec.get("keepaliveTime"))
            if keepalive:
                return f"peer {address} has keepalive-time set on native bgp mode"
        if bfds:
            return "bfd profiles section set"
        if bgp_advs:
            for adv in bgp_advs:
                for pool in advertised_pools(spec_of(adv), pools, pool_objs):
                    if pool.has_ipv6:
                        return f"pool {pool.name!r} has ipv6 CIDR, native bgp mode does not " \
                            "support ipv6"
        for adv in bgp_advs:
            for value in spec_of(adv).get("communities") or []:
                if is_large_community(str(value)) and not community_error(str(value)):
                    return (f"native BGP mode only supports legacy communities, BGP "
                            f"advertisement {name_of(adv)!r} has non legacy community {value!r}")
        for obj in communities:
            for entry in spec_of(obj).get("communities") or []:
                value = str(entry.get("value") or "")
                if is_large_community(value) and not community_error(value):
                    return (f"native BGP mode only supports legacy communities, BGP community "
                            f"CR {name_of(obj)!r} has non legacy community {value!r}")
        return ""
    if bgp_type in ("frr", "frr-k8s"):
        if len(peers) > 1:
            router_id = spec_of(peers[0]).get("routerID") or ""
            seen: set[tuple[str, str, str]] = set()
            for peer in peers:
                spec = spec_of(peer)
                if (spec.get("routerID") or "") != router_id:
                    return (f"peer {spec.get('routerID')} has RouterID different from "
                            f"{router_id}, in FRR mode all RouterID must be equal")
                key = (str(spec.get("peerAddress")), str(spec.get("peerPort") or ""),
                       str(spec.get("vrf") or ""))
                if key in seen:
                    return f"peer {spec.get('peerAddress')} already exists, FRR mode doesn't " \
                        "support duplicate BGPPeers"
                seen.add(key)
        for peer in peers:
            for other in peers[1:]:
                a, b = spec_of(peer), spec_of(other)
                if a.get("myASN") != b.get("myASN") and (a.get("vrf") or "") == (
                        b.get("vrf") or ""):
                    return (f"peer {a.get('peerAddress')} has myAsn different from "
                            f"{b.get('peerAddress')}, in FRR mode all myAsn must be equal for "
                            "the same VRF")
    return ""


# --------------------------------------------------------------------------- the whole config


@dataclass
class MetalLBConfig:
    """A configuration a MetalLB process accepted: pools, L2Advertisements, BGP kinds."""

    pools: dict[str, MetalLBPool]
    pool_labels: dict[str, dict[str, str]]
    advertisements: list[Obj]
    legacy: bool = False
    bgp_peers: list[Obj] = field(default_factory=list)
    """The BGPPeers, as written (v1beta2) [M4]."""
    bgp_advertisements: list[Obj] = field(default_factory=list)
    communities: dict[str, str] = field(default_factory=dict)
    """Community alias -> value."""
    secrets: dict[str, Obj] = field(default_factory=dict)
    """Secrets of MetalLB's namespace by name (a peer's ``passwordSecret``)."""
    signature: str = ""
    """What changes when the configuration does (a process ignores a re-parse that gives the
    same, as ``config_controller.go`` does with reflect.DeepEqual)."""

    def pool_for(self, ips: list[IPAddress]) -> MetalLBPool | None:
        """The pool holding all of a Service's IPs (poolFor)."""
        for pool in self.pools.values():
            if all(pool.contains(ip) for ip in ips):
                return pool
        return None

    def bgp_advertisements_for(self, pool: str) -> list[Obj]:
        """The BGPAdvertisements of a pool (the same pool-selection rule as L2) [M4]."""
        return [adv for adv in self.bgp_advertisements
                if selects_pool(spec_of(adv), pool, self.pool_labels.get(pool, {}))]

    def advertisements_for(self, pool: str) -> list[Obj]:
        """Pool-selection rule [M3]: both lists empty = all pools; else names ∪ selectors."""
        return [adv for adv in self.advertisements
                if selects_pool(spec_of(adv), pool, self.pool_labels.get(pool, {}))]


def selects_pool(spec: Obj, pool: str, labels: dict[str, str]) -> bool:
    """Whether an advertisement's ``ipAddressPools`` / ``ipAddressPoolSelectors`` select a pool:
    both empty = every pool [M3][M4]."""
    names = [str(n) for n in spec.get("ipAddressPools") or []]
    selectors = list(spec.get("ipAddressPoolSelectors") or [])
    return (not names and not selectors) or pool in names or any(
        selector_matches(s, labels) for s in selectors)


def parse_config(view: Cache, namespace: str, *, version: Version | None,
                 bgp_type: str = "native", legacy_name: str = "config"
                 ) -> tuple[MetalLBConfig | None, str]:
    """The configuration of MetalLB's namespace as a process of ``version`` parses it, or
    None and why it fails (``config.For``). Before v0.13 (or with no IPAddressPool but a
    ConfigMap holding ``address-pools``) the legacy ConfigMap is the configuration [M7]."""
    pool_objs = view.list(METALLB_GROUP, "IPAddressPool", namespace)
    legacy = legacy_config(view, namespace, version, legacy_name, bool(pool_objs))
    if legacy is not None:
        pools_l, advs_l = legacy
        parsed, error = parse_pools(pools_l, view.list("", "Namespace"))
        if error:
            return None, error
        return MetalLBConfig(parsed, {}, advs_l, legacy=True,
                             signature=repr((pools_l, advs_l))), ""
    advs = view.list(METALLB_GROUP, "L2Advertisement", namespace)
    bgp_advs = view.list(METALLB_GROUP, "BGPAdvertisement", namespace)
    peers = view.list(METALLB_GROUP, "BGPPeer", namespace)
    bfds = view.list(METALLB_GROUP, "BFDProfile", namespace)
    communities = view.list(METALLB_GROUP, "Community", namespace)
    secrets = {name_of(s): s for s in view.list("", "Secret", namespace)}
    namespaces = view.list("", "Namespace")
    pools, error = parse_pools(pool_objs, namespaces)
    if not error:
        error = validation_error(bgp_type, peers, bfds, bgp_advs, communities, pools, pool_objs)
    if not error:
        profiles: set[str] = set()
        for bfd in bfds:
            error = bfd_error(bfd)
            if error:
                break
            if name_of(bfd) in profiles:
                error = f"found duplicate bfd profile name {name_of(bfd)}"
                break
            profiles.add(name_of(bfd))
    if not error:
        seen_peers: list[Obj] = []
        for peer in peers:
            error = peer_error(peer, {name_of(b) for b in bfds}, secrets)
            if error:
                break
            if any(spec_of(p) == spec_of(peer) for p in seen_peers):
                error = f"peer {name_of(peer)} already exists"
                break
            seen_peers.append(peer)
    aliases: dict[str, str] = {}
    if not error:
        aliases, error = _communities(communities)
    if not error:
        error = next((e for e in map(l2advertisement_error, advs) if e), "")
    if not error:
        specs = [repr(spec_of(a)) for a in bgp_advs]
        if len(specs) != len(set(specs)):
            error = "duplicate definition of bgpadvertisements"
    if not error:
        error = next((e for a in bgp_advs
                      if (e := bgp_advertisement_error(a, aliases, pools, pool_objs))), "")
    if not error:
        error = _bfd_echo_error(pools, bgp_advs, peers, bfds, pool_objs)
    if error:
        return None, error
    signature = repr([(name_of(o), spec_of(o), labels_of(o))
                      for o in pool_objs + advs + bgp_advs + peers + bfds + communities]
                     + [labels_of(n) for n in namespaces]
                     + [(n, secret.get("data"), secret.get("stringData"))
                        for n, secret in sorted(secrets.items())])
    return MetalLBConfig(pools, {name_of(p): labels_of(p) for p in pool_objs}, advs,
                         bgp_peers=peers, bgp_advertisements=bgp_advs, communities=aliases,
                         secrets=secrets, signature=signature), ""


def _bfd_echo_error(pools: dict[str, MetalLBPool], bgp_advs: list[Obj], peers: list[Obj],
                    bfds: list[Obj], pool_objs: list[Obj]) -> str:
    """``validateConfig``: no BFD echo towards a peer that gets IPv6 advertisements."""
    echo = {name_of(b) for b in bfds if spec_of(b).get("echoMode")}
    if not echo:
        return ""
    for adv in bgp_advs:
        named = set(spec_of(adv).get("peers") or [])
        for pool in advertised_pools(spec_of(adv), pools, pool_objs):
            if not pool.has_ipv6:
                continue
            for peer in peers:
                if (not named or name_of(peer) in named) and spec_of(peer).get(
                        "bfdProfile") in echo:
                    return (f"pool {pool.name} has bgpadvertisement {name_of(adv)} which "
                            f"references peer {name_of(peer)} which has bfd echo enabled, "
                            "which is not possible")
    return ""


def legacy_config(view: Cache, namespace: str, version: Version | None, name: str,
                  has_pools: bool) -> tuple[list[Obj], list[Obj]] | None:
    """Pools and L2Advertisements from the ≤0.12 ConfigMap, when that is the configuration
    [M7]: a MetalLB older than 0.13, or one with no IPAddressPool but such a ConfigMap. Every
    ``layer2`` pool is announced from every node on every interface."""
    if has_pools and not below(version, 0, 13):
        return None
    document = _legacy_document(view.get("", "ConfigMap", name, namespace))
    if document is None:
        return None
    pools: list[Obj] = []
    advs: list[Obj] = []
    for entry in document.get("address-pools") or []:
        if not isinstance(entry, dict):
            continue
        pool_name = str(entry.get("name", ""))
        spec: Obj = {"addresses": [str(a) for a in entry.get("addresses") or []]}
        if entry.get("auto-assign") is not None:
            spec["autoAssign"] = bool(entry["auto-assign"])
        if entry.get("avoid-buggy-ips") is not None:
            spec["avoidBuggyIPs"] = bool(entry["avoid-buggy-ips"])
        pools.append({"metadata": {"name": pool_name, "namespace": namespace}, "spec": spec})
        if entry.get("protocol") == "layer2":
            advs.append({"metadata": {"name": f"legacy-{pool_name}", "namespace": namespace},
                         "spec": {"ipAddressPools": [pool_name]}})
    return pools, advs


def _legacy_document(configmap: Obj | None) -> Obj | None:
    if configmap is None:
        return None
    text = (configmap.get("data") or {}).get("config")
    if not isinstance(text, str):
        return None
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    if not isinstance(document, dict) or "address-pools" not in document:
        return None
    return document


def bgp_type_of(env: dict[str, str]) -> str:
    """``METALLB_BGP_TYPE`` of a MetalLB container; ``native`` when unset (speaker/main.go,
    controller/main.go), whatever the release."""
    return env.get("METALLB_BGP_TYPE") or "native"


def owner_pod_reference(pod: Obj | None) -> list[Obj]:
    """``controllerutil.SetOwnerReference(pod, ...)``: the speaker pod owns its
    ServiceL2Status objects (garbage-collected with the pod)."""
    if pod is None:
        return []
    return [{"apiVersion": "v1", "kind": "Pod", "name": name_of(pod),
             "uid": str(meta(pod).get("uid", ""))}]
