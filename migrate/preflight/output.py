"""Rendering of a PreflightReport: a rich table with the snippets below it, or JSON."""

from __future__ import annotations

import json
import shutil
from typing import IO

from migrate.preflight.report import CheckSeverity, PreflightReport

SEVERITY_STYLE = {
    CheckSeverity.ERROR: "bold red",
    CheckSeverity.WARNING: "yellow",
    CheckSeverity.INFO: "cyan",
    CheckSeverity.OK: "green",
}


def preflight_json(report: PreflightReport) -> str:
    """``{"checks": [...], "blocking": bool}`` as indented JSON."""
    return json.dumps(report.to_dict(), indent=2) + "\n"


def preflight_table(report: PreflightReport, stream: IO[str]) -> None:
    """The checks as a table (severity, check, found, remedy), then every snippet as plain text
    (no wrapping, no markup) so that it can be copied as is."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=stream, soft_wrap=False, width=_width(stream))
    version = report.cilium_version or "unknown"
    table = Table(title=f"Preflight (Cilium {version})", show_lines=True, expand=False)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Check", no_wrap=True)
    table.add_column("Found", overflow="fold", ratio=3)
    table.add_column("Remedy", overflow="fold", ratio=2)
    for check in report.checks:
        table.add_row(
            f"[{SEVERITY_STYLE[check.severity]}]{check.severity.value}[/]",
            escape(check.name),
            escape(check.found),
            escape(check.remedy),
        )
    console.print(table)
    counts = {severity: 0 for severity in CheckSeverity}
    for check in report.checks:
        counts[check.severity] += 1
    summary = (
        f"{counts[CheckSeverity.ERROR]} error(s), {counts[CheckSeverity.WARNING]} warning(s),"
        f" {counts[CheckSeverity.INFO]} note(s), {counts[CheckSeverity.OK]} ok"
    )
    stream.write(summary + (": blocked\n" if report.blocking else "\n"))
    for title, text in report.snippet_blocks:
        stream.write(f"\n# ----- {title} -----\n{text}")
        if not text.endswith("\n"):
            stream.write("\n")


def _width(stream: IO[str]) -> int:
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return shutil.get_terminal_size((120, 24)).columns
    return 160
