"""GitOps ownership: which Flux or Argo CD object reconciles an object, and how to pause it.

A reconciler that owns MetalLB's workloads or objects, the LoadBalancer Services or Cilium's
release would put back what the migration changes (design §2). Ownership is read from the
marks the controllers leave on what they apply:

- Flux kustomize-controller: labels ``kustomize.toolkit.fluxcd.io/name`` and ``/namespace``;
- Flux helm-controller: labels ``helm.toolkit.fluxcd.io/name`` and ``/namespace``;
- Argo CD: label ``argocd.argoproj.io/instance``, annotation ``argocd.argoproj.io/tracking-id``
  (``app:group/Kind:namespace/name``), or its default tracking label
  ``app.kubernetes.io/instance`` — which Helm also sets, so that one counts only when an Argo
  CD Application of that name is in the snapshot.

Apps in another namespace than Argo CD's are written ``namespace_app`` in those marks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from migrate.preflight.inventory import Body, annotations_of, labels_of, name_of, namespace_of
from migrate.sources.snapshot import ClusterSnapshot

FLUX_KUSTOMIZATION = "Flux Kustomization"
FLUX_HELMRELEASE = "Flux HelmRelease"
ARGO_APPLICATION = "Argo CD Application"


@dataclass(frozen=True, order=True)
class Owner:
    """A GitOps object that reconciles others."""

    tool: str
    name: str
    namespace: str | None

    def __str__(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.tool} {where}"

    def suspend_command(self) -> str:
        """The command that stops this owner from reconciling."""
        if self.tool == FLUX_KUSTOMIZATION:
            return f"flux suspend kustomization {self.name} -n {self.namespace or 'flux-system'}"
        if self.tool == FLUX_HELMRELEASE:
            return f"flux suspend helmrelease {self.name} -n {self.namespace or 'flux-system'}"
        app = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"argocd app set {app} --sync-policy none"

    def resume_command(self) -> str:
        """The command that lets it reconcile again (after Git says what the cluster is)."""
        if self.tool == FLUX_KUSTOMIZATION:
            return f"flux resume kustomization {self.name} -n {self.namespace or 'flux-system'}"
        if self.tool == FLUX_HELMRELEASE:
            return f"flux resume helmrelease {self.name} -n {self.namespace or 'flux-system'}"
        app = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"argocd app set {app} --sync-policy automated"


def _argo_app(value: str) -> Owner:
    namespace, sep, name = value.partition("_")
    return Owner(ARGO_APPLICATION, name, namespace) if sep else Owner(ARGO_APPLICATION, value,
                                                                      None)


def _applications(snapshot: ClusterSnapshot) -> list[Body]:
    return snapshot.find("argoproj.io/", "Application")


def owners_of(snapshot: ClusterSnapshot, body: Body) -> list[Owner]:
    """The GitOps objects that reconcile this object, from the marks they leave on it."""
    labels = labels_of(body)
    annotations = annotations_of(body)
    owners: set[Owner] = set()
    for tool, prefix in ((FLUX_KUSTOMIZATION, "kustomize"), (FLUX_HELMRELEASE, "helm")):
        name = labels.get(f"{prefix}.toolkit.fluxcd.io/name")
        if name:
            owners.add(Owner(tool, name, labels.get(f"{prefix}.toolkit.fluxcd.io/namespace")))
    if labels.get("argocd.argoproj.io/instance"):
        owners.add(_argo_app(labels["argocd.argoproj.io/instance"]))
    tracking = annotations.get("argocd.argoproj.io/tracking-id")
    if tracking and ":" in tracking:
        owners.add(_argo_app(tracking.split(":", 1)[0]))
    instance = labels.get("app.kubernetes.io/instance")
    if instance:
        candidate = _argo_app(instance)
        if any(name_of(app) == candidate.name for app in _applications(snapshot)):
            owners.add(candidate)
    return sorted(owners)


def _chart_names(spec: Any) -> set[str]:
    names: set[str] = set()
    if not isinstance(spec, dict):
        return names
    chart = spec.get("chart")
    if isinstance(chart, dict):  # Flux HelmRelease: spec.chart.spec.chart
        inner = chart.get("spec")
        if isinstance(inner, dict) and inner.get("chart"):
            names.add(str(inner["chart"]))
    elif chart:  # Argo CD source: chart
        names.add(str(chart))
    for key in ("source", "sources"):
        value = spec.get(key)
        for source in value if isinstance(value, list) else [value]:
            if isinstance(source, dict) and source.get("chart"):
                names.add(str(source["chart"]))
    return names


def release_owners(snapshot: ClusterSnapshot, chart: str) -> list[Owner]:
    """Flux HelmReleases and Argo CD Applications in the snapshot that install a chart."""
    owners = [
        Owner(FLUX_HELMRELEASE, name_of(body), namespace_of(body))
        for body in snapshot.find("helm.toolkit.fluxcd.io/", "HelmRelease")
        if chart in _chart_names(body.get("spec"))
    ]
    owners += [
        Owner(ARGO_APPLICATION, name_of(body), None)
        for body in _applications(snapshot)
        if chart in _chart_names(body.get("spec"))
    ]
    return sorted(set(owners))


def owner_state(snapshot: ClusterSnapshot, owner: Owner) -> str:
    """``active`` (will revert changes), ``paused`` or ``unknown`` (object not in the input)."""
    if owner.tool == ARGO_APPLICATION:
        apps = [
            app for app in _applications(snapshot)
            if name_of(app) == owner.name
            and (owner.namespace is None or namespace_of(app) == owner.namespace)
        ]
        if not apps:
            return "unknown"
        sync = (apps[0].get("spec") or {}).get("syncPolicy") or {}
        return "active" if isinstance(sync, dict) and sync.get("automated") is not None else (
            "paused"
        )
    group, kind = (
        ("kustomize.toolkit.fluxcd.io/", "Kustomization") if owner.tool == FLUX_KUSTOMIZATION
        else ("helm.toolkit.fluxcd.io/", "HelmRelease")
    )
    found = [
        body for body in snapshot.find(group, kind)
        if name_of(body) == owner.name
        and (owner.namespace is None or namespace_of(body) == owner.namespace)
    ]
    if not found:
        return "unknown"
    spec = found[0].get("spec") or {}
    return "paused" if isinstance(spec, dict) and spec.get("suspend") is True else "active"
