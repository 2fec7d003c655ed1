"""Migration state kept in the cluster: applied stages, who applied them, and backups.

The state lives in a ConfigMap (``lbmigrate-state``) beside compressed backups
(``lbmigrate-backup-<stage>-<n>``, split across objects when large), so a second operator sees
it and a lost laptop loses nothing (design §5).
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import getpass
import gzip
import json
import os
import socket
import zlib
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import ClusterError, InputProblems, InvalidDocument
from migrate.kube import Kube
from migrate.plan.model import TARGET_SCHEMA
from migrate.sources import schemas as sch
from migrate.sources.validate import Identity, check, problems_of

STATE_NAME = "lbmigrate-state"
BACKUP_PREFIX = "lbmigrate-backup"
PLAN_PART = "plan"  # the plan is stored as lbmigrate-backup-plan-<n> (no stage has that name)
STATE_LABELS = {"app.kubernetes.io/managed-by": "lbmigrate"}
PART_BYTES = 700 * 1024  # a ConfigMap holds at most 1 MiB; stay well below
STATE_KEY = "state.json"
BACKUP_KEY = "backup.json.gz"
STAGE_STATUSES = ("in-progress", "applied", "rolling-back")
Obj = dict[str, Any]

STATE_SCHEMA = sch.fields(
    planDigest=sch.Maybe(sch.STR), planFingerprint=sch.Maybe(sch.STR),
    stages=sch.ListOf(sch.fields(
        required=("name", "status", "startedAt", "startedBy"),
        name=sch.STR, status=sch.Scalar("string", enum=STAGE_STATUSES), startedAt=sch.STR,
        startedBy=sch.STR, appliedAt=sch.Maybe(sch.STR), backupParts=sch.STRINGS,
    )),
    webhookBypass=sch.Maybe(sch.fields(required=("metadata",), metadata=sch.fields(
        required=("name",), name=sch.STR))),
    planParts=sch.STRINGS, history=sch.ListOf(sch.fields()),
)
"""What ``MigrationState.to_data`` writes under ``data[state.json]``."""
BACKUP_SCHEMA = sch.fields(
    required=("objects",), stage=sch.STR, takenAt=sch.STR,
    objects=sch.ListOf(sch.fields(required=("target",), target=TARGET_SCHEMA,
                                  object=sch.Maybe(sch.fields()))),
)
"""What apply writes in a stage's backup (``executor._backup_payload``)."""
_CONFIGMAP = sch.fields(required=("metadata",), metadata=sch.fields(), data=sch.STRING_MAP,
                        binaryData=sch.STRING_MAP)
EDITED = ("was it edited or cut short? Restore it from a backup of the cluster, or undo the"
          " migration by hand")


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

    def _ident(self, name: str) -> Identity:
        return Identity("v1", "ConfigMap", self.namespace, name)

    def _invalid(self, name: str, field_path: str, message: str) -> InvalidDocument:
        return InvalidDocument(source="cluster", kind="ConfigMap", namespace=self.namespace,
                               name=name, field=field_path, message=message)

    def _checked(self, value: Any, schema: sch.Spec, name: str, path: str) -> None:
        report = check(value, schema, path)
        if not report.ok:
            error = InputProblems(list(problems_of(report, "cluster", self._ident(name))))
            error.add_note(f"ConfigMap {self.namespace}/{name} is migrate's own record of the"
                           f" migration: {EDITED}.")
            raise error

    def load(self) -> MigrationState:
        """The state (empty when none was recorded); InvalidDocument naming the ConfigMap and
        the field when someone edited it or cut it short."""
        body = self.kube.try_get("v1", "ConfigMap", STATE_NAME, self.namespace)
        if body is None:
            return MigrationState()
        self._checked(body, _CONFIGMAP, STATE_NAME, "")
        text = (body.get("data") or {}).get(STATE_KEY) or "{}"
        where = f"data[{STATE_KEY}]"
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise self._invalid(STATE_NAME, where, f"is not valid JSON ({exc}); {EDITED}"
                                ) from None
        self._checked(data, STATE_SCHEMA, STATE_NAME, where)
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
        return self.read_backup(state.plan_parts, None) if state.plan_parts else None

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

    def read_backup(self, names: list[str], schema: sch.Spec | None = BACKUP_SCHEMA) -> Obj:
        """A stage's backup, reassembled from its parts and checked against ``schema``
        (ClusterError naming the missing part and the stage when one was deleted by hand,
        InvalidDocument naming the part when one was edited or cut short)."""
        blob = b""
        where = f"binaryData[{BACKUP_KEY}]"
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
            self._checked(body, _CONFIGMAP, name, "")
            try:
                blob += base64.b64decode((body.get("binaryData") or {}).get(BACKUP_KEY, ""),
                                         validate=True)
            except (binascii.Error, ValueError):
                raise self._invalid(name, where, f"is not base64; {EDITED}") from None
        first = names[0] if names else BACKUP_PREFIX
        try:
            data = json.loads(gzip.decompress(blob)) if blob else {}
        except (OSError, EOFError, zlib.error, ValueError):
            raise self._invalid(first, where, "does not decompress to the JSON apply wrote;"
                                f" {EDITED}") from None
        if not isinstance(data, dict):
            raise self._invalid(first, where, f"holds no backup; {EDITED}")
        if schema is not None:
            self._checked(data, schema, first, where)
        return data

    def delete_backup(self, names: list[str]) -> None:
        """Remove a stage's backup objects (those already gone are fine)."""
        for name in names:
            self.kube.delete("v1", "ConfigMap", name, self.namespace)
