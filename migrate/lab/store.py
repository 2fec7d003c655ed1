"""The lab's in-memory object store: the state behind the emulated Kubernetes API server.

Thread-safe (one re-entrant lock), keyed by ``(group, kind, namespace, name)``. It keeps the
semantics a client can notice: a global ``resourceVersion`` counter bumped on every write,
``uid`` / ``creationTimestamp`` / ``generation``, 409 on a stale update and on AlreadyExists,
``managedFields`` per field manager, empty ``labels`` / ``annotations`` dropped on every
write (Go ``omitempty``), status subresources, admission hooks that may reject a
write, and an event log that watches read from. The HTTP layer lives in ``server.py``; the
controller models hook in through :meth:`Store.subscribe` and :meth:`Store.add_admission_hook`.

Objects passed in and handed out are deep copies: nobody can mutate the store's state. Stored
versions are never mutated in place either (every write stores a new dict), so the event log
and :meth:`Store.select` can share them read-only.
"""

from __future__ import annotations

import builtins
import copy
import datetime as _dt
import ipaddress
import itertools
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
Subscriber = Callable[[str, Obj, Obj | None], None]
AdmissionHook = Callable[[str, Obj, Obj | None], None]

EVENT_LOG_SIZE = 50_000
"""How many past events a watch can resume from; older resourceVersions get 410 Gone."""

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


# --------------------------------------------------------------------------- time


class Clock:
    """A time source: the wall clock, or a manual clock the tests step."""

    def __init__(self, *, manual: bool, start: float = 0.0) -> None:
        self._manual = manual
        self._now = start
        self._lock = threading.Lock()

    @classmethod
    def manual(cls, start: float = 0.0) -> Clock:
        """A clock that only moves when :meth:`advance` is called."""
        return cls(manual=True, start=start)

    @classmethod
    def real(cls) -> Clock:
        """The wall clock (``time.time()``)."""
        return cls(manual=False)

    @property
    def is_manual(self) -> bool:
        """True for a clock the tests step."""
        return self._manual

    def now(self) -> float:
        """Seconds; a manual clock starts at 0.0 unless told otherwise."""
        if not self._manual:
            return time.time()
        with self._lock:
            return self._now

    def advance(self, seconds: float) -> None:
        """Move a manual clock forward."""
        if not self._manual:
            raise RuntimeError("only a manual clock can be advanced")
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        with self._lock:
            self._now += seconds

    def rfc3339(self, at: float | None = None) -> str:
        """The time as Kubernetes writes it (``2026-01-02T03:04:05Z``).

        A manual clock's 0.0 is mapped to 2026-01-01T00:00:00Z so timestamps look real.
        """
        return rfc3339(self.now() if at is None else at, manual=self._manual)

    def now_datetime(self) -> _dt.datetime:
        """The clock's now as an aware UTC datetime (what timestamps are compared with)."""
        return _epoch(self.now(), manual=self._manual)

    def rfc3339_micro(self, at: float | None = None) -> str:
        """The time with microseconds, as in Lease ``renewTime``/``acquireTime``."""
        seconds = self.now() if at is None else at
        stamp = _epoch(seconds, manual=self._manual)
        return stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_MANUAL_EPOCH = _dt.datetime(2026, 1, 1, tzinfo=_dt.UTC)


def _epoch(seconds: float, *, manual: bool) -> _dt.datetime:
    if manual:
        return _MANUAL_EPOCH + _dt.timedelta(seconds=seconds)
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.UTC)


def rfc3339(seconds: float, *, manual: bool = False) -> str:
    """Seconds (epoch, or manual-clock seconds) as an RFC 3339 UTC timestamp."""
    return _epoch(seconds, manual=manual).strftime("%Y-%m-%dT%H:%M:%SZ")


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """A refusal the server maps to a Kubernetes ``Status`` object."""

    def __init__(
        self,
        status: int,
        reason: str,
        message: str,
        *,
        details: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message
        self.details = details
        self.headers = headers or {}

    def to_status(self) -> Obj:
        """The ``Status`` body the real API server would send."""
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.status,
        }
        if self.details:
            body["details"] = self.details
        return body

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {self.reason!r}, {self.message!r})"


def not_found(rtype: ResourceType, name: str) -> ApiError:
    """404 as the real server words it."""
    return ApiError(
        404,
        "NotFound",
        f'{rtype.resource_label} "{name}" not found',
        details={"name": name, "group": rtype.group, "kind": rtype.plural},
    )


def conflict(rtype: ResourceType, name: str) -> ApiError:
    """409 Conflict on a stale resourceVersion."""
    return ApiError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rtype.resource_label} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        details={"name": name, "group": rtype.group, "kind": rtype.plural},
    )


