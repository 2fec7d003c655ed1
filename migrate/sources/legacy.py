"""MetalLB's legacy configuration (≤ v0.12): ConfigMap, bare body, Helm ``configInline``.

The legacy body is turned into the CRD-shaped objects MetalLB's own converter
(``configmaptocrs``) would write [M7], so the rest of the tool sees one model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from migrate.errors import InputError
from migrate.model.bgp import go_duration_seconds
from migrate.model.metallb import sanitise_legacy_name
from migrate.sources.files import load_yaml

# Records a legacy pool's original name, which Services still use in address-pool annotations.
LEGACY_NAME_ANNOTATION = "lbmigrate.io/legacy-pool-name"
LEGACY_KEYS = {"peers", "bgp-communities", "bfd-profiles", "address-pools"}
POOL_KEYS = {"name", "protocol", "addresses", "auto-assign", "avoid-buggy-ips",
             "bgp-advertisements"}
BGP_AD_KEYS = {"aggregation-length", "aggregation-length-v6", "localpref", "communities"}
PEER_KEYS = {"peer-address", "peer-asn", "my-asn", "peer-port", "source-address", "router-id",
             "hold-time", "keepalive-time", "password", "bfd-profile", "ebgp-multihop",
             "node-selectors"}
# Legacy peer keys copied 1:1 into the BGPPeer spec, as configmaptocrs does [M7].
PEER_RENAMES = {"my-asn": "myASN", "peer-asn": "peerASN", "peer-address": "peerAddress",
                "source-address": "sourceAddress", "peer-port": "peerPort",
                "router-id": "routerID", "password": "password", "bfd-profile": "bfdProfile",
                "ebgp-multihop": "ebgpMultiHop"}
BFD_KEYS = {"receive-interval": "receiveInterval", "transmit-interval": "transmitInterval",
            "detect-multiplier": "detectMultiplier", "echo-interval": "echoInterval",
            "echo-mode": "echoMode", "passive-mode": "passiveMode", "minimum-ttl": "minimumTtl"}


@dataclass(frozen=True)
class LegacyObject:
    """A CRD-shaped body converted from the legacy configuration, and where it came from."""

    origin: str
    body: dict[str, Any]


def looks_legacy(body: Any) -> bool:
    """A mapping that is a bare legacy config body: ``address-pools`` or ``peers``, no kind."""
    return (
        isinstance(body, dict)
        and "kind" not in body
        and "apiVersion" not in body
        and ("address-pools" in body or "peers" in body)
    )


def parse_config_text(text: Any, origin: str, where: str) -> dict[str, Any]:
    """Parse the ``config`` value of a legacy ConfigMap (or a ``configInline`` string)."""
    if isinstance(text, dict):
        return text
    if not isinstance(text, str):
        raise InputError("must be a YAML document", source=origin, field=where)
    try:
        body = load_yaml(text)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InputError(f"not valid YAML: {problem}", source=origin, field=where) from None
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise InputError("must be a mapping", source=origin, field=where)
    return body


def convert(config: dict[str, Any], *, origin: str, namespace: str, where: str) -> list[
    LegacyObject
]:
    """Convert a legacy config body into CRD-shaped MetalLB objects (configmaptocrs rules) [M7]."""
    unknown = set(config) - LEGACY_KEYS
    if unknown:
        key = sorted(unknown)[0]
        raise InputError(
            f"unknown key {key!r} (MetalLB ≤0.12 parses its config strictly)",
            source=origin,
            field=f"{where}.{key}",
        )
    out: list[LegacyObject] = []
    pools = config.get("address-pools") or []
    if not isinstance(pools, list):
        raise InputError("must be a list", source=origin, field=f"{where}.address-pools")
    l2_count = 0
    bgp_count = 0
    for index, pool in enumerate(pools):
        field = f"{where}.address-pools[{index}]"
        if not isinstance(pool, dict):
            raise InputError("must be a mapping", source=origin, field=field)
        extra = set(pool) - POOL_KEYS
        if extra:
            raise InputError(f"unknown key {sorted(extra)[0]!r}", source=origin, field=field)
        name = pool.get("name")
        if not isinstance(name, str) or not name:
            raise InputError("is required", source=origin, field=f"{field}.name")
        protocol = pool.get("protocol")
        if protocol not in ("layer2", "bgp"):
            raise InputError(
                f"must be layer2 or bgp, not {protocol!r}", source=origin,
                field=f"{field}.protocol",
            )
        if protocol == "layer2" and pool.get("bgp-advertisements"):
            raise InputError(
                "is only allowed on bgp pools", source=origin,
                field=f"{field}.bgp-advertisements",
            )
        pool_name = sanitise_legacy_name(name)
        pool_origin = f"{origin} ({field})"
        spec: dict[str, Any] = {"addresses": pool.get("addresses")}
        if "auto-assign" in pool:
            spec["autoAssign"] = pool["auto-assign"]
        if "avoid-buggy-ips" in pool:
            spec["avoidBuggyIPs"] = pool["avoid-buggy-ips"]
        pool_body = _crd("IPAddressPool", pool_name, namespace, spec)
        if pool_name != name:
            pool_body["metadata"]["annotations"] = {LEGACY_NAME_ANNOTATION: name}
        out.append(LegacyObject(pool_origin, pool_body))
        if protocol == "layer2":
            l2_count += 1
            out.append(LegacyObject(pool_origin, _crd(
                "L2Advertisement", f"l2advertisement{l2_count}", namespace,
                {"ipAddressPools": [pool_name]},
            )))
            continue
        ads = pool.get("bgp-advertisements") or [{}]
        for ad_index, ad in enumerate(ads):
            if not isinstance(ad, dict) or set(ad) - BGP_AD_KEYS:
                raise InputError(
                    "must be a mapping of aggregation-length, aggregation-length-v6, localpref,"
                    " communities", source=origin, field=f"{field}.bgp-advertisements[{ad_index}]",
                )
            bgp_count += 1
            ad_spec: dict[str, Any] = {"ipAddressPools": [pool_name]}
            for old, new in (("aggregation-length", "aggregationLength"),
                             ("aggregation-length-v6", "aggregationLengthV6"),
                             ("localpref", "localPref"), ("communities", "communities")):
                if old in ad:
                    ad_spec[new] = ad[old]
            out.append(LegacyObject(pool_origin, _crd(
                "BGPAdvertisement", f"bgpadvertisement{bgp_count}", namespace, ad_spec,
            )))
    for index, peer in enumerate(config.get("peers") or []):
        field = f"{where}.peers[{index}]"
        if not isinstance(peer, dict):
            raise InputError("must be a mapping", source=origin, field=field)
        extra = set(peer) - PEER_KEYS
        if extra:
            raise InputError(f"unknown key {sorted(extra)[0]!r}", source=origin, field=field)
        for key in ("my-asn", "peer-asn", "peer-address"):
            if key not in peer:
                raise InputError("is required", source=origin, field=f"{field}.{key}")
        out.append(LegacyObject(f"{origin} ({field})", _crd(
            "BGPPeer", f"peer{index + 1}", namespace, _peer_spec(peer, origin, field),
            version="v1beta2",
        )))
    for index, profile in enumerate(config.get("bfd-profiles") or []):
        field = f"{where}.bfd-profiles[{index}]"
        if not isinstance(profile, dict) or not profile.get("name"):
            raise InputError("needs a name", source=origin, field=field)
        extra = set(profile) - {"name", *BFD_KEYS}
        if extra:
            raise InputError(f"unknown key {sorted(extra)[0]!r}", source=origin, field=field)
        out.append(LegacyObject(f"{origin} ({field})", _crd(
            "BFDProfile", sanitise_legacy_name(str(profile["name"])), namespace,
            {new: profile[old] for old, new in BFD_KEYS.items() if old in profile},
        )))
    communities = config.get("bgp-communities")
    if communities:
        if not isinstance(communities, dict):
            raise InputError("must be a mapping", source=origin, field=f"{where}.bgp-communities")
        out.append(LegacyObject(f"{origin} ({where}.bgp-communities)", _crd(
            "Community", "communities", namespace,
            {"communities": [{"name": k, "value": str(v)} for k, v in sorted(communities.items())]},
        )))
    return out


def _peer_spec(peer: dict[str, Any], origin: str, field: str) -> dict[str, Any]:
    """A legacy peer as configmaptocrs writes it: hold time always set (90s when absent) and
    rounded to whole seconds, keepalive only when given, selectors as LabelSelectors [M7]."""
    spec = {new: peer[old] for old, new in PEER_RENAMES.items() if peer.get(old) is not None}
    hold = _whole_seconds(peer.get("hold-time"), origin, f"{field}.hold-time")
    spec["holdTime"] = f"{90 if hold is None else hold}s"
    keepalive = _whole_seconds(peer.get("keepalive-time"), origin, f"{field}.keepalive-time")
    if keepalive is not None:
        spec["keepaliveTime"] = f"{keepalive}s"
    selectors = peer.get("node-selectors") or []
    if not isinstance(selectors, list):
        raise InputError("must be a list", source=origin, field=f"{field}.node-selectors")
    converted = []
    for index, selector in enumerate(selectors):
        where = f"{field}.node-selectors[{index}]"
        if not isinstance(selector, dict) or set(selector) - {"match-labels",
                                                              "match-expressions"}:
            raise InputError("must be a mapping of match-labels, match-expressions",
                             source=origin, field=where)
        item: dict[str, Any] = {}
        if selector.get("match-labels"):
            item["matchLabels"] = selector["match-labels"]
        if selector.get("match-expressions"):
            item["matchExpressions"] = selector["match-expressions"]
        converted.append(item)
    if converted:
        spec["nodeSelectors"] = converted
    return spec


def _whole_seconds(value: Any, origin: str, field: str) -> int | None:
    """A legacy duration (``90s``, ``1m30s``) in whole seconds, as configmaptocrs rounds it."""
    if value is None or value == "":
        return None
    seconds = go_duration_seconds(value) if isinstance(value, str) else None
    if seconds is None or seconds < 0:
        raise InputError(f"{value!r} is not a duration like 90s", source=origin, field=field)
    return int(seconds)


def _crd(kind: str, name: str, namespace: str, spec: dict[str, Any],
         version: str = "v1beta1") -> dict[str, Any]:
    return {
        "apiVersion": f"metallb.io/{version}",
        "kind": kind,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def find_config_inline(values: Any, depth: int = 0) -> tuple[Any, str] | None:
    """Find ``configInline`` in Helm values (top level or one chart level down)."""
    if not isinstance(values, dict) or depth > 2:
        return None
    if "configInline" in values:
        return values["configInline"], "configInline"
    for key, value in values.items():
        found = find_config_inline(value, depth + 1)
        if found:
            return found[0], f"{key}.{found[1]}"
    return None
