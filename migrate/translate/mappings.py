"""The declarative translation tables in ``mappings/*.yaml``, read at run time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from migrate.errors import InputError, MigrateError
from migrate.model.findings import Severity


def mappings_dir() -> Path:
    """Where the tables live: $MIGRATE_MAPPINGS, else the folder shipped with the package."""
    override = os.environ.get("MIGRATE_MAPPINGS")
    return Path(override) if override else Path(__file__).resolve().parents[1] / "mappings"


@cache
def load_table(name: str) -> dict[str, Any]:
    """One table, parsed (cached for the life of the process)."""
    path = mappings_dir() / f"{name}.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise MigrateError(f"mapping table {path} cannot be read: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise MigrateError(f"mapping table {path} is not a mapping")
    return data


@dataclass(frozen=True)
class CiliumVersion:
    """What one Cilium minor release serves [C1][C2]."""

    minor: str
    pool_api_version: str
    policy_api_version: str
    ips_annotation: str
    sharing_key_annotation: str
    sharing_cross_namespace_annotation: str | None
    l2_ndp: bool
    sharing_survives_import: bool
    sharing_port_protocol: bool
    """Whether LB-IPAM tells sharers' ports apart by protocol (else by number only)."""
    newer: str | None = None
    """The minor asked for, when it is newer than every known one (this row is the newest's)."""


def _minor_key(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor)


def known_versions() -> list[str]:
    """Cilium minors the tables know, oldest first."""
    return sorted(load_table("cilium-versions")["versions"], key=_minor_key)


def newest_known() -> str:
    """The newest Cilium minor the tables know (the default when no agent is found)."""
    return known_versions()[-1]


def cilium_version(requested: str | None, *, strict: bool = False) -> CiliumVersion:
    """The table row for a Cilium version ``X.Y`` or ``X.Y.Z`` (default: the newest known).

    A version newer than every known one gets the newest row, with ``newer`` set (a cluster
    may run a release newer than this tool); ``strict`` (a version the user typed) refuses it.
    """
    table = load_table("cilium-versions")
    versions = table["versions"]
    newest = known_versions()[-1]
    text = (requested or newest).strip().lstrip("v")
    parts = text.split(".")
    try:
        minor = f"{int(parts[0])}.{int(parts[1])}"
    except (ValueError, IndexError):
        raise InputError(
            f"{requested!r} is not a Cilium version like 1.18", field="--cilium-version"
        ) from None
    if _minor_key(minor) < _minor_key(table["minimum"]):
        raise InputError(
            f"Cilium {minor} is not supported: LB-IPAM ranges and allowFirstLastIPs need"
            f" {table['minimum']} or newer",
            field="--cilium-version",
        )
    newer = None
    if _minor_key(minor) > _minor_key(newest):
        if strict:
            raise InputError(
                f"Cilium {minor} is newer than the newest release migrate knows ({newest});"
                f" known: {', '.join(known_versions())}",
                field="--cilium-version",
            )
        minor, newer = newest, minor
    row = versions[minor]
    return CiliumVersion(minor=minor, **row, newer=newer)


def pool_label() -> str:
    """The label the migration writes on Services to tie them to their pool."""
    return str(load_table("annotations")["pool_label"])


def shared_ip_follower_label() -> str:
    """The label on a Service whose shared IP is announced through another sharer."""
    return str(load_table("annotations")["shared_ip_follower_label"])


def field_note(kind: str, field: str) -> tuple[Severity, str]:
    """Severity and message template for a field that has no exact Cilium equivalent."""
    entry = load_table("fields").get(kind, {}).get(field)
    if entry is None or "message" not in entry:
        raise MigrateError(f"mappings/fields.yaml has no message for {kind} {field}")
    return Severity(entry.get("severity", "WARNING")), " ".join(str(entry["message"]).split())
