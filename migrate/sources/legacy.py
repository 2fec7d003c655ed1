"""MetalLB's legacy configuration (≤ v0.12): ConfigMap, bare body, Helm ``configInline``.

The legacy body is checked against its description (``schemas.LEGACY_CONFIG``: MetalLB parsed
it strictly) and then turned into the CRD-shaped objects MetalLB's own converter
(``configmaptocrs``) would write [M7], so the rest of the tool sees one model. Each converted
object says which legacy field each of its fields came from, so that a problem found later
(an address, a duplicate name) names the field the user wrote.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from migrate.errors import InputError, InputProblems, describe_object
from migrate.model.bgp import go_duration_seconds
from migrate.model.metallb import sanitise_legacy_name
from migrate.sources import schemas
from migrate.sources.files import load_yaml
from migrate.sources.validate import Identity, check, join, problems_of

# Records a legacy pool's original name, which Services still use in address-pool annotations.
LEGACY_NAME_ANNOTATION = "lbmigrate.io/legacy-pool-name"
# Legacy peer keys copied 1:1 into the BGPPeer spec, as configmaptocrs does [M7].
PEER_RENAMES = {"my-asn": "myASN", "peer-asn": "peerASN", "peer-address": "peerAddress",
                "source-address": "sourceAddress", "peer-port": "peerPort",
                "router-id": "routerID", "password": "password", "bfd-profile": "bfdProfile",
                "ebgp-multihop": "ebgpMultiHop"}
BFD_KEYS = {"receive-interval": "receiveInterval", "transmit-interval": "transmitInterval",
            "detect-multiplier": "detectMultiplier", "echo-interval": "echoInterval",
            "echo-mode": "echoMode", "passive-mode": "passiveMode", "minimum-ttl": "minimumTtl"}


@dataclass(frozen=True)
class Derivation:
    """Where a converted object came from: the document, the object that holds the legacy
    configuration (if any), and which legacy field each CRD field was converted from."""

    source: str
    obj: str | None
    base: str
    """The legacy field the whole object was converted from (``data.config.peers[0]``)."""
    fields: tuple[tuple[str, str], ...] = ()
    """(CRD field, legacy field) pairs: ``("spec.addresses", "...address-pools[0].addresses")``."""

    def field_of(self, crd_field: str | None) -> str:
        """The legacy field a CRD field (``spec.addresses[1]``) was converted from."""
        if crd_field:
            for prefix, legacy_field in sorted(self.fields, key=lambda f: -len(f[0])):
                rest = crd_field[len(prefix):]
                if crd_field.startswith(prefix) and (not rest or rest[0] in ".["):
                    return legacy_field + rest
        return self.base

    def relocate(self, error: InputError) -> InputError:
        """The same problem, naming the legacy object and field instead of the converted one."""
        return InputError(error.message, source=self.source, obj=self.obj,
                          field=self.field_of(error.field))


@dataclass(frozen=True)
class LegacyObject:
    """A CRD-shaped body converted from the legacy configuration, and where it came from."""

    origin: str
    body: dict[str, Any]
    derivation: Derivation


def looks_legacy(body: dict[str, Any]) -> bool:
    """A mapping that is a bare legacy config body: ``address-pools`` or ``peers``, no kind."""
    return (
        "kind" not in body
        and "apiVersion" not in body
        and ("address-pools" in body or "peers" in body)
    )


def legacy_config(value: Any, *, source: str, ident: Identity, where: str,
                  metallb_owned: bool) -> dict[str, Any] | None:
    """The legacy config body held by ``value`` (YAML text, or already a mapping), checked
    against ``schemas.LEGACY_CONFIG``; None when ``value`` is not MetalLB's configuration.

    A mapping with ``address-pools`` or ``peers`` is MetalLB's; so is anything held by an
    object that is MetalLB's (``metallb_owned``: its ConfigMap, its Helm release), where text
    that is not YAML is a problem rather than someone else's configuration. Raises
    InputProblems naming ``where`` and below.
    """
    parsed = value
    if isinstance(value, str):
        try:
            parsed = load_yaml(value)  # as Kubernetes reads it: 64512:10 stays a string
        except yaml.YAMLError as exc:
            if not metallb_owned:
                return None
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise InputProblems([InputError(
                f"not valid YAML: {problem}", source=source, field=where,
                obj=describe_object(ident.kind, ident.namespace, ident.name))]) from None
    if parsed is None:
        return None
    mine = isinstance(parsed, dict) and ("address-pools" in parsed or "peers" in parsed)
    if not (mine or metallb_owned):
        return None
    report = check(parsed, schemas.LEGACY_CONFIG, where)
    if not report.ok:
        raise InputProblems(list(problems_of(report, source, ident)))
    return parsed if mine else None


def convert(config: dict[str, Any], *, origin: str, namespace: str, where: str,
            source: str, obj: str | None) -> list[LegacyObject]:
    """Convert a checked legacy config body into CRD-shaped MetalLB objects (configmaptocrs
    rules) [M7]. ``origin`` names the objects in findings; ``source``, ``obj`` and ``where``
    (the config body's own path) are what a problem names."""
    out: list[LegacyObject] = []
    l2_count = 0
    bgp_count = 0

    def derived(base: str, **pairs: str) -> Derivation:
        return Derivation(source, obj, base, tuple(
            (crd.replace("__", "."), join(base, legacy)) for crd, legacy in pairs.items()))

    for index, pool in enumerate(config.get("address-pools") or []):
        path = f"{join(where, 'address-pools')}[{index}]"
        name = pool["name"]
        protocol = pool["protocol"]
        if protocol == "layer2" and pool.get("bgp-advertisements"):
            raise InputError("is only allowed on bgp pools", source=source, obj=obj,
                             field=join(path, "bgp-advertisements"))
        pool_name = sanitise_legacy_name(name)
        pool_origin = f"{origin} ({path})"
        spec: dict[str, Any] = {"addresses": pool["addresses"]}
        if pool.get("auto-assign") is not None:
            spec["autoAssign"] = pool["auto-assign"]
        if pool.get("avoid-buggy-ips") is not None:
            spec["avoidBuggyIPs"] = pool["avoid-buggy-ips"]
        pool_body = _crd("IPAddressPool", pool_name, namespace, spec)
        if pool_name != name:
            pool_body["metadata"]["annotations"] = {LEGACY_NAME_ANNOTATION: name}
        out.append(LegacyObject(pool_origin, pool_body, derived(
            path, metadata__name="name", spec__addresses="addresses",
            spec__autoAssign="auto-assign", spec__avoidBuggyIPs="avoid-buggy-ips")))
        if protocol == "layer2":
            l2_count += 1
            out.append(LegacyObject(pool_origin, _crd(
                "L2Advertisement", f"l2advertisement{l2_count}", namespace,
                {"ipAddressPools": [pool_name]},
            ), derived(path, spec__ipAddressPools="name")))
            continue
        ads = pool.get("bgp-advertisements") or [None]
        for ad_index, ad in enumerate(ads):
            bgp_count += 1
            ad_spec: dict[str, Any] = {"ipAddressPools": [pool_name]}
            for old, new in (("aggregation-length", "aggregationLength"),
                             ("aggregation-length-v6", "aggregationLengthV6"),
                             ("localpref", "localPref"), ("communities", "communities")):
                if ad and ad.get(old) is not None:
                    ad_spec[new] = ad[old]
            ad_path = path if ad is None else f"{join(path, 'bgp-advertisements')}[{ad_index}]"
            out.append(LegacyObject(pool_origin, _crd(
                "BGPAdvertisement", f"bgpadvertisement{bgp_count}", namespace, ad_spec,
            ), derived(ad_path, spec__aggregationLength="aggregation-length",
                       spec__aggregationLengthV6="aggregation-length-v6",
                       spec__localPref="localpref", spec__communities="communities")))
    for index, peer in enumerate(config.get("peers") or []):
        path = f"{join(where, 'peers')}[{index}]"
        spec = _peer_spec(peer, source=source, obj=obj, path=path)
        renamed = {f"spec__{new}": old for old, new in PEER_RENAMES.items()}
        out.append(LegacyObject(f"{origin} ({path})", _crd(
            "BGPPeer", f"peer{index + 1}", namespace, spec, version="v1beta2",
        ), derived(path, **renamed, spec__holdTime="hold-time",
                   spec__keepaliveTime="keepalive-time", spec__nodeSelectors="node-selectors")))
    for index, profile in enumerate(config.get("bfd-profiles") or []):
        path = f"{join(where, 'bfd-profiles')}[{index}]"
        out.append(LegacyObject(f"{origin} ({path})", _crd(
            "BFDProfile", sanitise_legacy_name(profile["name"]), namespace,
            {new: profile[old] for old, new in BFD_KEYS.items() if old in profile},
        ), derived(path, metadata__name="name",
                   **{f"spec__{new}": old for old, new in BFD_KEYS.items()})))
    communities = config.get("bgp-communities")
    if communities:
        path = join(where, "bgp-communities")
        out.append(LegacyObject(f"{origin} ({path})", _crd(
            "Community", "communities", namespace,
            {"communities": [{"name": k, "value": v} for k, v in sorted(communities.items())]},
        ), derived(path)))
    return out


def _peer_spec(peer: dict[str, Any], *, source: str, obj: str | None,
               path: str) -> dict[str, Any]:
    """A checked legacy peer as configmaptocrs writes it: hold time always set (90s when
    absent) and rounded to whole seconds, keepalive only when given, selectors as
    LabelSelectors [M7]."""
    spec = {new: peer[old] for old, new in PEER_RENAMES.items() if peer.get(old) is not None}
    hold = _whole_seconds(peer.get("hold-time"), source=source, obj=obj,
                          field=join(path, "hold-time"))
    spec["holdTime"] = f"{90 if hold is None else hold}s"
    keepalive = _whole_seconds(peer.get("keepalive-time"), source=source, obj=obj,
                               field=join(path, "keepalive-time"))
    if keepalive is not None:
        spec["keepaliveTime"] = f"{keepalive}s"
    converted = []
    for selector in peer.get("node-selectors") or []:
        item: dict[str, Any] = {}
        if selector.get("match-labels"):
            item["matchLabels"] = selector["match-labels"]
        if selector.get("match-expressions"):
            item["matchExpressions"] = selector["match-expressions"]
        converted.append(item)
    if converted:
        spec["nodeSelectors"] = converted
    return spec


def _whole_seconds(value: Any, *, source: str, obj: str | None, field: str) -> int | None:
    """A legacy duration (``90s``, ``1m30s``) in whole seconds, as configmaptocrs rounds it."""
    if value is None or value == "":
        return None
    seconds = go_duration_seconds(value) if isinstance(value, str) else None
    if seconds is None or seconds < 0:
        raise InputError(f"{value!r} is not a duration like 90s", source=source, obj=obj,
                         field=field)
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
