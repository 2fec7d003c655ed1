"""The one narrow adapter over the official ``kubernetes`` client.

Everything the tool does to a cluster goes through ``Kube``: list (with pagination), get,
create, patch (merge or JSON patch) with the tool's field manager, replace, delete, scale, and
server-side dry run. Responses are plain dicts. Transient failures (429 with Retry-After, 5xx,
dropped connections, timeouts) are retried where the request is safe to repeat; every other
API error becomes ``ClusterError`` carrying the API's Status.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from migrate.errors import ClusterError, InputError

FIELD_MANAGER = "lbmigrate"
Obj = dict[str, Any]
ObjList = list[Obj]
StrList = list[str]


@dataclass(frozen=True)
class Resource:
    """How to reach one kind over REST."""

    api_version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    def path(self, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """The REST path for a collection or an object."""
        prefix = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [prefix]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name:
            parts.append(quote(name, safe=""))
        if subresource:
            parts.append(subresource)
        return "/".join(parts)


_KINDS = [
    Resource("v1", "Namespace", "namespaces", False),
    Resource("v1", "Node", "nodes", False),
    Resource("v1", "Service", "services", True),
    Resource("v1", "ConfigMap", "configmaps", True),
    Resource("v1", "Pod", "pods", True),
    Resource("v1", "Endpoints", "endpoints", True),
    Resource("v1", "Event", "events", True),
    Resource("discovery.k8s.io/v1", "EndpointSlice", "endpointslices", True),
    Resource("apps/v1", "Deployment", "deployments", True),
    Resource("apps/v1", "DaemonSet", "daemonsets", True),
    Resource("coordination.k8s.io/v1", "Lease", "leases", True),
    Resource("admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration",
             "validatingwebhookconfigurations", False),
    Resource("apiextensions.k8s.io/v1", "CustomResourceDefinition",
             "customresourcedefinitions", False),
    Resource("metallb.io/v1beta1", "IPAddressPool", "ipaddresspools", True),
    Resource("metallb.io/v1beta1", "L2Advertisement", "l2advertisements", True),
    Resource("metallb.io/v1beta1", "BGPAdvertisement", "bgpadvertisements", True),
    Resource("metallb.io/v1beta2", "BGPPeer", "bgppeers", True),
    Resource("metallb.io/v1beta1", "BGPPeer", "bgppeers", True),
    Resource("metallb.io/v1beta1", "BFDProfile", "bfdprofiles", True),
    Resource("metallb.io/v1beta1", "Community", "communities", True),
    Resource("metallb.io/v1beta1", "ServiceL2Status", "servicel2statuses", True),
    Resource("metallb.io/v1beta1", "AddressPool", "addresspools", True),  # 0.13 to 0.14.2
    Resource("cilium.io/v2", "CiliumLoadBalancerIPPool", "ciliumloadbalancerippools", False),
    Resource("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool", "ciliumloadbalancerippools",
             False),
    Resource("cilium.io/v2alpha1", "CiliumL2AnnouncementPolicy",
             "ciliuml2announcementpolicies", False),
    Resource("cilium.io/v2", "CiliumNode", "ciliumnodes", False),
    # Cilium's BGP control plane (cilium.io/v2 from 1.18, v2alpha1 before).
    *(Resource(f"cilium.io/{version}", kind, plural, False)
      for version in ("v2", "v2alpha1")
      for kind, plural in (("CiliumBGPClusterConfig", "ciliumbgpclusterconfigs"),
                           ("CiliumBGPPeerConfig", "ciliumbgppeerconfigs"),
                           ("CiliumBGPAdvertisement", "ciliumbgpadvertisements"),
                           ("CiliumBGPNodeConfigOverride", "ciliumbgpnodeconfigoverrides"),
                           ("CiliumBGPNodeConfig", "ciliumbgpnodeconfigs"))),
    Resource("metallb.io/v1beta1", "ServiceBGPStatus", "servicebgpstatuses", True),
    Resource("v1", "Secret", "secrets", True),
    Resource("frrk8s.metallb.io/v1beta1", "BGPSessionState", "bgpsessionstates", True),
    # GitOps owners preflight looks for (read when their CRDs are installed).
    Resource("kustomize.toolkit.fluxcd.io/v1", "Kustomization", "kustomizations", True),
    Resource("helm.toolkit.fluxcd.io/v2", "HelmRelease", "helmreleases", True),
    Resource("argoproj.io/v1alpha1", "Application", "applications", True),
]
RESOURCES: dict[tuple[str, str], Resource] = {(r.api_version, r.kind): r for r in _KINDS}


def resource(api_version: str, kind: str) -> Resource:
    """The REST description of a kind (raises ClusterError for a kind the tool never touches)."""
    try:
        return RESOURCES[(api_version, kind)]
    except KeyError:
        raise ClusterError(f"{kind} {api_version} is not a kind migrate works with") from None


@dataclass(frozen=True)
class Cause:
    """One field the API server refused (a ``Status``'s ``details.causes[]``)."""

    field: str
    reason: str
    message: str


@dataclass
class ApiFailure:
    """What the API server said when it refused a request."""

    status: int
    reason: str
    message: str
    retry_after: float | None = None
    causes: tuple[Cause, ...] = ()

    def describe(self) -> str:
        """The message, plus each refused field the message does not name already (a
        webhook or an aggregated server may word its message without them)."""
        missing = [c for c in self.causes
                   if c.field and f"{c.field}: " not in self.message]
        extra = "; ".join(f"{c.field}: {c.message}" for c in missing)
        if not extra:
            return self.message
        return f"{self.message} ({extra})" if self.message else extra


class KubeError(ClusterError):
    """A request the API server refused; carries the HTTP status and the Status reason."""

    def __init__(self, verb: str, what: str, failure: ApiFailure) -> None:
        self.verb = verb
        self.what = what
        self.failure = failure
        super().__init__(
            f"{verb} {what}: {failure.status} {failure.reason}: {failure.describe()}".rstrip(": ")
        )

    @property
    def status(self) -> int:
        return self.failure.status

    @property
    def fields(self) -> list[str]:
        """The field paths the server refused (``metadata.labels``), from its causes."""
        return list(dict.fromkeys(c.field for c in self.failure.causes if c.field))


def _is_transient(status: int) -> bool:
    return status in (429, 500, 502, 503, 504)


@dataclass
class RetryPolicy:
    """How often and how long to retry a safe request."""

    attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0
    sleep: Callable[[float], None] = field(default=time.sleep)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_delay)
        return float(min(self.base_delay * (2 ** attempt), self.max_delay))


