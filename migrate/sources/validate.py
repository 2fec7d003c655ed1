"""The validating boundary: every document is checked here, once, before any view is built.

``check_document`` picks the description of a document's kind (``migrate/sources/schemas.py``)
and returns what is wrong with it, each problem an ``InvalidDocument`` naming the source, the
object, the field path and what was expected and found, plus the fields it does not understand
(MetalLB kinds only: a newer MetalLB's, reported as WARNINGs). Past this boundary the views
(``migrate/model``) trust the types. Documents of kinds the tool does not read are passed over
whatever they hold. ``check`` applies any description to any value (plans, state, kubeconfigs).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import MISSING, InvalidDocument
from migrate.model import metallb as mlb
from migrate.sources import schemas as s
from migrate.sources.files import SourceDocument

_EXPECTED = {"string": "a string", "integer": "an integer", "boolean": "true or false",
             "number": "a number"}


@dataclass(frozen=True)
class Issue:
    """One field that is not as described: its path, what was expected and what was found."""

    path: str
    expected: str | None
    found: Any = MISSING
    message: str | None = None


@dataclass
class Report:
    """What checking a value found: problems, and fields not understood (``WARN`` policy)."""

    issues: list[Issue] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    prune_nulls: bool = False
    """Remove described fields that hold ``null`` (the API server prunes them), so that
    readers past the boundary see them absent."""

    @property
    def ok(self) -> bool:
        return not self.issues


def join(path: str, key: str) -> str:
    """``spec`` + ``ports`` → ``spec.ports`` (the first segment has no dot)."""
    return f"{path}.{key}" if path else key


def check(value: Any, spec: s.Spec, path: str = "", *, prune_nulls: bool = False) -> Report:
    """Check a value against a description; ``path`` names the value itself in the report.
    With ``prune_nulls``, described fields holding ``null`` are removed from ``value``."""
    report = Report(prune_nulls=prune_nulls)
    _check(value, spec, path, report)
    return report


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _scalar(value: Any, spec: s.Scalar, path: str, report: Report) -> None:
    ok = {
        "string": isinstance(value, str),
        "integer": _is_int(value),
        "boolean": isinstance(value, bool),
        "number": _is_int(value) or isinstance(value, float),
    }[spec.type]
    if not ok:
        report.issues.append(Issue(path, _EXPECTED[spec.type], value))
        return
    if spec.type == "integer" and (
        (spec.minimum is not None and value < spec.minimum)
        or (spec.maximum is not None and value > spec.maximum)
    ):
        bounds = (f"from {spec.minimum} to {spec.maximum}" if spec.minimum is not None
                  and spec.maximum is not None else f"of at least {spec.minimum}"
                  if spec.minimum is not None else f"of at most {spec.maximum}")
        report.issues.append(Issue(path, f"an integer {bounds}", value))
    elif spec.enum and value not in spec.enum:
        report.issues.append(Issue(path, "one of " + ", ".join(spec.enum), value))
    elif spec.format == "ip":
        try:
            ipaddress.ip_address(value.strip())
        except ValueError:
            report.issues.append(Issue(path, "an IP address", value))
    elif spec.format == "cidr":
        try:
            ipaddress.ip_network(value.strip(), strict=False)
        except ValueError:
            report.issues.append(Issue(path, "a CIDR (10.0.0.0/24)", value))


def _check(value: Any, spec: s.Spec, path: str, report: Report) -> None:
    if isinstance(spec, s.Anything):
        return
    if isinstance(spec, s.Maybe):
        if value is not None:
            _check(value, spec.spec, path, report)
        return
    if isinstance(spec, s.Scalar):
        _scalar(value, spec, path, report)
    elif isinstance(spec, s.IntOrStr):
        if not (_is_int(value) or isinstance(value, str)):
            report.issues.append(Issue(path, "an integer or a string", value))
    elif isinstance(spec, s.StrOrMap):
        if not isinstance(value, (str, dict)):
            report.issues.append(Issue(path, "a string or a mapping", value))
    elif isinstance(spec, s.ListOf):
        if not isinstance(value, list):
            report.issues.append(Issue(path, "a list", value))
            return
        for index, item in enumerate(value):
            item_path = f"{path}[{index}]"
            if item is None and not isinstance(spec.items, s.Maybe | s.Anything):
                report.issues.append(Issue(item_path, _describe(spec.items), None))
            else:
                _check(item, spec.items, item_path, report)
    elif isinstance(spec, s.MapOf):
        if not isinstance(value, dict):
            report.issues.append(Issue(path, "a mapping", value))
            return
        for key, item in value.items():
            item_path = f"{path}[{key}]"
            if not isinstance(key, str):
                report.issues.append(Issue(item_path, "a string key", key))
            elif item is None and report.prune_nulls and spec.values == s.STR:
                value[key] = ""  # as the API server decodes a null label or data value
            elif item is None and not isinstance(spec.values, s.Maybe | s.Anything):
                report.issues.append(Issue(item_path, _describe(spec.values), None))
            else:
                _check(item, spec.values, item_path, report)
    else:
        _fields(value, spec, path, report)


def _fields(value: Any, spec: s.Fields, path: str, report: Report) -> None:
    if not isinstance(value, dict):
        report.issues.append(Issue(path, "a mapping", value))
        return
    nulls = []
    for key, item in value.items():
        key_path = join(path, str(key))
        described = spec.fields.get(key) if isinstance(key, str) else None
        if described is not None and item is None:
            nulls.append(key)
        if described is None:
            if spec.unknown is s.Unknown.WARN:
                report.unknown.append(key_path)
            elif spec.unknown is s.Unknown.REFUSE:
                report.issues.append(Issue(key_path, None, item, f"unknown key {key!r}"))
            continue
        if item is not None:  # null is absent, as for the API server
            _check(item, described, key_path, report)
    if report.prune_nulls:
        for key in nulls:
            del value[key]
    for name in sorted(spec.required):
        if value.get(name) is None:
            report.issues.append(Issue(join(path, name), None, MISSING))
    if spec.one_of_required and all(value.get(name) is None for name in spec.one_of_required):
        report.issues.append(Issue(path, None, value, "needs one of "
                                   + " or ".join(spec.one_of_required)))


def _describe(spec: s.Spec) -> str:
    if isinstance(spec, s.Scalar):
        return _EXPECTED[spec.type]
    if isinstance(spec, s.ListOf):
        return "a list"
    if isinstance(spec, (s.MapOf, s.Fields)):
        return "a mapping"
    if isinstance(spec, s.IntOrStr):
        return "an integer or a string"
    return "a value"


# -- documents -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """What a document says it is, as far as it can be read (strings only)."""

    api_version: str | None
    kind: str | None
    namespace: str | None
    name: str | None

    @property
    def group(self) -> str:
        return (self.api_version or "").rpartition("/")[0]

    @property
    def version(self) -> str:
        return (self.api_version or "").rpartition("/")[2]


def identity(body: dict[str, Any]) -> Identity:
    """apiVersion, kind, namespace and name of a body, each None unless a string."""
    metadata = body.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}

    def text(value: Any) -> str | None:
        return value if isinstance(value, str) else None

    return Identity(text(body.get("apiVersion")), text(body.get("kind")),
                    text(metadata.get("namespace")), text(metadata.get("name")))


@dataclass
class DocumentCheck:
    """What ``check_document`` found in one document."""

    problems: list[InvalidDocument] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    """Paths of the fields the tool does not understand (MetalLB kinds)."""
    described: bool = False
    """True when the tool reads this kind (it was checked against a description)."""
    metallb_version: str | None = None
    """The version of a metallb.io object (None for any other document)."""

    @property
    def ok(self) -> bool:
        return not self.problems


def spec_for(ident: Identity) -> s.Fields | None:
    """The description of a kind the tool reads, or None for a kind it passes over."""
    if ident.kind is None:
        return None
    if ident.group == mlb.GROUP:
        return s.METALLB.get((ident.kind, ident.version))
    return s.KUBERNETES.get((ident.group, ident.kind))


def reads(body: dict[str, Any]) -> bool:
    """True for a document of a kind the tool reads (one ``check_document`` described)."""
    return spec_for(identity(body)) is not None


def problems_of(report: Report, source: str, ident: Identity) -> Iterator[InvalidDocument]:
    """The issues of a report as errors naming the source and the object."""
    for issue in report.issues:
        yield InvalidDocument(
            source=source, field=issue.path or None, expected=issue.expected,
            found=issue.found, message=issue.message, kind=ident.kind,
            namespace=ident.namespace, name=ident.name,
        )


def _metallb_version(body: dict[str, Any], ident: Identity, report: Report) -> str | None:
    """The version of a metallb.io object; None when the document is not MetalLB's. A
    MetalLB-looking apiVersion MetalLB would not serve is a problem."""
    kind, api_version = ident.kind, ident.api_version
    if api_version is None or "metallb" not in api_version or (
        api_version.partition("/")[0].endswith(".metallb.io")  # frr-k8s' own API group
    ):
        if kind in mlb.SERVED_VERSIONS and body.get("apiVersion") is None:
            report.issues.append(Issue("apiVersion", None, MISSING))
        return None
    group, slash, version = api_version.partition("/")
    if kind is None:
        report.issues.append(Issue("kind", None, MISSING))
        return None
    expected = mlb.SERVED_VERSIONS.get(kind)
    if expected is None:
        known = ", ".join(sorted(mlb.SERVED_VERSIONS))
        report.issues.append(Issue("kind", None, kind, f"{kind!r} is not a MetalLB kind"
                                                        f" (known: {known})"))
        return None
    if group != mlb.GROUP or not slash or version not in expected:
        report.issues.append(Issue(
            "apiVersion", None, api_version,
            f"{api_version!r} is not a version MetalLB serves for {kind} (expected"
            f" {' or '.join(f'{mlb.GROUP}/{v}' for v in expected)})"))
        return None
    return version


def check_document(doc: SourceDocument) -> DocumentCheck:
    """Check one document where it enters: apiVersion and kind are strings, a metallb.io
    apiVersion is one MetalLB serves, and a kind the tool reads has the structure its
    description says."""
    body = doc.body
    ident = identity(body)
    result = DocumentCheck()
    report = Report()
    for key in ("apiVersion", "kind"):
        value = body.get(key)
        if value is not None and not isinstance(value, str):
            report.issues.append(Issue(key, "a string", value))
    if report.ok:
        result.metallb_version = _metallb_version(body, ident, report)
    spec = spec_for(ident) if report.ok else None
    if spec is not None:
        result.described = True
        report.prune_nulls = True
        _fields(body, spec, "", report)
    result.problems.extend(problems_of(report, doc.origin, ident))
    result.unknown.extend(report.unknown)
    return result


KUBERNETES_OBJECT = s.fields(required=("metadata",), apiVersion=s.STR, kind=s.STR,
                             metadata=s.OBJECT_META)
"""Any Kubernetes object: what a server needs to store it (the lab loading a snapshot)."""


def check_object(doc: SourceDocument) -> list[InvalidDocument]:
    """``check_document``'s problems, and for a document of a kind the tool does not read
    (but a kind), those of an object a server could not store (no ``metadata.name``)."""
    checked = check_document(doc)
    if checked.ok and not checked.described and isinstance(doc.body.get("kind"), str):
        report = check(doc.body, KUBERNETES_OBJECT)
        checked.problems.extend(problems_of(report, doc.origin, identity(doc.body)))
    return checked.problems
