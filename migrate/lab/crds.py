"""CustomResourceDefinitions in the lab: registration, defaulting and schema validation.

A CRD object becomes a served :class:`~migrate.lab.store.ResourceType`. Custom resources are
checked against the version's ``openAPIV3Schema`` the way the real API server does it, closely
enough for the tool's purposes: structural types, ``enum``, ``required``, ``pattern``, bounds,
``nullable`` and ``x-kubernetes-int-or-string`` are enforced; ``default`` values are filled in
(e.g. IPAddressPool ``autoAssign: true``); ``format`` (``cidr``, ``ip``, ...), CEL rules
(``x-kubernetes-validations``) and pruning of unknown fields are NOT enforced.

Where the CRDs come from (first found wins, per kind): the snapshot's own CRD objects (see
``Store.from_snapshot``), then the folder named by ``MIGRATE_LAB_CRDS`` or ``<repo>/../shared/
crds`` (top-level ``*.yaml`` of the folder and of its ``cilium/`` and ``metallb/`` subfolders),
then the minimal built-in definitions below.
"""

from __future__ import annotations

import copy
import functools
import os
from pathlib import Path
from typing import Any

import yaml

from migrate.lab.store import ResourceType

Obj = dict[str, Any]

CRDS_ENV = "MIGRATE_LAB_CRDS"


class CrdError(ValueError):
    """A CustomResourceDefinition the lab cannot serve."""

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


# --------------------------------------------------------------------------- registration


def types_from_crd(crd: Obj) -> ResourceType:
    """The served type a CRD defines (raises CrdError when it is not servable)."""
    spec = crd.get("spec")
    if not isinstance(spec, dict):
        raise CrdError("Required value", "spec")
    group = spec.get("group")
    if not isinstance(group, str) or not group:
        raise CrdError("Required value", "spec.group")
    names = spec.get("names")
    if not isinstance(names, dict) or not names.get("kind") or not names.get("plural"):
        raise CrdError("Required value: kind and plural are required", "spec.names")
    scope = spec.get("scope")
    if scope not in ("Namespaced", "Cluster"):
        raise CrdError(f'Unsupported value: "{scope}": supported values: "Cluster", '
                       '"Namespaced"', "spec.scope")
    expected_name = f"{names['plural']}.{group}"
    name = (crd.get("metadata") or {}).get("name")
    if name != expected_name:
        raise CrdError(f'Invalid value: "{name}": must be spec.names.plural+"."+spec.group',
                       "metadata.name")
    versions = spec.get("versions")
    if not isinstance(versions, list) or not versions:
        raise CrdError("Required value: must have exactly one version marked as storage version",
                       "spec.versions")
    served: list[str] = []
    storage: list[str] = []
    schemas: dict[str, Obj] = {}
    columns: dict[str, list[Obj]] = {}
    status = scale = False
    for index, version in enumerate(versions):
        if not isinstance(version, dict) or not version.get("name"):
            raise CrdError("Required value", f"spec.versions[{index}].name")
        if version.get("served", True):
            served.append(version["name"])
        if version.get("storage"):
            storage.append(version["name"])
        schema = ((version.get("schema") or {}).get("openAPIV3Schema")
                  or (spec.get("validation") or {}).get("openAPIV3Schema"))
        if isinstance(schema, dict):
            schemas[version["name"]] = schema
        printer = version.get("additionalPrinterColumns") or spec.get(
            "additionalPrinterColumns") or []
        columns[version["name"]] = [c for c in printer if isinstance(c, dict) and "jsonPath" in c]
        subresources = version.get("subresources") or spec.get("subresources") or {}
        status = status or "status" in subresources
        scale = scale or "scale" in subresources
    if len(storage) != 1:
        raise CrdError("Invalid value: must have exactly one version marked as storage version",
                       "spec.versions")
    return ResourceType(
        group=group,
        kind=names["kind"],
        plural=names["plural"],
        singular=names.get("singular") or names["kind"].lower(),
        namespaced=scope == "Namespaced",
        versions=served,
        storage_version=storage[0],
        short_names=list(names.get("shortNames") or []),
        categories=list(names.get("categories") or []),
        status_subresource=status,
        scale_subresource=scale,
        custom=True,
        schemas=schemas,
        crd_name=expected_name,
        printer_columns=columns,
    )


