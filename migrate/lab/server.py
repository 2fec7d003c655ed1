"""The lab's HTTP API server: the Kubernetes REST API over a :class:`~migrate.lab.store.Store`.

Plain HTTP on 127.0.0.1 (no TLS, any bearer token accepted), one thread per connection
(``ThreadingHTTPServer``), HTTP/1.1 keep-alive. It speaks enough of the API for the official
``kubernetes`` client and ``kubectl``: discovery, get/list/watch/create/update/patch/delete/
deletecollection, status and scale subresources, selectors, pagination, dry-run, ``Table``
output for ``kubectl get`` (CRD printer columns included), ``fieldValidation`` (Strict / Warn /
Ignore, custom resources only) and ``Status`` bodies for every error. ``/openapi/v3`` is a
skeleton (paths and PATCH parameters, no schemas) so that kubectl leaves field validation to
the server; ``/openapi/v2`` answers 404.

Patch types: JSON merge patch, JSON patch, strategic merge patch (built-in kinds only; 415 for
custom resources, as the real server answers) and server-side apply. Server-side apply is
answered as a JSON merge of the applied configuration into the live object (create when
absent), with the field manager recorded as an ``Apply`` entry in ``managedFields``; there is
no field ownership and so no apply conflict.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import copy
import datetime as _dt
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from migrate.lab.faults import Fault, FaultSet, RequestInfo
from migrate.lab.store import (
    ApiError,
    Obj,
    ResourceType,
    Store,
    WatchEvent,
    bad_request,
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from migrate.plan.model import merge_patch  # RFC 7386, the same one the plan's patches use

KUBE_VERSION = {"major": "1", "minor": "31", "gitVersion": "v1.31.0-migrate-lab",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.22.0", "compiler": "gc", "platform": "linux/amd64"}

DEFAULT_WATCH_TIMEOUT = 1800.0
IDLE_CONNECTION_TIMEOUT = 300.0
"""Seconds a connection may stay idle (or a watch may wait to write) before it is closed."""
REQUEST_LOG_SIZE = 100_000
TOKEN = "migrate-lab-token"

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"


# --------------------------------------------------------------------------- patches


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"json patch path {path!r} must start with /")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _walk(doc: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(doc, dict):
            if part not in doc:
                raise ApiError(422, "Invalid", f"json patch: path element {part!r} not found")
            doc = doc[part]
        elif isinstance(doc, list):
            try:
                doc = doc[int(part)]
            except (ValueError, IndexError):
                raise ApiError(422, "Invalid", f"json patch: bad index {part!r}") from None
        else:
            raise ApiError(422, "Invalid", f"json patch: cannot descend into {part!r}")
    return doc


def _add(doc: Any, parts: list[str], value: Any, *, replace: bool) -> Any:
    if not parts:
        return copy.deepcopy(value)
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        if replace and last not in parent:
            raise ApiError(422, "Invalid", f"json patch replace: missing path element {last!r}")
        parent[last] = copy.deepcopy(value)
    elif isinstance(parent, list):
        if last == "-" and not replace:
            parent.append(copy.deepcopy(value))
        else:
            try:
                index = int(last)
            except ValueError:
                raise ApiError(422, "Invalid", f"json patch: bad index {last!r}") from None
            if index < 0 or index > len(parent) or (replace and index == len(parent)):
                raise ApiError(422, "Invalid", f"json patch: index {index} out of range")
            if replace:
                parent[index] = copy.deepcopy(value)
            else:
                parent.insert(index, copy.deepcopy(value))
    else:
        raise ApiError(422, "Invalid", "json patch: parent is not a container")
    return doc


def _remove(doc: Any, parts: list[str]) -> Any:
    if not parts:
        raise ApiError(422, "Invalid", "json patch: cannot remove the whole document")
    parent = _walk(doc, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        try:
            return parent.pop(int(last))
        except (ValueError, IndexError):
            pass
    raise ApiError(422, "Invalid", f"json patch remove: path element {last!r} not found")


def json_patch(target: Any, operations: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test)."""
    if not isinstance(operations, list):
        raise bad_request("a JSON patch must be a list of operations")
    doc = copy.deepcopy(target)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise bad_request(f"invalid JSON patch operation: {op!r}")
        kind = op["op"]
        parts = _pointer(op["path"])
        if kind == "add":
            doc = _add(doc, parts, op.get("value"), replace=False)
        elif kind == "replace":
            doc = _add(doc, parts, op.get("value"), replace=True)
        elif kind == "remove":
            _remove(doc, parts)
        elif kind in ("move", "copy"):
            source = _pointer(op.get("from", ""))
            value = copy.deepcopy(_walk(doc, source))
            if kind == "move":
                _remove(doc, source)
            doc = _add(doc, parts, value, replace=False)
        elif kind == "test":
            if _walk(doc, parts) != op.get("value"):
                raise ApiError(422, "Invalid", f"json patch test failed at {op['path']}")
        else:
            raise bad_request(f"unknown JSON patch operation {kind!r}")
    return doc


MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "conditions": ("type",),
    "ports": ("containerPort", "port"),
    "addresses": ("type",),
    "ownerReferences": ("uid",),
    "hostAliases": ("ip",),
    "topologySpreadConstraints": ("topologyKey",),
    "webhooks": ("name",),
}
"""Strategic-merge keys of list fields, by field name (the usual ones of the built-in kinds)."""

SET_LISTS = {"finalizers"}
"""Lists of scalars merged as sets (``patchStrategy: merge``)."""


def _merge_key(field: str, items: list[Any]) -> str | None:
    for key in MERGE_KEYS.get(field, ()):
        if items and all(isinstance(i, dict) and key in i for i in items):
            return key
    return None