class Kube:
    """A small, typed facade over ``kubernetes.client.ApiClient`` for the kinds migrate uses."""

    def __init__(self, api_client: Any, *, retry: RetryPolicy | None = None,
                 timeout: float = 30.0, page_size: int = 500) -> None:
        self.api_client = api_client
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self.page_size = page_size
        self.requests = 0

    # -- construction ----------------------------------------------------------------------
    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None, context: str | None = None,
                        **kwargs: Any) -> Kube:
        """A Kube for a kubeconfig (default: $KUBECONFIG or ~/.kube/config) or in-cluster.

        A kubeconfig that does not load is an InputError naming the file and the field (it
        is checked first: the official client fails on many with a bare TypeError)."""
        from kubernetes import client as k8s_client
        from kubernetes import config as k8s_config
        from kubernetes.config.config_exception import ConfigException

        files = kubeconfig_files(kubeconfig)
        check_kubeconfigs(files, context)
        try:
            if kubeconfig is None and context is None:
                try:
                    api_client = k8s_config.new_client_from_config()  # type: ignore[no-untyped-call]
                except (ConfigException, OSError):
                    if files:
                        raise
                    k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
                    api_client = k8s_client.ApiClient()
            else:
                api_client = k8s_config.new_client_from_config(  # type: ignore[no-untyped-call]
                    config_file=kubeconfig, context=context
                )
        except (ConfigException, OSError) as exc:
            if files:
                raise InputError(f"cannot load the kubeconfig: {exc}",
                                 source=", ".join(files)) from None
            raise ClusterError(f"cannot load the cluster configuration: {exc}") from None
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # What the client raises for a value it cannot use (a certificate that is not
            # base64, ...): the file's fault, not ours, and the message says which file.
            raise InputError(f"cannot load the kubeconfig ({type(exc).__name__}: {exc})",
                             source=", ".join(files)) from None
        return cls(api_client, **kwargs)

    # -- raw request -----------------------------------------------------------------------
    def request(self, method: str, path: str, *, query: dict[str, Any] | None = None,
                body: Any = None, content_type: str = "application/json",
                safe_to_retry: bool = True, what: str | None = None) -> Obj:
        """One REST call, retried while transient and safe; returns the decoded JSON body."""
        what = what or path
        attempt = 0
        while True:
            try:
                return self._once(method, path, query, body, content_type, what)
            except KubeError as error:
                transient = _is_transient(error.status)
                if not (transient and safe_to_retry) or attempt + 1 >= self.retry.attempts:
                    raise
                self.retry.sleep(self.retry.delay(attempt, error.failure.retry_after))
            except _ConnectionProblem as problem:
                if not safe_to_retry or attempt + 1 >= self.retry.attempts:
                    raise ClusterError(f"{method} {what}: {problem}") from None
                self.retry.sleep(self.retry.delay(attempt, None))
            attempt += 1

    def _once(self, method: str, path: str, query: dict[str, Any] | None, body: Any,
              content_type: str, what: str) -> Obj:
        import urllib3

        headers = {"Accept": "application/json", "Content-Type": content_type}
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        full_path = path + ("?" + urlencode(params) if params else "")
        self.requests += 1
        try:
            method_, url, headers_, body_, post = self.api_client.param_serialize(
                method=method, resource_path=full_path, header_params=headers, body=body,
                auth_settings=["BearerToken"],
            )
            response = self.api_client.call_api(
                method_, url, header_params=headers_, body=body_, post_params=post,
                _request_timeout=self.timeout,
            )
            raw = response.read()
            status = int(response.status)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise _ConnectionProblem(_describe(exc)) from None
        except Exception as exc:  # the client wraps some transport errors in ApiException
            from kubernetes.client.exceptions import ApiException

            if isinstance(exc, ApiException):
                status = int(exc.status or 0)
                raw = (exc.body or b"") if isinstance(exc.body, bytes) else str(
                    exc.body or ""
                ).encode()
                if status == 0:
                    raise _ConnectionProblem(str(exc.reason)) from None
                retry = exc.headers.get("Retry-After") if exc.headers else None
                raise KubeError(method, what, _failure(status, raw, retry)) from None
            raise
        if status >= 400:
            retry_after = response.getheader("Retry-After")
            raise KubeError(method, what, _failure(status, raw, retry_after))
        if not raw:
            return {}
        try:
            decoded = json.loads(raw)
        except ValueError:
            raise ClusterError(f"{method} {what}: the API server answered with non-JSON") from None
        return decoded if isinstance(decoded, dict) else {"items": decoded}

    # -- verbs -----------------------------------------------------------------------------
    def list(self, api_version: str, kind: str, *, namespace: str | None = None,
             label_selector: str | None = None, field_selector: str | None = None) -> ObjList:
        """Every object of a kind, following ``continue`` tokens; items carry apiVersion/kind."""
        return list(self.iter_list(api_version, kind, namespace=namespace,
                                   label_selector=label_selector, field_selector=field_selector))

    def iter_list(self, api_version: str, kind: str, *, namespace: str | None = None,
                  label_selector: str | None = None, field_selector: str | None = None) -> (
        Iterator[Obj]
    ):
        """Like ``list``, one page at a time."""
        res = resource(api_version, kind)
        token: str | None = None
        while True:
            page = self.request("GET", res.path(namespace), query={
                "limit": self.page_size, "continue": token,
                "labelSelector": label_selector, "fieldSelector": field_selector,
            }, what=f"list {res.plural}")
            for item in page.get("items") or []:
                item.setdefault("apiVersion", api_version)
                item.setdefault("kind", kind)
                yield item
            token = (page.get("metadata") or {}).get("continue") or None
            if not token:
                return

    def get(self, api_version: str, kind: str, name: str, namespace: str | None = None) -> Obj:
        """One object (KubeError 404 when absent)."""
        res = resource(api_version, kind)
        return self.request("GET", res.path(namespace, name), what=_what(res, namespace, name))

    def try_get(self, api_version: str, kind: str, name: str,
                namespace: str | None = None) -> Obj | None:
        """One object, or None when it does not exist."""
        try:
            return self.get(api_version, kind, name, namespace)
        except KubeError as error:
            if error.status == 404:
                return None
            raise

    def create(self, obj: Obj, *, dry_run: bool = False) -> Obj:
        """Create an object. A retry that finds it already created (same spec) succeeds."""
        res = resource(obj["apiVersion"], obj["kind"])
        metadata = obj.get("metadata") or {}
        namespace, name = metadata.get("namespace"), metadata.get("name")
        what = _what(res, namespace, name)
        try:
            return self.request("POST", res.path(namespace), body=obj, query=_write_query(
                dry_run), safe_to_retry=False, what=what)
        except (KubeError, ClusterError) as error:
            if isinstance(error, KubeError) and not _is_transient(error.status):
                raise
            # The request may have been applied before the failure: look before retrying.
            existing = self.try_get(res.api_version, res.kind, str(name), namespace)
            if existing is not None and not dry_run:
                return existing
            return self.request("POST", res.path(namespace), body=obj,
                                query=_write_query(dry_run), safe_to_retry=True, what=what)

    def patch(self, api_version: str, kind: str, name: str, patch: Any, *,
              namespace: str | None = None, json_patch: bool = False,
              subresource: str | None = None, dry_run: bool = False) -> Obj:
        """A merge patch (idempotent, retried) or a JSON patch (retried only when it tests)."""
        res = resource(api_version, kind)
        content = "application/json-patch+json" if json_patch else "application/merge-patch+json"
        safe = not json_patch or any(op.get("op") == "test" for op in patch)
        return self.request("PATCH", res.path(namespace, name, subresource), body=patch,
                            content_type=content, query=_write_query(dry_run),
                            safe_to_retry=safe, what=_what(res, namespace, name))

    def replace(self, obj: Obj, *, subresource: str | None = None,
                dry_run: bool = False) -> Obj:
        """PUT an object; its resourceVersion makes the write conditional (409 when stale)."""
        res = resource(obj["apiVersion"], obj["kind"])
        metadata = obj.get("metadata") or {}
        namespace, name = metadata.get("namespace"), metadata.get("name")
        return self.request("PUT", res.path(namespace, name, subresource), body=obj,
                            query=_write_query(dry_run),
                            safe_to_retry=bool(metadata.get("resourceVersion")),
                            what=_what(res, namespace, name))

    def delete(self, api_version: str, kind: str, name: str, namespace: str | None = None, *,
               dry_run: bool = False) -> bool:
        """Delete an object; False when it was already gone (a retried delete is fine)."""
        res = resource(api_version, kind)
        try:
            self.request("DELETE", res.path(namespace, name), query={
                "dryRun": "All" if dry_run else None}, what=_what(res, namespace, name))
        except KubeError as error:
            if error.status == 404:
                return False
            raise
        return True

    def scale(self, api_version: str, kind: str, name: str, namespace: str, replicas: int, *,
              dry_run: bool = False) -> Obj:
        """Set a workload's replicas through its scale subresource."""
        return self.patch(api_version, kind, name, {"spec": {"replicas": replicas}},
                          namespace=namespace, subresource="scale", dry_run=dry_run)

    def served_versions(self, group: str) -> StrList:
        """The versions an API group serves (empty when the group is unknown)."""
        try:
            body = self.request("GET", f"/apis/{group}", what=f"discovery of {group}")
        except KubeError as error:
            if error.status == 404:
                return []
            raise
        return [str(v.get("version")) for v in body.get("versions") or []]

    def close(self) -> None:
        """Release the client's connections."""
        close = getattr(self.api_client, "close", None)
        if close is not None:
            close()


