"""What preflight reports: one result per check, and the report that gathers them."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from migrate.model.findings import Finding, Severity


class CheckSeverity(StrEnum):
    """The outcome of one check: ERROR blocks the migration; OK means nothing to do."""

    ERROR = "ERROR"
    WARNING = "WARNING"
    INFO = "INFO"
    OK = "OK"

    @property
    def rank(self) -> int:
        return {"ERROR": 0, "WARNING": 1, "INFO": 2, "OK": 3}[self.value]

    @property
    def finding_severity(self) -> Severity | None:
        """The Finding severity of this outcome (None for OK: nothing to report)."""
        return None if self is CheckSeverity.OK else Severity(self.value)


@dataclass(frozen=True)
class CheckResult:
    """One readiness check: what was found and, when it is not OK, how to fix it."""

    name: str
    severity: CheckSeverity
    found: str
    remedy: str = ""
    snippet: str | None = None
    """Text ready to paste (YAML or commands) that applies the remedy, if any."""
    helm_values: dict[str, Any] | None = None
    """Cilium Helm values this check needs; merged into one values file by the report."""
    obj: str | None = None
    """The object the check is about, e.g. ``ConfigMap kube-system/cilium-config``."""
    field: str | None = None
    origin: str | None = None

    @property
    def ok(self) -> bool:
        return self.severity is CheckSeverity.OK

    def finding(self) -> Finding | None:
        """This result as a Finding for stage 0 of a plan (None when OK)."""
        severity = self.severity.finding_severity
        if severity is None:
            return None
        message = f"{self.found} {self.remedy}".strip()
        return Finding(
            severity, f"preflight:{self.name}", self.obj or "cluster", self.field, message,
            self.origin,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "name": self.name,
            "severity": self.severity.value,
            "found": self.found,
            "remedy": self.remedy,
            "snippet": self.snippet,
            "object": self.obj,
            "field": self.field,
        }


@dataclass
class PreflightReport:
    """Every check of one preflight run, in a fixed order."""

    checks: list[CheckResult]
    cilium_version: str | None = None
    """The Cilium version the checks assumed (``X.Y.Z``, ``X.Y`` or None when unknown)."""
    snippet_blocks: list[tuple[str, str]] = field(default_factory=list)
    """(title, text) of every snippet to print below the table, in order."""

    @property
    def blocking(self) -> bool:
        """True when any check is an ERROR: ``apply`` must refuse."""
        return any(check.severity is CheckSeverity.ERROR for check in self.checks)

    def check(self, name: str) -> CheckResult:
        """The result of the check of that name (KeyError when there is none)."""
        for result in self.checks:
            if result.name == name:
                return result
        raise KeyError(name)

    def findings(self) -> list[Finding]:
        """Every result that is not OK, as Findings (stage 0 of the plan)."""
        return [f for check in self.checks if (f := check.finding()) is not None]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: ``{"checks": [...], "blocking": bool}``."""
        return {"checks": [check.to_dict() for check in self.checks], "blocking": self.blocking}