def strategic_merge(target: Any, patch: Any, field: str = "") -> Any:
    """A reasonable strategic merge patch: maps merge, known lists merge by key.

    Honours ``null`` (delete), ``$patch: delete`` on list elements, ``$patch: replace`` on
    maps and ``$deleteFromPrimitiveList/<field>``; other ``$`` directives are ignored.
    """
    if isinstance(patch, dict):
        if patch.get("$patch") == "replace":
            return {k: copy.deepcopy(v) for k, v in patch.items() if not k.startswith("$")}
        if patch.get("$patch") == "delete":
            return None
        result = copy.deepcopy(target) if isinstance(target, dict) else {}
        for key, value in patch.items():
            if key.startswith("$deleteFromPrimitiveList/"):
                name = key.split("/", 1)[1]
                if isinstance(result.get(name), list) and isinstance(value, list):
                    result[name] = [v for v in result[name] if v not in value]
                continue
            if key.startswith("$"):
                continue
            if value is None:
                result.pop(key, None)
                continue
            merged = strategic_merge(result.get(key), value, key)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        return result
    if isinstance(patch, list):
        current = target if isinstance(target, list) else []
        if field in SET_LISTS and all(not isinstance(v, dict | list) for v in patch):
            return [*current, *[v for v in patch if v not in current]]
        key = _merge_key(field, [p for p in patch if not (isinstance(p, dict) and
                                                            p.get("$patch") == "delete"
                                                            and len(p) == 1)])
        if key is None or not all(isinstance(c, dict) for c in current):
            return [copy.deepcopy(p) for p in patch
                    if not (isinstance(p, dict) and p.get("$patch"))]
        result_list = [copy.deepcopy(c) for c in current]
        for item in patch:
            if not isinstance(item, dict):
                continue
            index = next((i for i, c in enumerate(result_list)
                          if key in item and c.get(key) == item.get(key)), None)
            if item.get("$patch") == "delete":
                if index is not None:
                    result_list.pop(index)
                continue
            if index is None:
                result_list.append({k: v for k, v in item.items() if not k.startswith("$")})
            else:
                result_list[index] = strategic_merge(result_list[index], item, "")
        return result_list
    return copy.deepcopy(patch)


# --------------------------------------------------------------------------- discovery


def _verbs(rtype: ResourceType) -> list[str]:
    return ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]


def group_versions(store: Store) -> dict[str, list[str]]:
    """Served versions per group, preferred (storage) version first."""
    out: dict[str, list[str]] = {}
    for rtype in sorted(store.resource_types(), key=lambda t: (t.group, t.kind)):
        versions = out.setdefault(rtype.group, [])
        for version in [rtype.storage_version, *rtype.versions]:
            if version in rtype.versions and version not in versions:
                versions.append(version)
    for group, versions in out.items():
        out[group] = sorted(versions, key=_version_priority)
    return out


def _version_priority(version: str) -> tuple[int, int, int]:
    """Kubernetes version ordering: GA > beta > alpha, higher numbers first."""
    import re

    match = re.fullmatch(r"v(\d+)(?:(alpha|beta)(\d+))?", version)
    if not match:
        return (3, 0, 0)
    major = int(match.group(1))
    stage = {"alpha": 2, "beta": 1, None: 0}[match.group(2)]
    minor = int(match.group(3) or 0)
    return (stage, -major, -minor)


def resource_list(store: Store, group: str, version: str) -> Obj | None:
    """The APIResourceList of one group version (None when not served)."""
    types = [t for t in store.resource_types() if t.group == group and version in t.versions]
    if not types:
        return None
    resources: list[Obj] = []
    for rtype in sorted(types, key=lambda t: t.plural):
        entry: Obj = {
            "name": rtype.plural,
            "singularName": rtype.singular,
            "namespaced": rtype.namespaced,
            "kind": rtype.kind,
            "verbs": _verbs(rtype),
        }
        if rtype.short_names:
            entry["shortNames"] = rtype.short_names
        if rtype.categories:
            entry["categories"] = rtype.categories
        resources.append(entry)
        if rtype.status_subresource:
            resources.append({"name": f"{rtype.plural}/status", "singularName": "",
                              "namespaced": rtype.namespaced, "kind": rtype.kind,
                              "verbs": ["get", "patch", "update"]})
        if rtype.scale_subresource:
            resources.append({"name": f"{rtype.plural}/scale", "singularName": "",
                              "namespaced": rtype.namespaced, "group": "autoscaling",
                              "version": "v1", "kind": "Scale",
                              "verbs": ["get", "patch", "update"]})
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version, "resources": resources}


def _api_group(group: str, versions: list[str]) -> Obj:
    entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"name": group, "versions": entries, "preferredVersion": entries[0]}


def openapi_v3_index(store: Store) -> Obj:
    """``/openapi/v3``: one entry per served group version."""
    paths: Obj = {}
    for group, versions in group_versions(store).items():
        for version in versions:
            key = f"apis/{group}/{version}" if group else f"api/{version}"
            paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash=lab{store_hash(store)}"}
    return {"paths": paths}


def store_hash(store: Store) -> int:
    """Changes when the set of served kinds changes (CRDs added or removed)."""
    return abs(hash(tuple(sorted((t.group, t.kind, tuple(t.versions))
                                 for t in store.resource_types())))) % 10**8