def invalid(rtype: ResourceType, name: str, causes: list[dict[str, str]]) -> ApiError:
    """422 Invalid with ``details.causes`` carrying field paths."""
    # field.ErrorList.ToAggregate: each distinct message once, "[a, b]" when more than one.
    messages = list(dict.fromkeys(
        f"{c['field']}: {c['message']}" if c.get("field") else c["message"] for c in causes
    ))
    summary = messages[0] if len(messages) == 1 else f"[{', '.join(messages)}]"
    return ApiError(
        422,
        "Invalid",
        f'{rtype.kind}{"." + rtype.group if rtype.group else ""} "{name}" is invalid: {summary}',
        details={"name": name, "group": rtype.group, "kind": rtype.kind, "causes": causes},
    )


def bad_request(message: str) -> ApiError:
    """400 BadRequest."""
    return ApiError(400, "BadRequest", message)


# --------------------------------------------------------------------------- kinds


@dataclass
class ResourceType:
    """One served resource: its names, scope, versions and (for custom kinds) schemas."""

    group: str
    kind: str
    plural: str
    singular: str
    namespaced: bool
    versions: list[str]
    storage_version: str
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    status_subresource: bool = False
    scale_subresource: bool = False
    custom: bool = False
    schemas: dict[str, Obj] = field(default_factory=dict)
    """openAPIV3Schema per version (custom kinds)."""
    crd_name: str | None = None
    printer_columns: dict[str, list[Obj]] = field(default_factory=dict)
    """additionalPrinterColumns per version (custom kinds)."""

    @property
    def resource_label(self) -> str:
        """``services`` or ``ipaddresspools.metallb.io``, as error messages name a resource."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        """``ServiceList``."""
        return f"{self.kind}List"

    def api_version(self, version: str | None = None) -> str:
        """``v1`` or ``group/version``."""
        ver = version or self.storage_version
        return f"{self.group}/{ver}" if self.group else ver


def _builtin(
    group: str,
    version: str,
    kind: str,
    plural: str,
    *,
    namespaced: bool = True,
    short: Sequence[str] = (),
    status: bool = False,
    scale: bool = False,
) -> ResourceType:
    return ResourceType(
        group=group,
        kind=kind,
        plural=plural,
        singular=kind.lower(),
        namespaced=namespaced,
        versions=[version],
        storage_version=version,
        short_names=list(short),
        categories=["all"] if kind in {"Service", "Pod", "Deployment", "DaemonSet"} else [],
        status_subresource=status,
        scale_subresource=scale,
    )


def builtin_types() -> list[ResourceType]:
    """The built-in kinds the lab serves."""
    return [
        _builtin("", "v1", "Namespace", "namespaces", namespaced=False, short=["ns"], status=True),
        _builtin("", "v1", "Node", "nodes", namespaced=False, short=["no"], status=True),
        _builtin("", "v1", "Service", "services", short=["svc"], status=True),
        _builtin("", "v1", "Endpoints", "endpoints", short=["ep"]),
        _builtin("", "v1", "Pod", "pods", short=["po"], status=True),
        _builtin("", "v1", "ConfigMap", "configmaps", short=["cm"]),
        _builtin("", "v1", "Secret", "secrets"),
        _builtin("", "v1", "Event", "events", short=["ev"]),
        _builtin("", "v1", "ServiceAccount", "serviceaccounts", short=["sa"]),
        _builtin("discovery.k8s.io", "v1", "EndpointSlice", "endpointslices"),
        _builtin("apps", "v1", "Deployment", "deployments", short=["deploy"], status=True,
                 scale=True),
        _builtin("apps", "v1", "DaemonSet", "daemonsets", short=["ds"], status=True),
        _builtin("apps", "v1", "StatefulSet", "statefulsets", short=["sts"], status=True,
                 scale=True),
        _builtin("coordination.k8s.io", "v1", "Lease", "leases"),
        _builtin("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration",
                 "validatingwebhookconfigurations", namespaced=False),
        _builtin("admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration",
                 "mutatingwebhookconfigurations", namespaced=False),
        _builtin("apiextensions.k8s.io", "v1", "CustomResourceDefinition",
                 "customresourcedefinitions", namespaced=False, short=["crd", "crds"],
                 status=True),
    ]


def split_api_version(api_version: str) -> tuple[str, str]:
    """``apps/v1`` -> (``apps``, ``v1``); ``v1`` -> (``""``, ``v1``)."""
    if "/" in api_version:
        group, _, version = api_version.partition("/")
        return group, version
    return "", api_version


# --------------------------------------------------------------------------- selectors


@dataclass(frozen=True)
class Requirement:
    """One term of a label or field selector."""

    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: tuple[str, ...] = ()

    def matches(self, present: bool, value: str) -> bool:
        """Whether a label/field (present or not, with this value) satisfies the term."""
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator == "=":
            return present and value == self.values[0]
        if self.operator == "!=":
            return not present or value != self.values[0]
        if self.operator == "in":
            return present and value in self.values
        return not present or value not in self.values  # notin


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            terms.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    terms.append("".join(current).strip())
    return [t for t in terms if t]


def _equality_term(term: str) -> Requirement | None:
    """``k!=v``, ``k==v`` or ``k=v`` as a Requirement (both selector kinds share these forms);
    None when the term is none of them."""
    for written, operator in (("!=", "!="), ("==", "="), ("=", "=")):
        if written in term:
            key, _, value = term.partition(written)
            return Requirement(key.strip(), operator, (value.strip(),))
    return None


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse ``a=b,c!=d,e in (x,y),f notin (z),g,!h`` (raises ApiError 400)."""
    if not text:
        return []
    out: list[Requirement] = []
    for term in _split_terms(text):
        lowered = term.replace("\t", " ")
        for word in (" notin ", " in "):
            if word in lowered and lowered.rstrip().endswith(")"):
                key, _, rest = lowered.partition(word)
                rest = rest.strip()
                if not rest.startswith("("):
                    raise bad_request(f"unable to parse requirement: {term}")
                values = tuple(v.strip() for v in rest[1:-1].split(",") if v.strip())
                out.append(Requirement(key.strip(), word.strip(), values))
                break
        else:
            equality = _equality_term(term)
            if term.startswith("!") and "=" not in term:
                out.append(Requirement(term[1:].strip(), "!"))
            elif equality is not None:
                out.append(equality)
            elif " " in term.strip() or "(" in term:
                raise bad_request(f"unable to parse requirement: {term}")
            else:
                out.append(Requirement(term.strip(), "exists"))
    for req in out:
        if not req.key:
            raise bad_request(f"unable to parse requirement: empty key in {text!r}")
    return out


