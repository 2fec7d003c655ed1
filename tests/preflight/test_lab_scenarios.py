"""Every preflight scenario, served by the lab and read live, gives the same checks as from files.

GitOps objects (Flux, Argo CD) come with a minimal CRD for their kind, as on a cluster where
those controllers are installed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.kube import Kube
from migrate.lab.server import LabServer
from migrate.lab.store import Clock, Store
from migrate.preflight import run_preflight
from migrate.sources.live import read_live
from tests.preflight.scenarios import documents, scenario_names, snapshot, write

GITOPS_KINDS = {
    ("kustomize.toolkit.fluxcd.io", "Kustomization"): "kustomizations",
    ("helm.toolkit.fluxcd.io", "HelmRelease"): "helmreleases",
    ("argoproj.io", "Application"): "applications",
}


def _gitops_crds(docs: list[dict[str, object]]) -> list[dict[str, object]]:
    """A permissive CRD for each GitOps kind among the documents, at the version they use."""
    crds = {}
    for doc in docs:
        group, _, version = str(doc.get("apiVersion", "")).rpartition("/")
        plural = GITOPS_KINDS.get((group, str(doc.get("kind"))))
        if plural is None:
            continue
        crds[plural] = {
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.{group}"},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"kind": doc["kind"], "plural": plural,
                               "singular": str(doc["kind"]).lower(),
                               "listKind": f"{doc['kind']}List"},
                     "versions": [{"name": version, "served": True, "storage": True,
                                   "schema": {"openAPIV3Schema": {
                                       "type": "object",
                                       "x-kubernetes-preserve-unknown-fields": True}}}]},
        }
    return list(crds.values())


def _checks(report: object) -> list[tuple[str, str]]:
    return [(c.name, str(c.severity)) for c in report.checks]  # type: ignore[attr-defined]


@pytest.mark.parametrize("scenario", ["base", *scenario_names()])
def test_live_preflight_matches_files(scenario: str, tmp_path: Path) -> None:
    docs = documents() if scenario == "base" else documents(scenario)
    folder = write([*_gitops_crds(docs), *docs], tmp_path / "cluster")
    store, skipped = Store.from_snapshot([folder], Clock.real())
    if skipped:
        pytest.skip(f"the lab cannot serve every object of {scenario}: {skipped[0]}")
    server = LabServer(store).start()
    kube = Kube.from_kubeconfig(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    try:
        live = run_preflight(read_live(kube))
    finally:
        kube.close()
        server.stop()
    from_files = run_preflight(snapshot(docs))
    assert _checks(live) == _checks(from_files)
    assert live.blocking == from_files.blocking