def openapi_v3_document(store: Store, group: str, version: str) -> Obj | None:
    """A skeletal OpenAPI v3 document of one group version.

    It lists each resource's item path with a PATCH operation that names its kind and accepts
    ``fieldValidation``, so kubectl sees that the server validates fields itself and does not
    need schemas (it has none: kubectl falls back to its built-in types for strategic merge).
    """
    types = [t for t in store.resource_types() if t.group == group and version in t.versions]
    if not types:
        return None
    params = [{"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
              for name in ("dryRun", "fieldManager", "fieldValidation", "force")]
    prefix = f"/apis/{group}/{version}" if group else f"/api/{version}"
    paths: Obj = {}
    for rtype in types:
        scope = "/namespaces/{namespace}" if rtype.namespaced else ""
        gvk = {"group": group, "version": version, "kind": rtype.kind}
        paths[f"{prefix}{scope}/{rtype.plural}/{{name}}"] = {
            "parameters": params,
            "patch": {
                "operationId": f"patch{rtype.kind}",
                "parameters": params,
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK"}},
            },
            "get": {
                "operationId": f"read{rtype.kind}",
                "x-kubernetes-action": "get",
                "x-kubernetes-group-version-kind": gvk,
                "responses": {"200": {"description": "OK"}},
            },
        }
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (migrate lab)",
                                          "version": KUBE_VERSION["gitVersion"]},
            "paths": paths, "components": {"schemas": {}}}


# --------------------------------------------------------------------------- tables (kubectl get)


def _age(created: str | None, now: _dt.datetime) -> str:
    """kubectl's short age: 45s, 12m, 5h, 3d."""
    if not created:
        return "<unknown>"
    try:
        then = _dt.datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=_dt.UTC)
    except ValueError:
        return "<unknown>"
    seconds = max(0, int((now - then).total_seconds()))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _json_path(obj: Any, path: str) -> Any:
    """Evaluate a printer-column JSONPath: ``.a.b``, ``[0]``, ``[*]`` and
    ``[?(@.key=="value")]`` (the forms the MetalLB and Cilium CRDs use); None when absent."""
    import re

    token = re.compile(r'\.([^.\[]+)|\[(\d+|\*)\]|\[\?\(@\.([\w./-]+)=="([^"]*)"\)\]')
    nodes = [obj]
    for name, index, key, value in token.findall(path.strip()):
        found: list[Any] = []
        for node in nodes:
            if name:
                if isinstance(node, dict) and name in node:
                    found.append(node[name])
            elif index == "*":
                if isinstance(node, list):
                    found.extend(node)
            elif index:
                if isinstance(node, list) and int(index) < len(node):
                    found.append(node[int(index)])
            elif isinstance(node, list):
                found.extend(i for i in node if isinstance(i, dict) and str(i.get(key)) == value)
        nodes = found
    if not nodes:
        return None
    return nodes[0] if len(nodes) == 1 else nodes


def _cell(value: Any) -> Any:
    if value is None:
        return "<none>"
    if isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return ",".join(str(v) if not isinstance(v, dict | list) else json.dumps(v)
                        for v in value)
    return json.dumps(value, separators=(",", ":"))


def _service_cells(obj: Obj) -> list[Any]:
    spec = obj.get("spec") or {}
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    external = [str(i.get("ip") or i.get("hostname")) for i in ingress if isinstance(i, dict)]
    external += [str(ip) for ip in spec.get("externalIPs") or []]
    if external:
        external_text = ",".join(external)
    elif spec.get("type") == "LoadBalancer":
        external_text = "<pending>"
    else:
        external_text = "<none>"
    ports = []
    for port in spec.get("ports") or []:
        text = str(port.get("port"))
        if port.get("nodePort"):
            text += f":{port['nodePort']}"
        ports.append(f"{text}/{port.get('protocol', 'TCP')}")
    return [spec.get("type", "ClusterIP"), spec.get("clusterIP") or "<none>", external_text,
            ",".join(ports) or "<none>"]