def parse_field_selector(text: str | None) -> list[Requirement]:
    """Parse ``metadata.name=x,spec.type!=ClusterIP`` (``=``, ``==``, ``!=`` only)."""
    if not text:
        return []
    out: list[Requirement] = []
    for term in _split_terms(text):
        equality = _equality_term(term)
        if equality is None:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        out.append(equality)
    return out


def labels_match(requirements: Iterable[Requirement], labels: dict[str, str]) -> bool:
    """Whether labels satisfy every requirement."""
    return all(r.matches(r.key in labels, str(labels.get(r.key, ""))) for r in requirements)


def _field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    if isinstance(node, bool):
        return "true" if node else "false"
    return "" if node is None else str(node)


def fields_match(requirements: Iterable[Requirement], obj: Obj) -> bool:
    """Whether an object satisfies a field selector (any dotted path is accepted)."""
    for req in requirements:
        value = _field_value(obj, req.key)
        if req.operator == "=" and value != req.values[0]:
            return False
        if req.operator == "!=" and value == req.values[0]:
            return False
    return True


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class StatusWrite:
    """One write that touched a Service's ``status.loadBalancer.ingress``."""

    time: float
    namespace: str
    name: str
    manager: str
    before: tuple[str, ...]
    after: tuple[str, ...]


@dataclass(frozen=True)
class WatchEvent:
    """One committed change, as a watch sends it (``object`` is shared: do not mutate)."""

    resource_version: int
    type: str  # ADDED, MODIFIED, DELETED
    group: str
    kind: str
    namespace: str
    object: Obj
    old: Obj | None = None
    """The object before a MODIFIED event (shared: do not mutate)."""


def _ingress_ips(obj: Obj | None) -> tuple[str, ...]:
    if not obj:
        return ()
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return tuple(str(i.get("ip") or i.get("hostname") or "")
                 for i in ingress if isinstance(i, dict))


def _same_object(new: Obj, old: Obj) -> bool:
    """Whether a write changes nothing but bookkeeping (resourceVersion, managedFields)."""
    ignored = ("resourceVersion", "managedFields", "generation")
    if {k: v for k, v in new.items() if k != "metadata"} != {
            k: v for k, v in old.items() if k != "metadata"}:
        return False
    new_meta = {k: v for k, v in (new.get("metadata") or {}).items() if k not in ignored}
    old_meta = {k: v for k, v in (old.get("metadata") or {}).items() if k not in ignored}
    return new_meta == old_meta


OMITTED_WHEN_EMPTY = ("labels", "annotations")
"""Metadata maps the real server drops when empty or null (Go ``omitempty``)."""


def _omit_empty_maps(meta: Obj) -> None:
    """Drop empty ``labels`` / ``annotations``, as the real server does on every write (a merge
    patch that removes the last label leaves no ``labels`` key)."""
    for key in OMITTED_WHEN_EMPTY:
        if key in meta and (meta[key] is None or meta[key] == {}):
            del meta[key]