def kubeconfig_files(kubeconfig: str | None) -> list[str]:
    """The kubeconfig files the client will read: the one given, else those of $KUBECONFIG
    (a list), else ~/.kube/config; only those that exist (none: in-cluster)."""
    if kubeconfig is not None:
        return [kubeconfig]
    import os

    listed = os.environ.get("KUBECONFIG")
    names = [n for n in listed.split(os.pathsep) if n] if listed else [
        os.path.expanduser("~/.kube/config")]
    return [name for name in names if os.path.isfile(name)]


def check_kubeconfigs(files: list[str], context: str | None) -> None:
    """Each kubeconfig file parses and has the structure the client reads, and the context
    used (``context``, else the first current-context) is defined with its cluster;
    InputError (InputProblems, one per problem) naming the file and the field otherwise."""
    import yaml

    from migrate.errors import InputProblems
    from migrate.sources.schemas import KUBECONFIG
    from migrate.sources.validate import Identity, check, problems_of

    problems: list[InputError] = []
    contexts: dict[str, Any] = {}
    clusters: set[str] = set()
    current: tuple[str, str] | None = None
    for name in files:
        try:
            with open(name, encoding="utf-8") as handle:
                data = yaml.safe_load(handle)
        except OSError as exc:
            problems.append(InputError(f"cannot read the kubeconfig: {exc.strerror}",
                                       source=name))
            continue
        except UnicodeDecodeError:
            problems.append(InputError("the kubeconfig is not a UTF-8 text file", source=name))
            continue
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{name}:{mark.line + 1}" if mark is not None else name
            problems.append(InputError("the kubeconfig is not valid YAML; was it cut short?",
                                       source=where))
            continue
        if data is None:
            data = {}
        report = check(data, KUBECONFIG)
        if not report.ok:
            problems.extend(problems_of(report, name, Identity(None, "Config", None, None)))
            continue
        for item in data.get("contexts") or []:
            contexts.setdefault(item["name"], (name, item["context"]))
        clusters.update(item["name"] for item in data.get("clusters") or [])
        if current is None and data.get("current-context"):
            current = (name, data["current-context"])
    if not problems and files:
        wanted = (None, context) if context is not None else current
        if wanted is not None and wanted[1] not in contexts:
            known = ", ".join(sorted(contexts)) or "none"
            problems.append(InputError(
                f"names context {wanted[1]!r}, which no kubeconfig defines (contexts: {known})",
                source=wanted[0] or ", ".join(files),
                field="current-context" if wanted[0] else "--context"))
        elif wanted is not None:
            where, body = contexts[wanted[1]]
            if body["cluster"] not in clusters:
                problems.append(InputError(
                    f"context {wanted[1]!r} names cluster {body['cluster']!r}, which no"
                    " kubeconfig defines", source=where, field="contexts"))
    if problems:
        raise InputProblems(problems)


