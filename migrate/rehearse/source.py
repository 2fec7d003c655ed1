"""What a rehearsal starts from: the cluster read as ``migrate plan`` reads it (read-only,
never a Secret), saved as a snapshot folder that ``--from`` and ``python -m migrate.lab serve
--snapshot`` load again."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from migrate.errors import InputError
from migrate.sources.files import dump_documents
from migrate.sources.snapshot import ClusterSnapshot

Obj = dict[str, Any]
REDACTED = "redacted-by-migrate"
SERVER_METADATA = ("resourceVersion", "managedFields", "selfLink")
README = """A snapshot of a cluster, saved by `migrate rehearse --save-snapshot`.

Replay the rehearsal with `migrate rehearse --from {folder}` (same --seed for the same run),
or serve it as an emulated API server with `python -m migrate.lab serve --snapshot {folder}`.
BGP passwords are replaced by "{redacted}"; Secrets were never read.
"""


def _redacted(body: Obj) -> Obj:
    """A copy without the server's bookkeeping and without BGP passwords."""
    out = copy.deepcopy(body)
    metadata = out.get("metadata") or {}
    for key in SERVER_METADATA:
        metadata.pop(key, None)
    if out.get("kind") == "BGPPeer" and str(out.get("apiVersion", "")).startswith("metallb"):
        spec = out.get("spec") or {}
        if spec.get("password"):
            spec["password"] = REDACTED
    if out.get("kind") == "ConfigMap":
        data = out.get("data") or {}
        text = data.get("config")
        if isinstance(text, str) and "password" in text:
            try:
                config = yaml.safe_load(text)
            except yaml.YAMLError:
                config = None
            if isinstance(config, dict):
                for peer in config.get("peers") or []:
                    if isinstance(peer, dict) and peer.get("password"):
                        peer["password"] = REDACTED
                data["config"] = yaml.safe_dump(config, sort_keys=False)
    return out


def _file_name(body: Obj) -> str:
    group = str(body.get("apiVersion", "v1")).rpartition("/")[0] or "core"
    return f"{group}-{str(body.get('kind', 'object')).lower()}.yaml"


def save_snapshot(snapshot: ClusterSnapshot, folder: str | Path) -> list[Path]:
    """Write every document of ``snapshot`` into ``folder`` (created; it must be empty), one
    file per kind; returns the files written."""
    target = Path(folder)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError("choose an empty (or new) folder: the snapshot is every YAML file in"
                         " it", source=str(target), field="--save-snapshot")
    target.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, list[Obj]] = {}
    for document in snapshot.documents:
        body = _redacted(document.body)
        by_file.setdefault(_file_name(body), []).append(body)
    written = []
    for name, bodies in sorted(by_file.items()):
        bodies.sort(key=lambda b: (str((b.get("metadata") or {}).get("namespace") or ""),
                                   str((b.get("metadata") or {}).get("name") or "")))
        path = target / name
        path.write_text(dump_documents(bodies), encoding="utf-8")
        written.append(path)
    (target / "README.txt").write_text(README.format(folder=target, redacted=REDACTED),
                                       encoding="utf-8")
    return written
