"""Preflight scenarios: the base cluster of testdata/preflight/base with one overlay applied.

An overlay document replaces the base document of the same kind, namespace and name, or is
added; one annotated ``test.lbmigrate.io/remove: "true"`` removes it instead.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from migrate.sources.files import SourceDocument, dump_documents
from migrate.sources.snapshot import ClusterSnapshot, build_snapshot
from tests.conftest import TESTDATA

CASES = TESTDATA / "preflight"
BASE = CASES / "base"
REMOVE = "test.lbmigrate.io/remove"

Doc = dict[str, Any]


def _load(path: Path) -> list[Doc]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _identity(doc: Doc) -> tuple[str, str | None, str]:
    metadata = doc.get("metadata") or {}
    return str(doc.get("kind")), metadata.get("namespace"), str(metadata.get("name"))


def scenario_names() -> list[str]:
    """Every scenario folder but the base."""
    return sorted(p.name for p in CASES.iterdir() if p.is_dir() and p.name != "base")


def documents(*names: str) -> list[Doc]:
    """The base documents with the overlays of the named scenarios applied, in order."""
    docs = _load(BASE / "cluster.yaml")
    for scenario in names:
        _apply(docs, scenario)
    return copy.deepcopy(docs)


def _apply(docs: list[Doc], scenario: str) -> None:
    for extra in _load(CASES / scenario / "overlay.yaml"):
        key = _identity(extra)
        index = next((i for i, doc in enumerate(docs) if _identity(doc) == key), None)
        remove = ((extra.get("metadata") or {}).get("annotations") or {}).get(REMOVE) == "true"
        if remove:
            assert index is not None, f"{scenario}: nothing to remove for {key}"
            del docs[index]
        elif index is None:
            docs.append(extra)
        else:
            docs[index] = extra


def snapshot(docs: list[Doc]) -> ClusterSnapshot:
    """A snapshot of the documents, as the file reader builds it."""
    return build_snapshot([SourceDocument(f"doc#{i}", doc) for i, doc in enumerate(docs, 1)])


def write(docs: list[Doc], folder: Path) -> Path:
    """The documents as one YAML file in the folder (for the CLI)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cluster.yaml").write_text(dump_documents(docs))
    return folder


def cilium_config(docs: list[Doc]) -> dict[str, str]:
    """The data of the cilium-config ConfigMap among the documents (created when absent)."""
    for doc in docs:
        if doc.get("kind") == "ConfigMap" and (doc.get("metadata") or {}).get(
            "name"
        ) == "cilium-config":
            data: dict[str, str] = doc.setdefault("data", {})
            return data
    created: dict[str, str] = {}
    docs.append({"apiVersion": "v1", "kind": "ConfigMap",
                 "metadata": {"name": "cilium-config", "namespace": "kube-system"},
                 "data": created})
    return created


def tripped(report: Any) -> dict[str, Any]:
    """The checks the report does not pass, apart from those that say exactly what they say
    on the base cluster (its known bugs): check name → severity."""
    from migrate.preflight import run_preflight

    base = {c.name: (c.severity, c.found) for c in run_preflight(snapshot(documents())).checks}
    return {c.name: c.severity for c in report.checks
            if not c.ok and base.get(c.name) != (c.severity, c.found)}