class _ConnectionProblem(Exception):
    """The connection failed before an HTTP answer arrived."""


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:200] + "…"


def _failure(status: int, raw: bytes, retry_after: str | None) -> ApiFailure:
    reason, message = "", ""
    causes: list[Cause] = []
    try:
        body = json.loads(raw) if raw else {}
        if isinstance(body, dict):
            reason, message = str(body.get("reason") or ""), str(body.get("message") or "")
            details = body.get("details")
            for cause in (details.get("causes") or []) if isinstance(details, dict) else []:
                if isinstance(cause, dict):
                    causes.append(Cause(str(cause.get("field") or ""),
                                        str(cause.get("reason") or ""),
                                        str(cause.get("message") or "")))
    except ValueError:
        message = raw[:200].decode(errors="replace")
    retry: float | None = None
    if retry_after:
        try:
            retry = float(retry_after)
        except ValueError:
            retry = None
    return ApiFailure(status, reason, message, retry, tuple(causes))


def _what(res: Resource, namespace: str | None, name: str | None) -> str:
    where = f"{namespace}/{name}" if res.namespaced and namespace else str(name)
    return f"{res.kind} {where}"


def _write_query(dry_run: bool) -> dict[str, Any]:
    return {"fieldManager": FIELD_MANAGER, "dryRun": "All" if dry_run else None}
