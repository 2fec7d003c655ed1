"""Stage 0 of the migration: read-only readiness checks, with the snippets that fix them.

``run_preflight(snapshot)`` is pure: it reads a ClusterSnapshot (from files or a live cluster)
and returns a PreflightReport; an ERROR in it blocks ``apply``.
"""

from migrate.preflight.checks import run_preflight
from migrate.preflight.report import CheckResult, CheckSeverity, PreflightReport

__all__ = ["CheckResult", "CheckSeverity", "PreflightReport", "run_preflight"]
