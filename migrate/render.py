"""Rendering: YAML/JSON documents and rich tables. The library never prints; the CLI calls here."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO, Any

from migrate.model.findings import Finding, Severity
from migrate.sources.files import dump_documents
from migrate.sources.snapshot import ClusterSnapshot
from migrate.translate.translator import Translation, pinned_service

SEVERITY_STYLE = {Severity.ERROR: "bold red", Severity.WARNING: "yellow", Severity.INFO: "cyan"}


def convert_documents(snapshot: ClusterSnapshot, translation: Translation) -> list[dict[str, Any]]:
    """The objects ``migrate convert`` writes: Cilium objects, then every pinned input Service."""
    bodies = {(s.namespace, s.name): s.body for s in snapshot.services}
    services = [
        pinned_service(bodies[(pin.namespace, pin.name)], pin) for pin in translation.pins
    ]
    return [*translation.objects(), *services]


def convert_yaml(snapshot: ClusterSnapshot, translation: Translation) -> str:
    """Multi-document YAML for ``migrate convert -o yaml``."""
    return dump_documents(convert_documents(snapshot, translation))


def convert_json(snapshot: ClusterSnapshot, translation: Translation) -> str:
    """JSON for ``migrate convert -o json``: items, pins and findings."""
    payload = {
        "ciliumVersion": translation.cilium.minor,
        "items": convert_documents(snapshot, translation),
        "pins": [pin.to_dict() for pin in translation.pins],
        "findings": [finding.to_dict() for finding in translation.findings],
    }
    return json.dumps(payload, indent=2) + "\n"


def findings_table(findings: Sequence[Finding], stream: IO[str], *, title: str = "Findings") -> (
    None
):
    """A table of findings (severity, object, field, message) on the given stream."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=stream, soft_wrap=False, width=_width(stream))
    if not findings:
        console.print("No findings: everything translates exactly.")
        return
    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("Severity", no_wrap=True)
    table.add_column("Object", overflow="fold")
    table.add_column("Field", overflow="fold")
    table.add_column("Finding", overflow="fold")
    for finding in findings:
        table.add_row(
            f"[{SEVERITY_STYLE[finding.severity]}]{finding.severity.value}[/]",
            escape(finding.obj),
            escape(finding.field or ""),
            escape(finding.message),
        )
    console.print(table)


def summary_line(translation: Translation) -> str:
    """One line: how much was translated and how many findings of each severity."""
    counts = {s: 0 for s in Severity}
    for finding in translation.findings:
        counts[finding.severity] += 1
    return (
        f"{len(translation.pools)} pool(s), {len(translation.policies)} L2 policy(ies),"
        f" {len(translation.pins)} Service(s) pinned for Cilium {translation.cilium.minor};"
        f" {counts[Severity.ERROR]} error(s), {counts[Severity.WARNING]} warning(s),"
        f" {counts[Severity.INFO]} note(s)"
    )


def error_message(message: str, stream: IO[str]) -> None:
    """A one-line error on the given stream."""
    stream.write(f"Error: {message}\n")


def _width(stream: IO[str]) -> int:
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        import shutil

        return shutil.get_terminal_size((120, 24)).columns
    return 160