# --------------------------------------------------------------------------- defaults


def apply_defaults(schema: Obj, obj: Any) -> None:
    """Fill in ``default`` values where the field is absent and its parent exists."""
    if isinstance(obj, dict):
        properties = schema.get("properties")
        if isinstance(properties, dict):
            for key, sub in properties.items():
                if not isinstance(sub, dict):
                    continue
                if key not in obj and "default" in sub and key != "metadata":
                    obj[key] = copy.deepcopy(sub["default"])
                if key in obj and key != "metadata":
                    apply_defaults(sub, obj[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key, value in obj.items():
                if not isinstance(properties, dict) or key not in properties:
                    apply_defaults(extra, value)
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for item in obj:
                apply_defaults(items, item)


# --------------------------------------------------------------------------- pruning


def prune(schema: Obj, obj: Any, path: str = "", *, drop: bool = True) -> list[str]:
    """Unknown fields (not in a structural schema) as paths; removed from ``obj`` when ``drop``.

    Follows the API server's pruning: an object schema with ``properties`` keeps only those
    (plus ``additionalProperties`` maps), ``x-kubernetes-preserve-unknown-fields`` keeps
    everything below it, and the root's ``metadata``, ``apiVersion`` and ``kind`` are kept.
    """
    found: list[str] = []
    if schema.get("x-kubernetes-preserve-unknown-fields") and not schema.get("properties"):
        return found
    if isinstance(obj, dict):
        properties = schema.get("properties")
        extra = schema.get("additionalProperties")
        for key in list(obj):
            where = f"{path}.{key}" if path else key
            if not path and key in ("apiVersion", "kind", "metadata"):
                continue
            if isinstance(properties, dict) and key in properties:
                sub = properties[key]
                if isinstance(sub, dict):
                    found += prune(sub, obj[key], where, drop=drop)
            elif isinstance(extra, dict):
                found += prune(extra, obj[key], where, drop=drop)
            elif extra is True or schema.get("x-kubernetes-preserve-unknown-fields"):
                continue
            elif isinstance(properties, dict) or schema.get("type") == "object":
                found.append(where)
                if drop:
                    del obj[key]
    elif isinstance(obj, list):
        items = schema.get("items")
        if isinstance(items, dict):
            for index, item in enumerate(obj):
                found += prune(items, item, f"{path}[{index}]", drop=drop)
    return found


# --------------------------------------------------------------------------- validation


def _to_jsonschema(node: Any) -> Any:
    """OpenAPI v3 (Kubernetes flavour) -> JSON Schema that ``jsonschema`` understands."""
    if isinstance(node, list):
        return [_to_jsonschema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: Obj = {}
    for key, value in node.items():
        if key in ("description", "default", "example", "format", "x-kubernetes-validations"):
            continue
        if key in ("properties", "patternProperties", "definitions"):
            out[key] = {k: _to_jsonschema(v) for k, v in value.items()}
        elif isinstance(value, dict | list):
            out[key] = _to_jsonschema(value)
        else:
            out[key] = value
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"] if isinstance(out["type"], str) else [
            *out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    return out


_VALIDATORS: dict[int, tuple[Obj, Any]] = {}


def _validator(schema: Obj) -> Any:
    """A compiled validator per schema object (jsonschema is imported only when needed)."""
    cached = _VALIDATORS.get(id(schema))
    if cached is not None and cached[0] is schema:
        return cached[1]
    import jsonschema  # type: ignore[import-untyped]

    checker = jsonschema.Draft7Validator(_to_jsonschema(schema))
    _VALIDATORS[id(schema)] = (schema, checker)
    return checker


def _type_name(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "null"


def _path(parts: Any) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _quote(value: Any) -> str:
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return f'"{_type_name(value)}"'
    return str(value)


def validate(schema: Obj, obj: Obj, crd_name: str, version: str) -> list[dict[str, str]]:
    """Status causes (``reason``, ``message``, ``field``) for every schema violation."""
    del crd_name, version  # kept for messages a future version may want
    body = {k: v for k, v in obj.items() if k != "metadata"}
    body["metadata"] = {}
    causes: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    for error in sorted(_validator(schema).iter_errors(body), key=lambda e: list(e.path)):
        field = _path(error.absolute_path)
        if error.validator == "type":
            expected = error.validator_value
            if isinstance(expected, list):
                expected = next((t for t in expected if t != "null"), expected[0])
            actual = _type_name(error.instance)
            reason = "FieldValueTypeInvalid"
            message = (f'Invalid value: "{actual}": {field or "body"} in body must be of '
                       f'type {expected}: "{actual}"')
        elif error.validator == "enum":
            supported = ", ".join(_quote(v) for v in error.validator_value if v is not None)
            reason = "FieldValueNotSupported"
            message = f"Unsupported value: {_quote(error.instance)}: supported values: {supported}"
        elif error.validator == "required":
            missing = [k for k in error.validator_value
                       if isinstance(error.instance, dict) and k not in error.instance]
            for key in missing or [""]:
                where = f"{field}.{key}" if field and key else (key or field)
                _add_cause(causes, seen, "FieldValueRequired", "Required value", where)
            continue
        else:
            where = field or "body"
            limit = error.validator_value
            wording = {
                "minLength": f"{where} in body should be at least {limit} chars long",
                "maxLength": f"{where} in body may not be longer than {limit}",
                "pattern": f"{where} in body should match '{limit}'",
                "minimum": f"{where} in body should be greater than or equal to {limit}",
                "maximum": f"{where} in body should be less than or equal to {limit}",
                "minItems": f"{where} in body should have at least {limit} items",
                "maxItems": f"{where} in body should have at most {limit} items",
            }.get(str(error.validator), error.message)
            reason = "FieldValueInvalid"
            message = f"Invalid value: {_quote(error.instance)}: {wording}"
        _add_cause(causes, seen, reason, message, field)
    return causes


def _add_cause(
    causes: list[dict[str, str]], seen: set[tuple[str, str]], reason: str, message: str,
    field: str,
) -> None:
    """Append a Status cause unless one with the same field and message is already there."""
    if (field, message) not in seen:
        seen.add((field, message))
        causes.append({"reason": reason, "message": message, "field": field})


# --------------------------------------------------------------------------- sources


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def crd_folder() -> Path | None:
    """The folder CRDs are read from: ``$MIGRATE_LAB_CRDS`` or ``<repo>/../shared/crds``."""
    named = os.environ.get(CRDS_ENV)
    if named:
        return Path(named)
    shared = _repo_root().parent / "shared" / "crds"
    return shared if shared.is_dir() else None


def _crd_files(folder: Path) -> list[Path]:
    files: list[Path] = []
    for where in (folder, folder / "cilium", folder / "metallb"):
        if where.is_dir():
            files += sorted(p for p in where.iterdir()
                            if p.is_file() and p.suffix in (".yaml", ".yml"))
    return files


@functools.lru_cache(maxsize=8)
def _read_crds(folder: str) -> tuple[Obj, ...]:
    found: list[Obj] = []
    seen: set[str] = set()
    for path in _crd_files(Path(folder)):
        try:
            docs = list(yaml.load_all(path.read_text(encoding="utf-8"),
                                      Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
        except (OSError, yaml.YAMLError):
            continue
        for doc in docs:
            if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
                continue
            try:
                rtype = types_from_crd(doc)
            except CrdError:
                continue  # e.g. a kustomize patch that only carries a conversion stanza
            if rtype.crd_name and rtype.crd_name not in seen:
                seen.add(rtype.crd_name)
                found.append(doc)
    return tuple(found)


def default_crds(cilium_version: tuple[int, ...] | None = None) -> list[Obj]:
    """The MetalLB and Cilium CRDs: from the CRD folder where present, else built in; with a
    Cilium version, the Cilium ones as that release serves them (:func:`for_cilium`)."""
    folder = crd_folder()
    found = [copy.deepcopy(c) for c in _read_crds(str(folder))] if folder else []
    names = {c["metadata"]["name"] for c in found}
    found += [c for c in builtin_crds() if c["metadata"]["name"] not in names]
    if cilium_version is not None:
        found = for_cilium(found, cilium_version)
    return found


CILIUM_V2_SINCE_1_18 = ("CiliumLoadBalancerIPPool", "CiliumBGPClusterConfig",
                        "CiliumBGPPeerConfig", "CiliumBGPAdvertisement",
                        "CiliumBGPNodeConfigOverride", "CiliumBGPNodeConfig")
"""Cilium kinds served as ``cilium.io/v2`` (the storage version) from 1.18 on (PR #39090 for
the pools), ``v2alpha1`` only before."""


def for_cilium(crds: list[Obj], version: tuple[int, ...]) -> list[Obj]:
    """The Cilium CRDs as ``version`` installs them.

    * before 1.18: pools (and the BGP v2 kinds) are ``cilium.io/v2alpha1`` only;
    * 1.18: ``v2`` is the storage version and ``v2alpha1`` is served too;
    * 1.19 and 1.20: ``v2alpha1`` is still served but deprecated (cilium/cilium#39134), and
      CiliumBGPPeeringPolicy is gone (removed 2025-09, in 1.19);
    * CiliumL2AnnouncementPolicy stays ``v2alpha1`` only through 1.20.
    """
    out: list[Obj] = []
    for crd in crds:
        spec = crd.get("spec") or {}
        kind = (spec.get("names") or {}).get("kind")
        if spec.get("group") != "cilium.io":
            out.append(crd)
            continue
        if kind == "CiliumBGPPeeringPolicy" and version >= (1, 19):
            continue
        if kind in CILIUM_V2_SINCE_1_18:
            crd = copy.deepcopy(crd)
            versions = crd["spec"]["versions"]
            if version < (1, 18):
                kept = [v for v in versions if v.get("name") == "v2alpha1"]
                for entry in kept:
                    entry["served"] = True
                    entry["storage"] = True
                    entry.pop("deprecated", None)
                    entry.pop("deprecationWarning", None)
                if kept:
                    crd["spec"]["versions"] = kept
            else:
                for entry in versions:
                    if entry.get("name") != "v2alpha1":
                        continue
                    if version < (1, 19):
                        entry.pop("deprecated", None)
                        entry.pop("deprecationWarning", None)
                    else:
                        entry["deprecated"] = True
        out.append(crd)
    return out


# --------------------------------------------------------------------------- built-in CRDs

_OPEN: Obj = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}


def _crd(
    group: str,
    kind: str,
    plural: str,
    versions: list[str],
    storage: str,
    spec_schema: Obj,
    *,
    namespaced: bool,
    short: list[str] | None = None,
    status: bool = True,
    required: list[str] | None = None,
) -> Obj:
    schema: Obj = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema,
            "status": copy.deepcopy(_OPEN),
        },
    }
    if required:
        schema["required"] = required
    names: Obj = {"kind": kind, "listKind": f"{kind}List", "plural": plural,
                  "singular": kind.lower()}
    if short:
        names["shortNames"] = short
    if group == "cilium.io":
        names["categories"] = ["cilium"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{group}",
                     "annotations": {"migrate.lab/definition": "built-in minimal"}},
        "spec": {
            "group": group,
            "names": names,
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [
                {
                    "name": version,
                    "served": True,
                    "storage": version == storage,
                    "schema": {"openAPIV3Schema": copy.deepcopy(schema)},
                    **({"subresources": {"status": {}}} if status else {}),
                }
                for version in versions
            ],
        },
    }


def builtin_crds() -> list[Obj]:
    """Minimal definitions of the MetalLB and Cilium kinds, used where no real CRD is found."""
    pool_spec: Obj = {
        "type": "object",
        "required": ["addresses"],
        "properties": {
            "addresses": {"type": "array", "items": {"type": "string"}},
            "autoAssign": {"type": "boolean", "default": True},
            "avoidBuggyIPs": {"type": "boolean", "default": False},
            "serviceAllocation": _OPEN,
        },
    }
    cilium_pool_spec: Obj = {
        "type": "object",
        "properties": {
            "allowFirstLastIPs": {"type": "string", "enum": ["Yes", "No"]},
            "blocks": {"type": "array", "items": {"type": "object", "properties": {
                "cidr": {"type": "string"}, "start": {"type": "string"},
                "stop": {"type": "string"}}}},
            "disabled": {"type": "boolean", "default": False},
            "serviceSelector": _OPEN,
        },
    }
    metallb = [
        ("IPAddressPool", "ipaddresspools", ["v1beta1"], "v1beta1", pool_spec),
        ("L2Advertisement", "l2advertisements", ["v1beta1"], "v1beta1", _OPEN),
        ("BGPAdvertisement", "bgpadvertisements", ["v1beta1"], "v1beta1", _OPEN),
        ("BGPPeer", "bgppeers", ["v1beta1", "v1beta2"], "v1beta2", _OPEN),
        ("BFDProfile", "bfdprofiles", ["v1beta1"], "v1beta1", _OPEN),
        ("Community", "communities", ["v1beta1"], "v1beta1", _OPEN),
        ("ServiceL2Status", "servicel2statuses", ["v1beta1"], "v1beta1", _OPEN),
        ("ServiceBGPStatus", "servicebgpstatuses", ["v1beta1"], "v1beta1", _OPEN),
        ("ConfigurationState", "configurationstates", ["v1beta1"], "v1beta1", _OPEN),
        # Removed in MetalLB 0.14.3; still served by the lab to rehearse older installs.
        ("AddressPool", "addresspools", ["v1alpha1", "v1beta1"], "v1beta1", _OPEN),
    ]
    cilium: list[tuple[str, str, list[str], str, Obj, list[str]]] = [
        ("CiliumLoadBalancerIPPool", "ciliumloadbalancerippools", ["v2alpha1", "v2"], "v2",
         cilium_pool_spec, ["ippools", "ippool", "lbippool", "lbippools"]),
        ("CiliumL2AnnouncementPolicy", "ciliuml2announcementpolicies", ["v2alpha1"],
         "v2alpha1", _OPEN, ["l2announcement"]),
        ("CiliumBGPPeeringPolicy", "ciliumbgppeeringpolicies", ["v2alpha1"], "v2alpha1", _OPEN,
         ["bgpp"]),
        ("CiliumBGPClusterConfig", "ciliumbgpclusterconfigs", ["v2alpha1", "v2"], "v2", _OPEN,
         ["cbgpcluster"]),
        ("CiliumBGPPeerConfig", "ciliumbgppeerconfigs", ["v2alpha1", "v2"], "v2", _OPEN,
         ["cbgppeer"]),
        ("CiliumBGPAdvertisement", "ciliumbgpadvertisements", ["v2alpha1", "v2"], "v2", _OPEN,
         ["cbgpadvert"]),
        ("CiliumBGPNodeConfigOverride", "ciliumbgpnodeconfigoverrides", ["v2alpha1", "v2"],
         "v2", _OPEN, ["cbgpnodeoverride"]),
        # Written by Cilium's operator, one per node (pkg/k8s/apis/cilium.io/v2/bgp_node_types.go;
        # status subresource: the agent's session state).
        ("CiliumBGPNodeConfig", "ciliumbgpnodeconfigs", ["v2alpha1", "v2"], "v2", _OPEN,
         ["cbgpnode"]),
        ("CiliumNode", "ciliumnodes", ["v2"], "v2", _OPEN, ["cn", "ciliumn"]),
    ]
    out = [
        _crd("metallb.io", kind, plural, versions, storage, copy.deepcopy(spec),
             namespaced=True, required=["spec"] if kind == "IPAddressPool" else None)
        for kind, plural, versions, storage, spec in metallb
    ]
    out += [
        _crd("cilium.io", kind, plural, versions, storage, copy.deepcopy(spec),
             namespaced=False, short=short, required=["metadata", "spec"])
        for kind, plural, versions, storage, spec, short in cilium
    ]
    return out
