"""Migration state kept in the cluster: applied stages, who applied them, and backups.

The state lives in a ConfigMap (``lbmigrate-state``) beside compressed backups
(``lbmigrate-backup-<stage>-<n>``, split across objects when large), so a second operator sees
it and a lost laptop loses nothing (design §5).
"""

from __future__ import annotations

import base64
import datetime as _dt
import getpass
import gzip
import json
import os
import socket
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import ClusterError
from migrate.kube import Kube

STATE_NAME = "lbmigrate-state"
BACKUP_PREFIX = "lbmigrate-backup"
PLAN_PART = "plan"  # the plan is stored as lbmigrate-backup-plan-<n> (no stage has that name)
STATE_LABELS = {"app.kubernetes.io/managed-by": "lbmigrate"}
PART_BYTES = 700 * 1024  # a ConfigMap holds at most 1 MiB; stay well below
Obj = dict[str, Any]


def now_rfc3339() -> str:
    """The current time, RFC 3339 with microseconds (as Lease renewTime wants it)."""
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def operator_identity() -> str:
    """Who runs this process: user@host (pid)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()} (pid {os.getpid()})"


@dataclass
class StageRecord:
    """One stage's entry in the state."""

    name: str
    status: str  # "in-progress" | "applied" | "rolling-back"
    started_at: str
    started_by: str
    applied_at: str | None = None
    backup_parts: list[str] = field(default_factory=list)

    def to_dict(self) -> Obj:
        return {"name": self.name, "status": self.status, "startedAt": self.started_at,
                "startedBy": self.started_by, "appliedAt": self.applied_at,
                "backupParts": list(self.backup_parts)}

    @classmethod
    def from_dict(cls, data: Obj) -> StageRecord:
        return cls(data["name"], data["status"], data["startedAt"], data["startedBy"],
                   data.get("appliedAt"), list(data.get("backupParts") or []))


@dataclass
class MigrationState:
    """What has been done to this cluster, newest stage last."""

    plan_digest: str | None = None
    plan_fingerprint: str | None = None
    stages: list[StageRecord] = field(default_factory=list)
    webhook_bypass: Obj | None = None
    history: list[Obj] = field(default_factory=list)
    resource_version: str | None = None
    plan_parts: list[str] = field(default_factory=list)
    """The ConfigMaps holding the plan itself, so a rollback needs no plan file."""

    def record(self, name: str) -> StageRecord | None:
        """The record of a stage, if it was started."""
        return next((s for s in self.stages if s.name == name), None)

    def applied(self, name: str) -> bool:
        record = self.record(name)
        return record is not None and record.status == "applied"

    def to_data(self) -> dict[str, str]:
        return {"state.json": json.dumps({
            "planDigest": self.plan_digest, "planFingerprint": self.plan_fingerprint,
            "stages": [s.to_dict() for s in self.stages],
            "webhookBypass": self.webhook_bypass, "planParts": list(self.plan_parts),
            "history": self.history[-200:],
        }, indent=1, sort_keys=True)}


class StateStore:
    """Reads and writes the state and backups in one namespace of the cluster."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        self.kube = kube
        self.namespace = namespace

    def load(self) -> MigrationState:
        """The state (empty when none was recorded)."""
        body = self.kube.try_get("v1", "ConfigMap", STATE_NAME, self.namespace)
        if body is None:
            return MigrationState()
        data = json.loads((body.get("data") or {}).get("state.json") or "{}")
        return MigrationState(
            plan_digest=data.get("planDigest"), plan_fingerprint=data.get("planFingerprint"),
            stages=[StageRecord.from_dict(s) for s in data.get("stages") or []],
            webhook_bypass=data.get("webhookBypass"), history=list(data.get("history") or []),
            resource_version=body["metadata"].get("resourceVersion"),
            plan_parts=list(data.get("planParts") or []),
        )

    def save(self, state: MigrationState) -> None:
        """Write the state; a concurrent writer makes this fail with 409 (never lost silently)."""
        body: Obj = {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": STATE_NAME, "namespace": self.namespace,
                         "labels": dict(STATE_LABELS)},
            "data": state.to_data(),
        }
        if state.resource_version is None:
            created = self.kube.create(body)
        else:
            body["metadata"]["resourceVersion"] = state.resource_version
            created = self.kube.replace(body)
        state.resource_version = created["metadata"].get("resourceVersion")

    def delete(self) -> None:
        """Forget the migration (after a full rollback): the state and every backup, including
        any a failed delete left behind."""
        selector = ",".join(f"{k}={v}" for k, v in STATE_LABELS.items())
        backups = [body["metadata"]["name"] for body in self.kube.iter_list(
            "v1", "ConfigMap", namespace=self.namespace, label_selector=selector)
            if body["metadata"]["name"].startswith(BACKUP_PREFIX)]
        self.delete_backup(backups)
        self.kube.delete("v1", "ConfigMap", STATE_NAME, self.namespace)

    # -- the plan --------------------------------------------------------------------------
    def write_plan(self, plan: Obj) -> list[str]:
        """Store the plan being applied beside the backups (a lost plan file loses nothing:
        rollback reads it from here); returns the ConfigMaps' names."""
        return self.write_backup(PLAN_PART, plan)

    def read_plan(self, state: MigrationState) -> Obj | None:
        """The plan recorded with the state, or None when none was recorded."""
        return self.read_backup(state.plan_parts) if state.plan_parts else None

    # -- backups ---------------------------------------------------------------------------
    def write_backup(self, stage: str, payload: Obj) -> list[str]:
        """Compress and store a stage's backup, split across ConfigMaps; returns their names."""
        blob = gzip.compress(json.dumps(payload, sort_keys=True).encode(), mtime=0)
        parts = [blob[i:i + PART_BYTES] for i in range(0, len(blob), PART_BYTES)] or [b""]
        names = []
        for index, part in enumerate(parts):
            name = f"{BACKUP_PREFIX}-{stage}-{index}"
            body: Obj = {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "namespace": self.namespace,
                             "labels": {**STATE_LABELS, "lbmigrate.io/stage": stage}},
                "binaryData": {"backup.json.gz": base64.b64encode(part).decode()},
            }
            existing = self.kube.try_get("v1", "ConfigMap", name, self.namespace)
            if existing is None:
                self.kube.create(body)
            else:
                body["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
                self.kube.replace(body)
            names.append(name)
        return names

    def read_backup(self, names: list[str]) -> Obj:
        """A stage's backup, reassembled from its parts (ClusterError naming the missing part
        and the stage when one was deleted by hand)."""
        blob = b""
        for name in names:
            body = self.kube.try_get("v1", "ConfigMap", name, self.namespace)
            if body is None:
                stage = name.removeprefix(f"{BACKUP_PREFIX}-").rpartition("-")[0]
                if stage == PLAN_PART:
                    raise ClusterError(f"the plan recorded in the cluster is gone (ConfigMap"
                                       f" {self.namespace}/{name}); give the plan file")
                raise ClusterError(
                    f"the backup of stage {stage} is gone (ConfigMap {self.namespace}/{name}"
                    " was deleted): it cannot be undone automatically. Restore that ConfigMap"
                    " from a cluster backup, or undo the stage by hand.")
            blob += base64.b64decode((body.get("binaryData") or {}).get("backup.json.gz", ""))
        data = json.loads(gzip.decompress(blob)) if blob else {}
        return data if isinstance(data, dict) else {}

    def delete_backup(self, names: list[str]) -> None:
        """Remove a stage's backup objects (those already gone are fine)."""
        for name in names:
            self.kube.delete("v1", "ConfigMap", name, self.namespace)