def _spec_part(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


Key = tuple[str, str, str, str]  # group, kind, namespace ("" when cluster-scoped), name


class Store:
    """The in-memory cluster state (see the module docstring)."""

    def __init__(
        self, clock: Clock | None = None, *, crds: bool = True,
        event_log_size: int = EVENT_LOG_SIZE,
    ) -> None:
        """A store with the built-in kinds, default namespaces and (``crds``) the MetalLB and
        Cilium CRDs found by :func:`migrate.lab.crds.default_crds`; watches can resume from
        the last ``event_log_size`` events."""
        self.clock = clock or Clock.real()
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._objects: dict[Key, Obj] = {}
        self._types: dict[tuple[str, str], ResourceType] = {}
        self._rv = 0
        self._events: deque[WatchEvent] = deque(maxlen=event_log_size)
        self._subscribers: list[Subscriber] = []
        self._hooks: list[AdmissionHook] = []
        self._pending: deque[tuple[str, Obj, Obj | None]] = deque()
        self._dispatch_lock = threading.RLock()
        self._dispatch_local = threading.local()
        self._cluster_ips = itertools.count(10)
        self._node_ports = itertools.count(30000)
        self.status_writes: list[StatusWrite] = []
        """Every write that changed (or wrote to the status of) a Service's ingress IPs,
        snapshot loading excepted."""
        for rtype in builtin_types():
            self._types[(rtype.group, rtype.kind)] = rtype
        for name in DEFAULT_NAMESPACES:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
                        manager="lab")
        if crds:
            from migrate.lab.crds import default_crds

            for crd in default_crds():
                self.create(crd, manager="lab")

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_snapshot(
        cls, paths: Sequence[str | Path], clock: Clock | None = None
    ) -> tuple[Store, list[str]]:
        """A store loaded from snapshot files/folders (same reader as ``migrate convert``).

        The snapshot's own CRDs come first; MetalLB/Cilium kinds it lacks come from
        :func:`migrate.lab.crds.default_crds`. Namespaces referenced but absent are created.
        Returns the store and one line per document skipped (unknown kind, invalid, duplicate);
        InputProblems (naming the file, object and field) for a snapshot that does not load:
        a file that does not parse, a document that is not a storable object.
        """
        from migrate.errors import InputProblems
        from migrate.lab.crds import default_crds
        from migrate.sources.files import load_documents
        from migrate.sources.validate import check_object

        store = cls(clock, crds=False)
        docs = load_documents(list(paths))
        # Checked where they enter, as migrate's readers check them: a document that is not
        # an object a server could store is an error naming its file, object and field.
        problems = [problem for doc in docs for problem in check_object(doc)]
        if problems:
            raise InputProblems(problems)
        skipped: list[str] = []

        def is_crd(body: Obj) -> bool:
            return bool(
                body.get("kind") == "CustomResourceDefinition"
                and str(body.get("apiVersion", "")).startswith("apiextensions.k8s.io/")
            )

        def load(body: Obj, origin: str) -> None:
            try:
                store.create(copy.deepcopy(body), manager="snapshot", keep_status=True,
                             keep_metadata=True)
            except ApiError as exc:
                skipped.append(f"{origin}: {exc.message}")

        for doc in docs:
            if is_crd(doc.body):
                load(doc.body, doc.origin)
        from migrate.lab.versions import snapshot_cilium_version

        cilium = snapshot_cilium_version(doc.body for doc in docs)
        store._install_missing_crds(default_crds(cilium))
        for doc in docs:
            if doc.body.get("kind") == "Namespace" and not is_crd(doc.body):
                if store.try_get("", "Namespace", str(doc.body.get("metadata", {}).get("name"))):
                    store.delete("", "Namespace", doc.body["metadata"]["name"], manager="lab")
                load(doc.body, doc.origin)
        for doc in docs:
            if not is_crd(doc.body) and doc.body.get("kind") != "Namespace":
                load(doc.body, doc.origin)
        return store, skipped

    def _install_missing_crds(self, crds: Iterable[Obj]) -> None:
        for crd in crds:
            names = crd.get("spec", {}).get("names", {})
            group = crd.get("spec", {}).get("group", "")
            if (group, names.get("kind")) in self._types:
                continue
            if self.try_get("apiextensions.k8s.io", "CustomResourceDefinition",
                            crd["metadata"]["name"]) is not None:
                continue
            self.create(crd, manager="lab")

    # ----------------------------------------------------------------- kinds

    def resource_type(self, group: str, kind: str) -> ResourceType:
        """The served type for (group, kind); ApiError 404 when unknown."""
        with self._lock:
            rtype = self._types.get((group, kind))
        if rtype is None:
            raise ApiError(404, "NotFound",
                           f'the server could not find the requested resource ({kind}.{group})')
        return rtype

    def resource_types(self) -> list[ResourceType]:
        """Every served type (a snapshot of the registry)."""
        with self._lock:
            return list(self._types.values())

    def find_type(self, group: str, version: str, plural: str) -> ResourceType | None:
        """The type served at ``/apis/group/version/plural`` (or None)."""
        with self._lock:
            for rtype in self._types.values():
                if rtype.group == group and rtype.plural == plural and version in rtype.versions:
                    return rtype
        return None

    def _type_of(self, obj: Obj) -> ResourceType:
        return self._type_and_version(obj)[0]

    def _type_and_version(self, obj: Obj) -> tuple[ResourceType, str]:
        api_version = obj.get("apiVersion")
        kind = obj.get("kind")
        if not isinstance(api_version, str) or not isinstance(kind, str):
            raise bad_request("Object 'Kind' or 'apiVersion' is missing")
        group, version = split_api_version(api_version)
        rtype = self._types.get((group, kind))
        if rtype is None or version not in rtype.versions:
            raise ApiError(
                404, "NotFound",
                f'no matches for kind "{kind}" in version "{api_version}"',
            )
        return rtype, version

    # ----------------------------------------------------------------- reads

    def resource_version(self) -> int:
        """The newest resourceVersion issued."""
        with self._lock:
            return self._rv

    def get(self, group: str, kind: str, name: str, namespace: str | None = None) -> Obj:
        """A copy of one object; ApiError 404 when absent."""
        with self._lock:
            rtype = self.resource_type(group, kind)
            obj = self._objects.get(self._key(rtype, name, namespace))
            if obj is None:
                raise not_found(rtype, name)
            return copy.deepcopy(obj)

    def try_get(self, group: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """A copy of one object, or None."""
        try:
            return self.get(group, kind, name, namespace)
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def peek(self, group: str, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        """One object, SHARED (must not be mutated), or None: a GET without the copy, for
        the controller models' frequent reads (client-go lease elections)."""
        with self._lock:
            rtype = self._types.get((group, kind))
            if rtype is None:
                return None
            return self._objects.get(self._key(rtype, name, namespace))

    def list(
        self,
        group: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[Obj]:
        """Copies of the matching objects, sorted by namespace then name."""
        items, _ = self.select(group, kind, namespace, label_selector, field_selector)
        return [copy.deepcopy(o) for o in items]

    def select(
        self,
        group: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> tuple[builtins.list[Obj], int]:
        """Matching objects, SHARED (must not be mutated), and the resourceVersion read at.

        Used by the HTTP layer to page and serialise without copying every object.
        """
        labels = parse_label_selector(label_selector)
        fields = parse_field_selector(field_selector)
        with self._lock:
            rtype = self.resource_type(group, kind)
            ns = namespace or ""
            found = [
                (key, obj) for key, obj in self._objects.items()
                if key[0] == rtype.group and key[1] == rtype.kind
                and (not ns or key[2] == ns)
            ]
            rv = self._rv
        found.sort(key=lambda pair: (pair[0][2], pair[0][3]))
        out = []
        for _, obj in found:
            meta = obj.get("metadata") or {}
            if labels and not labels_match(labels, meta.get("labels") or {}):
                continue
            if fields and not fields_match(fields, obj):
                continue
            out.append(obj)
        return out, rv

    # ----------------------------------------------------------------- writes

    def create(
        self,
        obj: Obj,
        *,
        manager: str = "lab",
        dry_run: bool = False,
        require_namespace: bool = False,
        operation: str = "Update",
        keep_status: bool = True,
        keep_metadata: bool = False,
    ) -> Obj:
        """Create an object; returns the stored copy.

        ApiError 409 AlreadyExists, 422 Invalid (custom kinds are validated against their
        schema, with defaults applied), 404 when ``require_namespace`` and the namespace is
        missing (the HTTP layer asks for this; otherwise a missing namespace is created).
        ``keep_status=False`` drops a client-sent status, as the real server does on create
        for kinds with a status subresource. ``keep_metadata=True`` (snapshot loading) keeps a
        given uid, creationTimestamp, generation and managedFields.
        """
        with self._lock:
            rtype, version = self._type_and_version(obj)
            new = copy.deepcopy(obj)
            meta = new.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise bad_request("metadata must be an object")
            _omit_empty_maps(meta)
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = f"{meta['generateName']}{uuid.uuid4().hex[:5]}"
            name = meta.get("name")
            if not name or not isinstance(name, str):
                raise invalid(rtype, "", [{"reason": "FieldValueRequired",
                                           "message": "Required value: name or generateName is "
                                           "required", "field": "metadata.name"}])
            if rtype.namespaced:
                namespace = meta.get("namespace") or "default"
                meta["namespace"] = namespace
                self._ensure_namespace(namespace, require_namespace, dry_run, manager)
            else:
                meta.pop("namespace", None)
            key = self._key(rtype, name, meta.get("namespace"))
            if key in self._objects:
                raise ApiError(
                    409, "AlreadyExists", f'{rtype.resource_label} "{name}" already exists',
                    details={"name": name, "group": rtype.group, "kind": rtype.plural},
                )
            if rtype.status_subresource and not keep_status:
                new.pop("status", None)
            new["apiVersion"] = rtype.api_version()
            self._prepare(rtype, version, new, None, builtin_defaults=not keep_metadata)
            given = dict(meta) if keep_metadata else {}
            meta["uid"] = given.get("uid") or str(uuid.uuid4())
            meta["creationTimestamp"] = given.get("creationTimestamp") or self.clock.rfc3339()
            generation = given.get("generation")
            meta["generation"] = generation if isinstance(generation, int) else 1
            meta.pop("resourceVersion", None)
            meta.pop("deletionTimestamp", None)
            if not (keep_metadata and isinstance(given.get("managedFields"), list)):
                meta.pop("managedFields", None)
                self._record_manager(meta, manager, operation, None, rtype)
            self._admit("CREATE", new, None)
            if dry_run:
                meta["resourceVersion"] = str(self._rv)
                return copy.deepcopy(new)
            self._commit(rtype, key, "ADDED", new, None, manager, record=not keep_metadata)
            result = copy.deepcopy(new)
        self._dispatch()
        return result

    def update(
        self,
        obj: Obj,
        *,
        subresource: str | None = None,
        manager: str = "lab",
        dry_run: bool = False,
        operation: str = "Update",
    ) -> Obj:
        """Replace an object (see the store contract): 404 when absent, 409 when stale.

        ``subresource="status"`` replaces only ``.status``; otherwise ``.status`` is kept from
        the stored object for kinds with a status subresource.
        """
        with self._lock:
            rtype, version = self._type_and_version(obj)
            meta_in = obj.get("metadata") or {}
            name = meta_in.get("name")
            if not name:
                raise invalid(rtype, "", [{"reason": "FieldValueRequired",
                                           "message": "Required value: name is required",
                                           "field": "metadata.name"}])
            namespace = (meta_in.get("namespace") or "default") if rtype.namespaced else None
            key = self._key(rtype, name, namespace)
            old = self._objects.get(key)
            if old is None:
                raise not_found(rtype, name)
            sent_rv = meta_in.get("resourceVersion")
            if sent_rv not in (None, "") and str(sent_rv) != old["metadata"]["resourceVersion"]:
                raise conflict(rtype, name)
            if subresource == "status":
                new = copy.deepcopy(old)
                if "status" in obj:
                    new["status"] = copy.deepcopy(obj["status"])
                else:
                    new.pop("status", None)
            elif subresource in (None, ""):
                new = copy.deepcopy(obj)
                new["apiVersion"] = rtype.api_version()
                if rtype.status_subresource:
                    if "status" in old:
                        new["status"] = copy.deepcopy(old["status"])
                    else:
                        new.pop("status", None)
            else:
                raise bad_request(f"unknown subresource {subresource!r}")
            meta = new.setdefault("metadata", {})
            _omit_empty_maps(meta)
            for fixed in ("uid", "creationTimestamp", "namespace", "name"):
                if fixed in old["metadata"]:
                    meta[fixed] = old["metadata"][fixed]
            if not rtype.namespaced:
                meta.pop("namespace", None)
            meta["managedFields"] = copy.deepcopy(old["metadata"].get("managedFields") or [])
            if "deletionTimestamp" in old["metadata"]:
                meta["deletionTimestamp"] = old["metadata"]["deletionTimestamp"]
            self._prepare(rtype, version, new, old,
                          builtin_defaults=subresource != "status")
            generation = int(old["metadata"].get("generation") or 1)
            if _spec_part(new) != _spec_part(old):
                generation += 1
            meta["generation"] = generation
            self._admit("UPDATE", new, old)
            if _same_object(new, old):
                # a no-op write: like the real server, no new resourceVersion and no event
                if rtype.kind == "Service" and rtype.group == "" and subresource == "status":
                    ips = _ingress_ips(old)
                    self.status_writes.append(StatusWrite(
                        time=self.clock.now(), namespace=key[2], name=key[3], manager=manager,
                        before=ips, after=ips))
                return copy.deepcopy(old)
            self._record_manager(meta, manager, operation, subresource, rtype)
            if dry_run:
                meta["resourceVersion"] = old["metadata"]["resourceVersion"]
                return copy.deepcopy(new)
            self._commit(rtype, key, "MODIFIED", new, old, manager, subresource=subresource)
            result = copy.deepcopy(new)
        self._dispatch()
        return result

    def delete(
        self,
        group: str,
        kind: str,
        name: str,
        namespace: str | None = None,
        *,
        dry_run: bool = False,
        manager: str = "lab",
    ) -> Obj:
        """Delete an object and return it as it was; 404 when absent (or its namespace is).

        Deleting a Namespace deletes everything in it; deleting a CRD unregisters its kind and
        deletes its objects. Finalizers are not honoured (deletion is immediate).
        """
        with self._lock:
            rtype = self.resource_type(group, kind)
            if rtype.namespaced:
                ns = namespace or "default"
                if ("", "Namespace", "", ns) not in self._objects:
                    raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                                   details={"name": ns, "kind": "namespaces"})
            key = self._key(rtype, name, namespace)
            old = self._objects.get(key)
            if old is None:
                raise not_found(rtype, name)
            self._admit("DELETE", old, old)
            if dry_run:
                return copy.deepcopy(old)
            if rtype.kind == "Namespace" and rtype.group == "":
                for other in [k for k in self._objects if k[2] == name]:
                    self._remove(other, manager)
            if rtype.kind == "CustomResourceDefinition":
                self._unregister_crd(old, manager)
            self._remove(key, manager)
            result = copy.deepcopy(old)
        self._dispatch()
        return result

    # ----------------------------------------------------------------- hooks

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback(type, obj, old)`` after every committed write, outside the lock."""
        with self._lock:
            self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        """Stop calling a subscriber."""
        with self._lock:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

    def add_admission_hook(self, hook: AdmissionHook) -> None:
        """Call ``hook(operation, new, old)`` before a write commits; it may raise ApiError.

        For DELETE both ``new`` and ``old`` are the object being deleted. Hooks see dry-run
        writes too (as real admission does), and run under the store lock.
        """
        with self._lock:
            self._hooks.append(hook)

    def remove_admission_hook(self, hook: AdmissionHook) -> None:
        """Remove an admission hook."""
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)

    # ----------------------------------------------------------------- watch support

    def events_after(
        self,
        resource_version: int,
        *,
        group: str,
        kind: str,
        namespace: str | None = None,
        timeout: float = 0.0,
    ) -> tuple[builtins.list[WatchEvent], int]:
        """Events of one kind newer than ``resource_version``, waiting up to ``timeout`` for one.

        Returns the events and the newest resourceVersion seen; ApiError 410 Gone when the
        resourceVersion is older than the event log holds.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if self._events and resource_version < self._events[0].resource_version - 1:
                    raise ApiError(410, "Expired",
                                   f"too old resource version: {resource_version} "
                                   f"({self._events[0].resource_version - 1})")
                found = []
                for event in reversed(self._events):  # newest first; stop at the old ones
                    if event.resource_version <= resource_version:
                        break
                    if event.group == group and event.kind == kind and (
                            not namespace or event.namespace == namespace):
                        found.append(event)
                found.reverse()
                newest = self._rv
                if found:
                    return found, newest
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return [], newest
                self._changed.wait(remaining)

    def wake_watchers(self) -> None:
        """Wake every waiting :meth:`events_after` (used when the server stops)."""
        with self._changed:
            self._changed.notify_all()

    # ----------------------------------------------------------------- internals

    def _key(self, rtype: ResourceType, name: str, namespace: str | None) -> Key:
        ns = (namespace or "default") if rtype.namespaced else ""
        return (rtype.group, rtype.kind, ns, name)

    def _ensure_namespace(self, ns: str, require: bool, dry_run: bool, manager: str) -> None:
        if ("", "Namespace", "", ns) in self._objects:
            return
        if require:
            raise ApiError(404, "NotFound", f'namespaces "{ns}" not found',
                           details={"name": ns, "kind": "namespaces"})
        if not dry_run:
            self.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
                        manager=manager)

    def _record_manager(
        self, meta: Obj, manager: str, operation: str, subresource: str | None,
        rtype: ResourceType,
    ) -> None:
        entries = [
            e for e in meta.get("managedFields") or []
            if not (e.get("manager") == manager and e.get("operation") == operation
                    and e.get("subresource") == subresource)
        ]
        entry: Obj = {
            "manager": manager,
            "operation": operation,
            "apiVersion": rtype.api_version(),
            "time": self.clock.rfc3339(),
            "fieldsType": "FieldsV1",
            "fieldsV1": {},
        }
        if subresource:
            entry["subresource"] = subresource
        entries.append(entry)
        meta["managedFields"] = entries

    def _prepare(
        self, rtype: ResourceType, version: str, new: Obj, old: Obj | None, *,
        builtin_defaults: bool = True,
    ) -> None:
        """Defaults and validation, as the real server's strategies and schemas do.

        ``builtin_defaults=False`` (snapshot loading) leaves built-in kinds as recorded: no
        cluster IP or node port is allocated for a Service the snapshot lists without one.
        Names, labels, annotations (and the label fields of a few built-in specs) are
        validated as kube-apiserver does, ahead of a custom kind's schema
        (:mod:`migrate.lab.validation`): 422 Invalid naming each field.
        """
        from migrate.lab.validation import DecodeError, object_causes

        try:
            causes = object_causes(rtype, new, old)
        except DecodeError as exc:
            raise bad_request(str(exc)) from None
        if rtype.custom:
            from migrate.lab.crds import apply_defaults, prune, validate

            schema = rtype.schemas.get(version)
            if schema is not None:
                prune(schema, new)
                apply_defaults(schema, new)
                causes += validate(schema, new, rtype.crd_name or rtype.plural, version)
            if causes:
                raise invalid(rtype, new["metadata"]["name"], causes)
            return
        if causes:
            raise invalid(rtype, new["metadata"]["name"], causes)
        if rtype.group == "" and rtype.kind == "Service":
            if builtin_defaults:
                self._default_service(new, old)
        elif rtype.group == "" and rtype.kind == "Namespace":
            new.setdefault("spec", {}).setdefault("finalizers", ["kubernetes"])
            new.setdefault("status", {}).setdefault("phase", "Active")
        elif rtype.group == "apps" and rtype.kind in ("Deployment", "StatefulSet"):
            spec = new.setdefault("spec", {})
            if spec.get("replicas") is None:
                spec["replicas"] = 1
            if not isinstance(spec["replicas"], int) or spec["replicas"] < 0:
                raise invalid(rtype, new["metadata"]["name"], [{
                    "reason": "FieldValueInvalid",
                    "message": f"Invalid value: {spec['replicas']!r}: must be greater than or "
                    "equal to 0", "field": "spec.replicas"}])
        elif rtype.kind == "CustomResourceDefinition":
            from migrate.lab.crds import CrdError, types_from_crd

            try:
                types_from_crd(new)
            except CrdError as exc:
                raise invalid(rtype, new["metadata"]["name"], [{
                    "reason": "FieldValueInvalid", "message": str(exc), "field": exc.field}],
                ) from None

    def _default_service(self, new: Obj, old: Obj | None) -> None:
        spec = new.setdefault("spec", {})
        spec.setdefault("type", "ClusterIP")
        if old is not None:
            for kept in ("clusterIP", "clusterIPs"):
                if kept in old.get("spec", {}) and not spec.get(kept):
                    spec[kept] = copy.deepcopy(old["spec"][kept])
        if spec["type"] != "ExternalName" and not spec.get("clusterIP"):
            ip = str(ipaddress.ip_address("10.96.0.0") + next(self._cluster_ips))
            spec["clusterIP"] = ip
            spec["clusterIPs"] = [ip]
        if spec["type"] in ("LoadBalancer", "NodePort"):
            old_ports = {
                (p.get("port"), p.get("protocol", "TCP")): p.get("nodePort")
                for p in (old or {}).get("spec", {}).get("ports") or []
            }
            for port in spec.get("ports") or []:
                if isinstance(port, dict) and not port.get("nodePort"):
                    kept_port = old_ports.get((port.get("port"), port.get("protocol", "TCP")))
                    port["nodePort"] = kept_port or next(self._node_ports)
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
        if old is None:
            new.setdefault("status", {}).setdefault("loadBalancer", {})

    def _admit(self, operation: str, new: Obj, old: Obj | None) -> None:
        for hook in list(self._hooks):
            hook(operation, new, old)

    def _commit(
        self,
        rtype: ResourceType,
        key: Key,
        event_type: str,
        new: Obj,
        old: Obj | None,
        manager: str,
        *,
        subresource: str | None = None,
        record: bool = True,
    ) -> None:
        """Store a write, log its event; ``record=False`` keeps it out of status_writes."""
        self._rv += 1
        new["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[key] = new
        if rtype.kind == "CustomResourceDefinition" and rtype.group == "apiextensions.k8s.io":
            self._register_crd(new)
        if record and rtype.kind == "Service" and rtype.group == "":
            before, after = _ingress_ips(old), _ingress_ips(new)
            if before != after or subresource == "status":
                self.status_writes.append(StatusWrite(
                    time=self.clock.now(), namespace=key[2], name=key[3], manager=manager,
                    before=before, after=after))
        self._log(event_type, key, new, old)

    def _remove(self, key: Key, manager: str) -> None:
        old = self._objects.pop(key, None)
        if old is None:
            return
        self._rv += 1
        gone = copy.deepcopy(old)
        gone["metadata"]["resourceVersion"] = str(self._rv)
        if key[0] == "" and key[1] == "Service" and _ingress_ips(old):
            self.status_writes.append(StatusWrite(
                time=self.clock.now(), namespace=key[2], name=key[3], manager=manager,
                before=_ingress_ips(old), after=()))
        self._log("DELETED", key, gone, old)

    def _log(self, event_type: str, key: Key, new: Obj, old: Obj | None) -> None:
        self._events.append(WatchEvent(self._rv, event_type, key[0], key[1], key[2], new,
                                       old if event_type == "MODIFIED" else None))
        self._pending.append((event_type, new, old))
        self._changed.notify_all()

    def _register_crd(self, crd: Obj) -> None:
        from migrate.lab.crds import types_from_crd

        rtype = types_from_crd(crd)
        self._types[(rtype.group, rtype.kind)] = rtype

    def _unregister_crd(self, crd: Obj, manager: str) -> None:
        spec = crd.get("spec") or {}
        group = spec.get("group", "")
        kind = (spec.get("names") or {}).get("kind", "")
        for other in [k for k in self._objects if k[0] == group and k[1] == kind]:
            self._remove(other, manager)
        self._types.pop((group, kind), None)

    def _dispatch(self) -> None:
        """Deliver pending events to subscribers in commit order, outside the store lock."""
        if getattr(self._dispatch_local, "active", False):
            return  # an outer frame of this thread is draining the queue
        with self._dispatch_lock:
            self._dispatch_local.active = True
            try:
                while True:
                    with self._lock:
                        if not self._pending:
                            return
                        event_type, new, old = self._pending.popleft()
                        subscribers = list(self._subscribers)
                    for callback in subscribers:
                        callback(event_type, copy.deepcopy(new),
                                 copy.deepcopy(old) if old is not None else None)
            finally:
                self._dispatch_local.active = False
