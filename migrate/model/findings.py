"""Findings: what cannot be translated exactly, with severity, object and field [design I6]."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Severity(StrEnum):
    """How much a finding matters: ERROR blocks ``apply``."""

    ERROR = "ERROR"
    WARNING = "WARNING"
    INFO = "INFO"

    @property
    def rank(self) -> int:
        return {"ERROR": 0, "WARNING": 1, "INFO": 2}[self.value]


@dataclass(frozen=True)
class Finding:
    """One thing the user must know: severity, a stable code, the object, the field, a sentence."""

    severity: Severity
    code: str
    obj: str
    field: str | None
    message: str
    origin: str | None = None

    def sort_key(self) -> tuple[int, str, str, str, str]:
        return (self.severity.rank, self.obj, self.field or "", self.code, self.message)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        out: dict[str, Any] = {
            "severity": self.severity.value,
            "code": self.code,
            "object": self.obj,
            "field": self.field,
            "message": self.message,
        }
        if self.origin:
            out["source"] = self.origin
        return out


def sort_findings(findings: list[Finding]) -> list[Finding]:
    """Errors first, then by object; duplicates removed."""
    return sorted(set(findings), key=Finding.sort_key)


def has_errors(findings: list[Finding]) -> bool:
    """True when any finding blocks ``apply``."""
    return any(f.severity is Severity.ERROR for f in findings)