def _node_status(obj: Obj) -> str:
    for condition in (obj.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return "Ready" if condition.get("status") == "True" else "NotReady"
    return "Unknown"


def _node_roles(obj: Obj) -> str:
    prefix = "node-role.kubernetes.io/"
    labels = (obj.get("metadata") or {}).get("labels") or {}
    roles = sorted(k[len(prefix):] for k in labels if k.startswith(prefix))
    return ",".join(roles) or "<none>"


Cells = Callable[[Obj], list[Any]]


def table_columns(rtype: ResourceType, version: str) -> tuple[list[str], Cells]:
    """Column names (between NAME and AGE) and the function giving their cells."""
    kind = (rtype.group, rtype.kind)
    if rtype.custom:
        columns = [c for c in rtype.printer_columns.get(version, [])
                   if c.get("jsonPath") != ".metadata.creationTimestamp"]
        return ([str(c.get("name", "")).upper() for c in columns],
                lambda obj: [_cell(_json_path(obj, str(c["jsonPath"]))) for c in columns])
    simple: dict[tuple[str, str], tuple[list[str], Callable[[Obj], list[Any]]]] = {
        ("", "Service"): (["TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"], _service_cells),
        ("", "Node"): (["STATUS", "ROLES", "VERSION"], lambda o: [
            _node_status(o), _node_roles(o),
            ((o.get("status") or {}).get("nodeInfo") or {}).get("kubeletVersion", "")]),
        ("", "Namespace"): (["STATUS"], lambda o: [(o.get("status") or {}).get("phase", "")]),
        ("", "ConfigMap"): (["DATA"], lambda o: [len(o.get("data") or {})
                                                  + len(o.get("binaryData") or {})]),
        ("", "Pod"): (["STATUS", "NODE"], lambda o: [
            (o.get("status") or {}).get("phase", "Unknown"),
            (o.get("spec") or {}).get("nodeName") or "<none>"]),
        ("apps", "Deployment"): (["READY", "UP-TO-DATE", "AVAILABLE"], lambda o: [
            f"{(o.get('status') or {}).get('readyReplicas', 0)}/"
            f"{(o.get('spec') or {}).get('replicas', 0)}",
            (o.get("status") or {}).get("updatedReplicas", 0),
            (o.get("status") or {}).get("availableReplicas", 0)]),
        ("apps", "DaemonSet"): (["DESIRED", "CURRENT", "READY"], lambda o: [
            (o.get("status") or {}).get("desiredNumberScheduled", 0),
            (o.get("status") or {}).get("currentNumberScheduled", 0),
            (o.get("status") or {}).get("numberReady", 0)]),
        ("coordination.k8s.io", "Lease"): (["HOLDER"], lambda o: [
            (o.get("spec") or {}).get("holderIdentity") or "<none>"]),
    }
    return simple.get(kind, ([], lambda obj: []))


def wants_table(accept: str) -> str | None:
    """The Table apiVersion kubectl asked for in ``Accept`` (None for plain JSON)."""
    for part in accept.split(","):
        fields = {k.strip(): v.strip() for k, _, v in
                  (p.partition("=") for p in part.split(";")[1:])}
        if fields.get("as") == "Table" and fields.get("g") == "meta.k8s.io":
            return f"meta.k8s.io/{fields.get('v', 'v1')}"
    return None


def build_table(rtype: ResourceType, version: str, objects: list[Obj], table_version: str,
                now: _dt.datetime, meta: Obj | None = None) -> Obj:
    """A ``Table`` as the server sends to ``kubectl get``."""
    names, cells = table_columns(rtype, version)
    definitions = [{"name": "Name", "type": "string", "format": "name", "description": "Name",
                    "priority": 0}]
    definitions += [{"name": n.title() if n.isupper() else n, "type": "string", "format": "",
                     "description": n, "priority": 0} for n in names]
    definitions.append({"name": "Age", "type": "string", "format": "", "description": "Age",
                        "priority": 0})
    rows = []
    for obj in objects:
        metadata = obj.get("metadata") or {}
        rows.append({
            "cells": [metadata.get("name"), *cells(obj),
                      _age(metadata.get("creationTimestamp"), now)],
            "object": obj,
        })
    return {"kind": "Table", "apiVersion": table_version, "metadata": meta or {},
            "columnDefinitions": definitions, "rows": rows}


# --------------------------------------------------------------------------- continue tokens


def encode_continue(resource_version: int, after: tuple[str, str]) -> str:
    """An opaque continue token: where the next page starts."""
    raw = json.dumps({"rv": resource_version, "ns": after[0], "name": after[1]})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    """Inverse of :func:`encode_continue` (ApiError 400 on a malformed token)."""
    try:
        padded = token + "=" * (-len(token) % 4)
        data = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return int(data["rv"]), (str(data["ns"]), str(data["name"]))
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise bad_request("continue key is not valid: invalid continue token") from None


# --------------------------------------------------------------------------- request routing


@dataclass
class Route:
    """A parsed resource URL."""

    rtype: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str | None

    @property
    def group(self) -> str:
        """The API group ("" for core)."""
        return self.rtype.group


def not_served() -> ApiError:
    """404 for a URL the server does not serve, worded as the real server words it."""
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def _bool_param(params: dict[str, list[str]], name: str) -> bool:
    value = (params.get(name) or [""])[0].lower()
    return value in ("true", "1", "yes")


def _param(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


class LabServer:
    """The emulated API server: start it, point a client at :attr:`url`, stop it."""

    def __init__(self, store: Store, *, host: str = "127.0.0.1", port: int = 0) -> None:
        """Bind (port 0 picks a free one) but do not serve until :meth:`start`."""
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the lab serves on loopback only")
        self.store = store
        self.faults = FaultSet()
        self.requests: deque[tuple[str, str]] = deque(maxlen=REQUEST_LOG_SIZE)
        """The latest requests served: (method, path with query), in order."""
        self.request_count = 0
        """How many requests were served in all."""
        self._requests_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        handler = _make_handler(self)
        self._httpd = _TrackingHTTPServer((host, port), handler)
        self.host = host
        self.port = int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def stopping(self) -> bool:
        """True once :meth:`stop` was called (watches end)."""
        return self._stopping.is_set()

    def start(self) -> LabServer:
        """Serve in a background thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._httpd.serve_forever,
                                            kwargs={"poll_interval": 0.05},
                                            name=f"lab-api-{self.port}", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until :meth:`stop`."""
        self._httpd.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        """Stop serving and close the socket (open watches end within a moment)."""
        self._stopping.set()
        self.store.wake_watchers()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> LabServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def record(self, method: str, path: str) -> None:
        """Log one request (read by tests and benchmarks that count requests)."""
        with self._requests_lock:
            self.requests.append((method, path))
            self.request_count += 1

    def kubeconfig(self, *, namespace: str = "default") -> Obj:
        """A kubeconfig for this server (plain HTTP, dummy token)."""
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "migrate-lab", "cluster": {"server": self.url}}],
            "users": [{"name": "migrate-lab", "user": {"token": TOKEN}}],
            "contexts": [{"name": "migrate-lab", "context": {
                "cluster": "migrate-lab", "user": "migrate-lab", "namespace": namespace}}],
            "current-context": "migrate-lab",
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | Path) -> Path:
        """Write :meth:`kubeconfig` to a file (mode 0600); returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.kubeconfig(), sort_keys=False), encoding="utf-8")
        tmp.chmod(0o600)
        tmp.replace(target)
        return target


# --------------------------------------------------------------------------- the handler


class _TrackingHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can close its open (keep-alive, watch) connections."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(address, handler)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut every open connection down (clients see the server go away)."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Dropped(Exception):
    """The connection was dropped on purpose (fault injection)."""


def _make_handler(server: LabServer) -> type[BaseHTTPRequestHandler]:
    class Handler(_Handler):
        lab = server

    return Handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "migrate-lab/1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms stalls
    timeout = IDLE_CONNECTION_TIMEOUT
    lab: LabServer

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is :attr:`LabServer.requests`."""

    # -- HTTP verbs

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- plumbing

    def _handle(self, method: str) -> None:
        self.lab.record(method, self.path)
        self._warnings: list[str] = []
        self._late_fault: Fault | None = None
        split = urlsplit(self.path)
        params = parse_qs(split.query, keep_blank_values=True)
        path = split.path.rstrip("/") or "/"
        body = self._read_body()
        try:
            if self._discovery(method, path):
                return
            route = self._route(path)
            verb = self._verb(method, route, params)
            fault = self.lab.faults.decide(RequestInfo(
                verb=verb, resource=route.rtype.plural, subresource=route.subresource,
                name=route.name, namespace=route.namespace))
            if fault is not None and fault.after:
                self._late_fault = fault  # the request is served; its answer is not
            elif fault is not None:
                self._apply_fault(fault)
            self._dispatch(method, verb, route, params, body)
        except _Dropped:
            return
        except ApiError as exc:
            self._send_json(exc.status, exc.to_status(), headers=exc.headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as exc:  # pragma: no cover - a bug in the lab must still answer
            error = ApiError(500, "InternalError", f"lab server error: {exc!r}")
            self._send_json(500, error.to_status())

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            return self.rfile.read(length)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        return b""

    def _send_json(self, status: int, body: Any, *, headers: dict[str, str] | None = None) -> None:
        late = getattr(self, "_late_fault", None)
        if late is not None:
            self._late_fault = None
            self._apply_fault(late)  # raises: the connection drops, or the status is sent
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache, private")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        for warning in getattr(self, "_warnings", []):
            escaped = warning.replace("\\", "\\\\").replace('"', '\\"')
            self.send_header("Warning", f'299 - "{escaped}"')
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _apply_fault(self, fault: Fault) -> None:
        if fault.delay > 0:
            time.sleep(fault.delay)
        if fault.drop:
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            raise _Dropped()
        if fault.status is not None:
            headers: dict[str, str] = {}
            details: Obj | None = None
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
                details = {"retryAfterSeconds": fault.retry_after}
            raise ApiError(fault.status, fault.reason, fault.message, details=details,
                           headers=headers)

    # -- discovery

    def _discovery(self, method: str, path: str) -> bool:
        if method != "GET":
            return False
        store = self.lab.store
        if path == "/version":
            self._send_json(200, KUBE_VERSION)
            return True
        if path == "/api":
            self._send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                  "serverAddressByClientCIDRs": [{
                                      "clientCIDR": "0.0.0.0/0",
                                      "serverAddress": f"{self.lab.host}:{self.lab.port}"}]})
            return True
        if path == "/apis":
            groups = [_api_group(g, v) for g, v in group_versions(store).items() if g]
            self._send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
            return True
        if path in ("/healthz", "/livez", "/readyz"):
            data = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return True
        if path == "/openapi/v3":
            self._send_json(200, openapi_v3_index(store))
            return True
        if path.startswith("/openapi/v3/"):
            parts = path[len("/openapi/v3/"):].split("/")
            doc = None
            if parts[0] == "api" and len(parts) == 2:
                doc = openapi_v3_document(store, "", parts[1])
            elif parts[0] == "apis" and len(parts) == 3:
                doc = openapi_v3_document(store, parts[1], parts[2])
            return self._send_served(doc)
        if path.startswith("/openapi"):
            raise ApiError(404, "NotFound", "the lab serves no OpenAPI v2 document")
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            return self._send_served(resource_list(store, "", parts[1]))
        if parts[0] == "apis" and len(parts) == 2:
            versions = group_versions(store).get(parts[1])
            return self._send_served({"kind": "APIGroup", "apiVersion": "v1",
                                      **_api_group(parts[1], versions)} if versions else None)
        if parts[0] == "apis" and len(parts) == 3:
            return self._send_served(resource_list(store, parts[1], parts[2]))
        return False

    def _send_served(self, document: Obj | None) -> bool:
        """Send a discovery document (True: the request is answered); 404 when it is None,
        i.e. the group, version or resource is not served."""
        if document is None:
            raise not_served()
        self._send_json(200, document)
        return True

    def _route(self, path: str) -> Route:
        parts = [p for p in path.split("/") if p]
        if len(parts) >= 3 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise not_served()
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and not (
            len(rest) == 3 and rest[2] in ("status", "finalize")
        ):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise not_served()
        rtype = self.lab.store.find_type(group, version, rest[0])
        if rtype is None:
            raise not_served()
        if namespace is not None and not rtype.namespaced:
            raise not_served()
        name = rest[1] if len(rest) >= 2 else None
        subresource = rest[2] if len(rest) == 3 else None
        if subresource is not None and not (
            (subresource == "status" and rtype.status_subresource)
            or (subresource == "scale" and rtype.scale_subresource)
            or (subresource == "finalize" and rtype.kind == "Namespace")
        ):
            raise not_served()
        return Route(rtype, version, namespace, name, subresource)

    @staticmethod
    def _verb(method: str, route: Route, params: dict[str, list[str]]) -> str:
        if method == "GET":
            if route.name is None:
                return "watch" if _bool_param(params, "watch") else "list"
            return "get"
        if method == "POST":
            if route.name is not None:
                raise ApiError(405, "MethodNotAllowed", "POST to a named object is not allowed")
            return "create"
        if method == "PUT":
            return "update"
        if method == "PATCH":
            return "patch"
        return "delete" if route.name is not None else "deletecollection"

    # -- verbs

    def _dispatch(
        self, method: str, verb: str, route: Route, params: dict[str, list[str]], body: bytes
    ) -> None:
        if verb in ("update", "patch") and route.name is None:
            raise ApiError(405, "MethodNotAllowed", f"{method} needs an object name")
        handlers: dict[str, Callable[[Route, dict[str, list[str]], bytes], None]] = {
            "get": self._get,
            "list": self._list,
            "watch": self._watch,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
            "deletecollection": self._delete_collection,
        }
        handlers[verb](route, params, body)

    def _out(self, route: Route, obj: Obj) -> Obj:
        """The object as served at the request's version (no conversion beyond apiVersion)."""
        if obj.get("apiVersion") != route.rtype.api_version(route.version):
            obj = dict(obj)
            obj["apiVersion"] = route.rtype.api_version(route.version)
        return obj

    def _with_kind(self, route: Route, obj: Obj) -> Obj:
        out = dict(self._out(route, obj))
        out["kind"] = route.rtype.kind
        return out

    def _scale(self, route: Route, obj: Obj) -> Obj:
        meta = obj["metadata"]
        status = obj.get("status") or {}
        selector = ((obj.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion",
                                              "creationTimestamp") if k in meta},
            "spec": {"replicas": (obj.get("spec") or {}).get("replicas", 0)},
            "status": {"replicas": status.get("replicas", 0),
                       "selector": ",".join(f"{k}={v}" for k, v in selector.items())},
        }

    def _object_table(self, route: Route, obj: Obj, table_version: str) -> Obj:
        """One object as a one-row ``Table`` (``kubectl get NAME``, and each watch event)."""
        return build_table(route.rtype, route.version, [self._with_kind(route, obj)],
                           table_version, self.lab.store.clock.now_datetime(),
                           {"resourceVersion": obj["metadata"].get("resourceVersion", "")})

    def _select(self, route: Route, params: dict[str, list[str]]) -> tuple[list[Obj], int]:
        """The route's objects matching the request's label and field selectors (shared: do
        not mutate), and the resourceVersion they were read at."""
        return self.lab.store.select(route.group, route.rtype.kind, route.namespace,
                                     _param(params, "labelSelector"),
                                     _param(params, "fieldSelector"))

    def _get(self, route: Route, params: dict[str, list[str]], body: bytes) -> None:
        assert route.name is not None
        obj = self.lab.store.get(route.group, route.rtype.kind, route.name, route.namespace)
        if route.subresource == "scale":
            self._send_json(200, self._scale(route, obj))
            return
        table = wants_table(self.headers.get("Accept") or "")
        if table:
            self._send_json(200, self._object_table(route, obj, table))
        else:
            self._send_json(200, self._out(route, obj))

    def _list(self, route: Route, params: dict[str, list[str]], body: bytes) -> None:
        store = self.lab.store
        items, rv = self._select(route, params)
        token = _param(params, "continue")
        if token:
            rv_token, after = decode_continue(token)
            rv = rv_token
            items = [o for o in items
                     if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) > after]
        limit_text = _param(params, "limit")
        meta: Obj = {"resourceVersion": str(rv)}
        if limit_text:
            try:
                limit = int(limit_text)
            except ValueError:
                raise bad_request(f"limit {limit_text!r} is not an integer") from None
            if limit > 0 and len(items) > limit:
                last = items[limit - 1]["metadata"]
                meta["continue"] = encode_continue(
                    rv, (last.get("namespace", ""), last["name"]))
                meta["remainingItemCount"] = len(items) - limit
                items = items[:limit]
        version = route.rtype.api_version(route.version)
        table = wants_table(self.headers.get("Accept") or "")
        if table:
            self._send_json(200, build_table(
                route.rtype, route.version, [self._with_kind(route, o) for o in items], table,
                store.clock.now_datetime(), meta))
            return
        if route.rtype.custom:
            out_items = [self._out(route, o) for o in items]
        else:  # built-in lists carry no kind/apiVersion per item, as the real server's
            out_items = [{k: v for k, v in o.items() if k not in ("apiVersion", "kind")}
                         for o in items]
        self._send_json(200, {"kind": route.rtype.list_kind, "apiVersion": version,
                              "metadata": meta, "items": out_items})

    def _create(self, route: Route, params: dict[str, list[str]], body: bytes) -> None:
        obj = self._decode(body)
        self._check_body(route, obj)
        meta = obj.setdefault("metadata", {})
        if route.rtype.namespaced:
            namespace = route.namespace or meta.get("namespace") or "default"
            if meta.get("namespace") and meta["namespace"] != namespace:
                raise bad_request("the namespace of the provided object does not match the "
                                  "namespace sent on the request")
            meta["namespace"] = namespace
        self._check_fields(route, obj, params)
        created = self.lab.store.create(
            obj, manager=self._manager(params, "create"), dry_run=self._dry_run(params),
            require_namespace=True, keep_status=False)
        self._send_json(201, self._out(route, created))

    def _update(self, route: Route, params: dict[str, list[str]], body: bytes) -> None:
        assert route.name is not None
        obj = self._decode(body)
        store = self.lab.store
        if route.subresource == "scale":
            replicas = (obj.get("spec") or {}).get("replicas")
            current = store.get(route.group, route.rtype.kind, route.name, route.namespace)
            sent_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if sent_rv:
                current["metadata"]["resourceVersion"] = sent_rv
            current.setdefault("spec", {})["replicas"] = replicas
            updated = store.update(current, manager=self._manager(params, "update"),
                                   dry_run=self._dry_run(params))
            self._send_json(200, self._scale(route, updated))
            return
        self._check_body(route, obj)
        meta = obj.setdefault("metadata", {})
        if meta.get("name") not in (None, route.name):
            raise bad_request("the name of the object does not match the name on the URL")
        meta["name"] = route.name
        if route.rtype.namespaced:
            meta["namespace"] = route.namespace or meta.get("namespace") or "default"
        self._check_fields(route, obj, params)
        updated = store.update(obj, subresource=route.subresource,
                               manager=self._manager(params, "update"),
                               dry_run=self._dry_run(params))
        self._send_json(200, self._out(route, updated))

    def _patch(self, route: Route, params: dict[str, list[str]], body: bytes) -> None:
        assert route.name is not None
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        store = self.lab.store
        if content_type == STRATEGIC_PATCH and route.rtype.custom:
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media "
                           f"types include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}")
        if content_type not in (MERGE_PATCH, JSON_PATCH, STRATEGIC_PATCH, APPLY_PATCH):
            raise ApiError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media "
                           f"types include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}, "
                           f"{STRATEGIC_PATCH}")
        if content_type == APPLY_PATCH:
            try:
                patch: Any = yaml.safe_load(body.decode() or "{}")
            except yaml.YAMLError as exc:
                raise bad_request(f"error decoding YAML: {exc}") from None
        else:
            patch = self._decode(body, allow_list=content_type == JSON_PATCH)
        manager = self._manager(params, "patch")
        dry_run = self._dry_run(params)
        if content_type == APPLY_PATCH:
            if not _param(params, "fieldManager"):
                raise bad_request("PATCH, fieldManager is required for apply requests")
            if not isinstance(patch, dict):
                raise bad_request("an apply patch must be an object")
            existing = store.try_get(route.group, route.rtype.kind, route.name, route.namespace)
            if existing is None:
                if route.subresource:
                    raise ApiError(404, "NotFound", f'{route.rtype.resource_label} '
                                   f'"{route.name}" not found')
                self._check_body(route, patch)
                meta = patch.setdefault("metadata", {})
                meta["name"] = route.name
                if route.rtype.namespaced:
                    meta["namespace"] = route.namespace or "default"
                self._check_fields(route, patch, params)
                created = store.create(patch, manager=manager, dry_run=dry_run,
                                       require_namespace=True, operation="Apply",
                                       keep_status=False)
                self._send_json(201, self._out(route, created))
                return
        for _attempt in range(10):
            current = store.get(route.group, route.rtype.kind, route.name, route.namespace)
            current_rv = current["metadata"]["resourceVersion"]
            base = self._scale(route, current) if route.subresource == "scale" else (
                self._out(route, current))
            if content_type == JSON_PATCH:
                patched = json_patch(base, patch)
            elif content_type == STRATEGIC_PATCH:
                patched = strategic_merge(base, patch)
            else:
                patched = merge_patch(base, patch)
            if not isinstance(patched, dict):
                raise bad_request("the patched object is not an object")
            precondition = (patched.get("metadata") or {}).get("resourceVersion")
            pinned = precondition not in (None, "", current_rv) or (
                isinstance(patch, dict) and (patch.get("metadata") or {}).get("resourceVersion"))
            if route.subresource == "scale":
                current.setdefault("spec", {})["replicas"] = (patched.get("spec") or {}).get(
                    "replicas")
                target = current
            else:
                target = patched
                target.setdefault("metadata", {})["name"] = route.name
                if route.rtype.namespaced:
                    target["metadata"]["namespace"] = route.namespace or "default"
                target["apiVersion"] = route.rtype.api_version(route.version)
                target["kind"] = route.rtype.kind
                if not pinned:
                    target["metadata"]["resourceVersion"] = current_rv
            self._check_fields(route, target, params)
            try:
                updated = store.update(
                    target, subresource=route.subresource if route.subresource == "status"
                    else None, manager=manager, dry_run=dry_run,
                    operation="Apply" if content_type == APPLY_PATCH else "Update")
            except ApiError as exc:
                if exc.status == 409 and exc.reason == "Conflict" and not pinned:
                    continue
                raise
            if route.subresource == "scale":
                self._send_json(200, self._scale(route, updated))
            else:
                self._send_json(200, self._out(route, updated))
            return
        raise ApiError(409, "Conflict", "too many concurrent writes to this object")

    def _delete(self, route: Route, params: dict[str, list[str]], body: bytes) -> None:
        assert route.name is not None
        options = self._decode(body) if body.strip() else {}
        dry_run = self._dry_run(params) or "All" in (options.get("dryRun") or [])
        preconditions = options.get("preconditions") or {}
        store = self.lab.store
        if preconditions:
            current = store.get(route.group, route.rtype.kind, route.name, route.namespace)
            if (preconditions.get("resourceVersion") not in (None,
                                                             current["metadata"]["resourceVersion"])
                    or preconditions.get("uid") not in (None, current["metadata"]["uid"])):
                raise ApiError(409, "Conflict", f'Operation cannot be fulfilled on '
                               f'{route.rtype.resource_label} "{route.name}": the precondition '
                               "does not hold")
        deleted = store.delete(route.group, route.rtype.kind, route.name, route.namespace,
                               dry_run=dry_run, manager=self._manager(params, "delete"))
        self._send_json(200, self._out(route, deleted))

    def _delete_collection(self, route: Route, params: dict[str, list[str]], body: bytes) -> None:
        store = self.lab.store
        items, _ = self._select(route, params)
        dry_run = self._dry_run(params)
        deleted = []
        for obj in items:
            meta = obj["metadata"]
            try:
                deleted.append(store.delete(route.group, route.rtype.kind, meta["name"],
                                            meta.get("namespace"), dry_run=dry_run))
            except ApiError as exc:
                if exc.status != 404:
                    raise
        self._send_json(200, {"kind": route.rtype.list_kind,
                              "apiVersion": route.rtype.api_version(route.version),
                              "metadata": {"resourceVersion": str(store.resource_version())},
                              "items": [self._out(route, o) for o in deleted]})

    def _watch(self, route: Route, params: dict[str, list[str]], body: bytes) -> None:
        store = self.lab.store
        labels = parse_label_selector(_param(params, "labelSelector"))
        fields = parse_field_selector(_param(params, "fieldSelector"))
        timeout_text = _param(params, "timeoutSeconds")
        timeout = float(timeout_text) if timeout_text else DEFAULT_WATCH_TIMEOUT
        deadline = time.monotonic() + timeout
        start = _param(params, "resourceVersion")
        initial: list[WatchEvent] = []
        if not start or start == "0":
            items, rv = store.select(route.group, route.rtype.kind, route.namespace)
            initial = [WatchEvent(rv, "ADDED", route.group, route.rtype.kind,
                                  o["metadata"].get("namespace", ""), o) for o in items]
        else:
            try:
                rv = int(start)
            except ValueError:
                raise bad_request(f"invalid resourceVersion {start!r}") from None
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()
        self.close_connection = True

        def matches(obj: Obj) -> bool:
            meta = obj.get("metadata") or {}
            return labels_match(labels, meta.get("labels") or {}) and fields_match(fields, obj)

        table = wants_table(self.headers.get("Accept") or "")

        def send(event_type: str, obj: Obj) -> None:
            if table and event_type != "ERROR":
                obj = self._object_table(route, obj, table)
            line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":"))
            data = line.encode() + b"\n"
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        try:
            for event in initial:
                if matches(event.object):
                    send(event.type, self._out(route, event.object))
            while not self.lab.stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    events, newest = store.events_after(
                        rv, group=route.group, kind=route.rtype.kind,
                        namespace=route.namespace, timeout=min(remaining, 0.5))
                except ApiError as exc:
                    send("ERROR", exc.to_status())
                    break
                for event in events:
                    now_matches = matches(event.object)
                    was_matching = event.old is not None and matches(event.old)
                    if event.type == "MODIFIED" and (labels or fields) and (
                            now_matches != was_matching):
                        # the object entered or left the selection, as the real server says
                        send("ADDED" if now_matches else "DELETED",
                             self._out(route, event.object))
                    elif now_matches:
                        send(event.type, self._out(route, event.object))
                rv = max(rv, events[-1].resource_version if events else rv)
                del newest
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, OSError):
            return

    # -- helpers

    def _decode(self, body: bytes, *, allow_list: bool = False) -> Any:
        text = body.decode("utf-8") if body else ""
        if not text.strip():
            raise bad_request("the request body is empty")
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise bad_request(f"the request body is not JSON or YAML: {exc}") from None
        if isinstance(data, list) and allow_list:
            return data
        if not isinstance(data, dict):
            raise bad_request("the request body must be an object")
        return data

    def _check_body(self, route: Route, obj: Obj) -> None:
        expected = route.rtype.api_version(route.version)
        api_version = obj.get("apiVersion")
        kind = obj.get("kind")
        if api_version is None:
            obj["apiVersion"] = api_version = expected
        if kind is None:
            obj["kind"] = kind = route.rtype.kind
        if api_version != expected or kind != route.rtype.kind:
            raise bad_request(f"the API version in the data ({api_version}) does not match the "
                              f"expected API version ({expected}) or kind ({kind})")

    def _check_fields(self, route: Route, obj: Obj, params: dict[str, list[str]]) -> None:
        """``fieldValidation``: Strict refuses unknown fields (400), Warn warns; custom kinds
        only (the lab has no schemas of the built-in kinds). Unknown fields are pruned anyway."""
        mode = _param(params, "fieldValidation") or "Warn"
        if mode not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f'Unsupported value: "{mode}": supported values: "Ignore", '
                              '"Strict", "Warn"')
        schema = route.rtype.schemas.get(route.version) if route.rtype.custom else None
        if schema is None or mode == "Ignore":
            return
        from migrate.lab.crds import prune

        unknown = prune(schema, obj, drop=False)
        if not unknown:
            return
        if mode == "Strict":
            listed = ", ".join(f'unknown field "{u}"' for u in unknown)
            raise bad_request(f"strict decoding error: {listed}")
        self._warnings += [f'unknown field "{u}"' for u in unknown]

    @staticmethod
    def _dry_run(params: dict[str, list[str]]) -> bool:
        values = params.get("dryRun") or []
        for value in values:
            if value != "All":
                raise bad_request(f'Unsupported value: "{value}": supported values: "All"')
        return bool(values)

    def _manager(self, params: dict[str, list[str]], verb: str) -> str:
        manager = _param(params, "fieldManager")
        if manager:
            return manager
        agent = self.headers.get("User-Agent") or "unknown"
        return agent.split("/")[0] or "unknown"
