"""Rendering: YAML/JSON documents and rich tables. The library never prints; the CLI calls here."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, Any

# Heavier modules (rich, the model) are imported where they are used, so that a command
# imports only what it renders: ``migrate verify --arp`` starts in a few milliseconds.
if TYPE_CHECKING:
    from migrate.model.findings import Finding
    from migrate.preflight.report import PreflightReport
    from migrate.sources.snapshot import ClusterSnapshot
    from migrate.translate.translator import Translation

SEVERITY_STYLE = {"ERROR": "bold red", "WARNING": "yellow", "INFO": "cyan"}
"""Rich style per finding severity (``Severity`` is a StrEnum: its members are these keys)."""


def convert_documents(snapshot: ClusterSnapshot, translation: Translation) -> list[dict[str, Any]]:
    """The objects ``migrate convert`` writes: Cilium objects, then every pinned input Service."""
    from migrate.translate.translator import pinned_service

    bodies = {(s.namespace, s.name): s.body for s in snapshot.services}
    services = [
        pinned_service(bodies[(pin.namespace, pin.name)], pin) for pin in translation.pins
    ]
    return [*translation.objects(), *services]


def convert_yaml(snapshot: ClusterSnapshot, translation: Translation) -> str:
    """Multi-document YAML for ``migrate convert -o yaml``."""
    from migrate.sources.files import dump_documents

    return dump_documents(convert_documents(snapshot, translation))


def convert_json(snapshot: ClusterSnapshot, translation: Translation) -> str:
    """JSON for ``migrate convert -o json``: items, pins, the pool label's value per MetalLB
    pool, findings (and ``bgp``: the node sets, peers, Services and Secrets of the BGP
    translation)."""
    payload: dict[str, Any] = {
        "ciliumVersion": translation.cilium.minor,
        "items": convert_documents(snapshot, translation),
        "pins": [pin.to_dict() for pin in translation.pins],
        "poolLabels": dict(translation.pool_labels),
        "findings": [finding.to_dict() for finding in translation.findings],
    }
    if translation.bgp:
        payload["bgp"] = translation.bgp.to_dict()
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
    from migrate.model.findings import Severity

    counts = {s: 0 for s in Severity}
    for finding in translation.findings:
        counts[finding.severity] += 1
    bgp = f" {len(translation.bgp.objects())} BGP object(s)," if translation.bgp else ""
    return (
        f"{len(translation.pools)} pool(s), {len(translation.policies)} L2 policy(ies),{bgp}"
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


def _short(value: Any, limit: int = 90) -> str:
    text = json.dumps(value, sort_keys=True) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plan_text(plan: Any, stream: IO[str]) -> None:
    """The plan as a person reads it: stages, checks, actions and a diff per object."""
    from rich.console import Console
    from rich.markup import escape

    from migrate.plan.diff import action_changes

    console = Console(file=stream, soft_wrap=False, width=_width(stream), highlight=False)
    console.print(f"[bold]Migration plan[/] (fingerprint {plan.fingerprint}, Cilium"
                  f" {plan.cilium_version}, MetalLB namespace {plan.metallb_namespace},"
                  f" source: {escape(plan.source)})")
    total = 0
    for stage in plan.stages:
        changes = stage.changes
        total += len(changes)
        console.print()
        console.print(f"[bold cyan]Stage {stage.number}: {stage.name}[/] — {escape(stage.title)}"
                      f" ({len(changes)} change(s))")
        if stage.why:
            console.print(f"  [dim]{escape(stage.why)}[/]")
        for check in stage.checks_before:
            console.print(f"  [dim]before:[/] {escape(check)}")
        for action in stage.actions:
            style = {"create": "green", "delete": "red", "patch": "yellow",
                     "scale": "yellow", "wait": "blue"}.get(action.verb, "white")
            console.print(f"  [{style}]{action.verb:>6}[/] {escape(action.target.key)}:"
                          f" {escape(action.description)}")
            for change in action_changes(action):
                if change.path == "(object)":
                    obj = change.new if change.sign == "+" else change.old
                    spec = (obj or {}).get("spec") if isinstance(obj, dict) else None
                    if spec:
                        console.print(f"         [{style}]{change.sign}[/] spec:"
                                      f" {escape(_short(spec, 200))}")
                    continue
                color = {"+": "green", "-": "red", "~": "yellow"}[change.sign]
                if change.sign == "~":
                    detail = f"{_short(change.old)} → {_short(change.new)}"
                elif change.sign == "+":
                    detail = _short(change.new)
                else:
                    detail = _short(change.old)
                console.print(f"         [{color}]{change.sign} {escape(change.path)}:[/]"
                              f" {escape(detail)}")
        for check in stage.checks_after:
            console.print(f"  [dim]after:[/] {escape(check)}")
    manual = plan.context.get("manualLastStep")
    if manual:
        console.print()
        console.print(f"[bold]Then, by hand:[/] {escape(manual)}")
    console.print()
    findings_table(plan.findings, stream)
    verdict = ("[bold red]This plan has ERROR findings: apply will refuse it.[/]"
               if plan.blocked else
               f"Plan: {total} change(s) in {sum(1 for s in plan.stages if s.changes)}"
               " stage(s).")
    console.print(verdict)


def plan_document(plan: Any, output: str) -> str:
    """The plan as YAML or JSON (top-level ``stages`` and ``findings``)."""
    import yaml

    _YAML_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    data = plan.to_dict()
    if output == "json":
        return json.dumps(data, indent=2) + "\n"
    return str(yaml.dump(data, Dumper=_YAML_DUMPER, sort_keys=False, width=100))


def status_text(state: Any, lock: Any, namespace: str, stream: IO[str]) -> None:
    """Which stages are done, by whom and when, and who holds the lock."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(file=stream, soft_wrap=False, width=_width(stream), highlight=False)
    if not state.stages:
        console.print(f"No migration recorded in namespace {namespace}.")
    else:
        console.print(f"Plan {state.plan_digest} (fingerprint {state.plan_fingerprint})")
        table = Table(show_lines=False)
        for column in ("Stage", "Status", "Started", "By", "Applied"):
            table.add_column(column)
        for record in state.stages:
            table.add_row(record.name, record.status, record.started_at,
                          escape(record.started_by), record.applied_at or "")
        console.print(table)
    if lock is None:
        console.print("Lock: free")
    else:
        console.print(f"Lock: held by {escape(lock[0])} until {lock[1].isoformat()} (if that"
                      " run died, `migrate unlock` frees it)")


def lock_lines(lock: Any, now: Any = None) -> list[str]:
    """Who holds the migration lock, since and until when (``migrate unlock``)."""
    import datetime as dt

    from migrate.apply.lock import LOCK_NAME

    now = now or dt.datetime.now(dt.UTC)

    def moment(value: Any) -> str:
        if value is None:
            return "unknown"
        seconds = int((value - now).total_seconds())
        relative = f"in {seconds}s" if seconds > 0 else f"{-seconds}s ago"
        return f"{value.strftime('%Y-%m-%d %H:%M:%S')} UTC ({relative})"

    rows = [("held by", lock.holder), ("acquired", moment(lock.acquired)),
            ("renewed", moment(lock.renewed)),
            ("expired" if lock.expired(now) else "expires", moment(lock.expiry))]
    return [f"Lock Lease {lock.namespace}/{LOCK_NAME}",
            *(f"  {label + ':':<10}{value}" for label, value in rows)]


# ---------------------------------------------------------------------------- preflight

PREFLIGHT_STYLE = {
    "ERROR": "bold red",
    "WARNING": "yellow",
    "INFO": "cyan",
    "OK": "green",
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
            f"[{PREFLIGHT_STYLE[check.severity.value]}]{check.severity.value}[/]",
            escape(check.name),
            escape(check.found),
            escape(check.remedy),
        )
    console.print(table)
    from migrate.preflight.report import CheckSeverity

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


# ---------------------------------------------------------------------------- verify

def verify_tables(result: Any, file: IO[str] | None = None) -> None:
    """Print the result on ``file`` (stdout by default): the API checks as a rich table, the
    ARP answers as plain columns (``arp_table``), then the failover."""
    stream = file if file is not None else sys.stdout
    if result.api is not None:
        from rich.console import Console
        from rich.table import Table

        table = Table("check", "object", "status", "detail",
                      title=f"API checks ({_PHASE_TITLES[result.api.phase]})")
        for check in result.api.checks:
            table.add_row(check.name, check.subject,
                          f"[{'green' if check.ok else 'red'}]{check.status}", check.detail)
        Console(file=stream).print(table)
    if result.arp:
        stream.write(arp_table(result, colour=use_colour(stream)))
    if result.not_probed:
        stream.write(f"Not probed over ARP (IPv6): {', '.join(result.not_probed)}\n")
    if result.failover is not None:
        stream.write("".join(f"{line}\n" for line in _failover_lines(result.failover)))
    stream.flush()


_PHASE_TITLES = {"metallb": "MetalLB announces", "canary": "Cilium announces the canary pool,"
                 " MetalLB the others", "cilium": "Cilium announces"}
_VERDICT_COLOUR = {"ok": "32", "conflict": "31", "silent": "33", "failed": "31"}  # ANSI SGR


def use_colour(stream: IO[str]) -> bool:
    """Colour for a terminal, unless ``NO_COLOR`` is set (no-color.org) or ``TERM=dumb``."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ and (
        os.environ.get("TERM") != "dumb")


def arp_table(result: Any, *, colour: bool = False) -> str:
    """The ARP answers of ``migrate verify`` as aligned columns, one line per IP, then a count.

    Plain text rather than a rich table: one line per IP whatever the number of MACs (so
    ``grep`` finds an IP with all its MACs), and a thousand rows print in a millisecond.
    With the API checks, EXPECTED names the node that should answer and ANNOUNCER says
    whether it does. ``colour`` paints the verdicts (green ok, red conflict or failed,
    yellow silent).
    """
    with_api = result.api is not None
    header = ["IP", "STATUS", "MACS", "NODES"] + (["EXPECTED", "ANNOUNCER"] if with_api else [])
    rows: list[list[str]] = [header]
    paints: list[dict[int, str]] = [{}]  # per row: column -> verdict to colour it by
    counts = {"ok": 0, "conflict": 0, "silent": 0}
    for match in result.arp:
        entry = match.entry
        counts[entry.status] += 1
        row = [str(entry.ip), entry.status, ",".join(entry.macs) or "-",
               ",".join(entry.nodes) or "-"]
        paint = {1: entry.status}
        if with_api:
            row += [",".join(match.expected) or "-", match.detail]
            paint[5] = "ok" if match.ok else "failed"
        rows.append(row)
        paints.append(paint)
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    widths[-1] = 0  # the last column is not padded: no trailing blanks
    lines = [f"ARP on {result.interface}"]
    for row, paint in zip(rows, paints, strict=True):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        if colour:
            for column, verdict in paint.items():
                cells[column] = f"\x1b[{_VERDICT_COLOUR[verdict]}m{cells[column]}\x1b[0m"
        lines.append("  ".join(cells))
    lines.append(f"{len(result.arp)} IPs: {counts['ok']} ok, {counts['conflict']} conflict,"
                 f" {counts['silent']} silent")
    return "".join(f"{line}\n" for line in lines)


def _failover_lines(report: Any) -> list[str]:
    lines = [
        f"Failover of {report.service}: {'ok' if report.ok else 'FAILED'}",
        f"  deleted pod {report.pod}",
        f"  lease: {report.old_holder} -> {report.new_holder or '(not moved)'}"
        + (f" after {report.lease_seconds:.1f}s" if report.lease_seconds is not None else ""),
    ]
    if report.wire:
        lines.append(
            f"  ARP: {' '.join(report.old_macs) or '-'} -> {' '.join(report.new_macs) or '-'}"
            + (f" ({', '.join(report.new_mac_nodes)})" if report.new_mac_nodes else "")
            + (f" after {report.wire_seconds:.1f}s" if report.wire_seconds is not None else ""))
        lines.append(f"  gratuitous ARP: {'seen' if report.gratuitous else 'not seen'};"
                     f" longest silence {report.silent_seconds:.1f}s;"
                     f" rounds with two MACs: {report.conflict_rounds}")
    lines += [f"  problem: {problem}" for problem in report.problems]
    return lines


def _clock(epoch: float) -> str:
    import time

    return time.strftime("%H:%M:%S", time.localtime(epoch)) + f".{int(epoch % 1 * 1000):03d}"


def _answering(macs: Sequence[str], nodes: Sequence[str]) -> str:
    return ", ".join(macs) + (f" ({', '.join(nodes)})" if nodes else "")


def watch_line(event: Any) -> str:
    """One line of ``migrate verify --watch``: when, which IP, what changed."""
    who = _answering(event.macs, event.nodes)
    if event.kind == "silent":
        text = "silent: nobody answers"
    elif event.kind == "conflict":
        text = f"CONFLICT: answered by {who}"
    elif event.kind == "gratuitous":
        text = f"gratuitous ARP ({event.detail}) from {who}"
    else:
        text = f"answered by {who}" + (
            f" after {event.silent_for:.2f}s of silence" if event.silent_for else "")
    return f"{_clock(event.at)}  {event.ip}  {text}"


def watch_summary(report: Any) -> str:
    """What a watch saw, per IP: who answers now, moves, longest silence, rounds with two MACs."""
    seconds = (report.ended or 0.0) - (report.started or 0.0)
    lines = [f"Watched {len(report.ips)} IP(s) on {report.interface} for {seconds:.1f}s"
             f" ({report.rounds} rounds):"]
    width = max((len(ip) for ip in report.ips), default=0)
    for ip, history in report.ips.items():
        now = ", ".join(history.macs or ()) or "nobody"
        lines.append(f"  {ip.ljust(width)}  now {now}; moved {history.moves} time(s); longest"
                     f" silence {history.longest_silence:.2f}s; rounds with two MACs:"
                     f" {history.conflict_rounds}")
    return "".join(f"{line}\n" for line in lines)


# ---------------------------------------------------------------------------- progress

class ProgressReporter:
    """What ``apply`` and ``rollback`` (any user of the engine's ``Reporter``) do and await,
    on stderr.

    Events are lines. A wait is a rich progress display on a terminal (state, what is awaited,
    a bar, done/total, elapsed time), and plain lines elsewhere (a log, a CI job): one when it
    starts, one per change of the count, one when it ends, each naming what is awaited.
    ``quiet`` shows nothing. Colours follow rich, which honours ``NO_COLOR`` and
    ``TERM=dumb`` (a dumb terminal gets the plain lines). Use it as a context manager, so that
    a wait cut short by an error leaves the terminal clean.
    """

    def __init__(self, console: Any = None, *, quiet: bool = False,
                 clock: Any = None, auto_refresh: bool = True) -> None:
        import time

        from rich.console import Console

        self.console = console if console is not None else Console(stderr=True,
                                                                   highlight=False)
        self.quiet = quiet
        self.live = bool(self.console.is_terminal and not self.console.is_dumb_terminal)
        self._clock = clock if clock is not None else time.monotonic
        self._auto_refresh = auto_refresh
        self._progress: Any = None
        self._task: Any = None
        self._wait: tuple[str, int, int] | None = None  # description, done, total
        self._started = 0.0

    def __enter__(self) -> ProgressReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def event(self, message: str) -> None:
        """One line, above a running progress display."""
        if not self.quiet:
            self.console.print(f"  {message}", markup=False, highlight=False,
                               overflow="ignore", crop=False)

    def progress(self, description: str, done: int, total: int) -> None:
        """Start or advance the wait ``description``."""
        if self.quiet:
            return
        if self._wait is None or self._wait[0] != description:
            self.close()
            self._started = self._clock()
            self._wait = (description, done, total)
            if self.live:
                self._start_display(description, done, total)
            else:
                self._plain(f"{done}/{total}")
            return
        changed = self._wait[1:] != (done, total)
        self._wait = (description, done, total)
        if self.live:
            self._progress.update(self._task, completed=done, total=total)
            self._progress.refresh()
        elif changed:
            self._plain(f"{done}/{total} ({self._elapsed():.1f}s)")

    def finished(self, description: str, ok: bool) -> None:
        """End the wait: a tick or a cross on a terminal, a last line elsewhere."""
        if self.quiet or self._wait is None or self._wait[0] != description:
            return
        _, done, total = self._wait
        if self.live:
            self._progress.update(self._task, state="done" if ok else "failed",
                                  ended=self._clock())
            self._progress.refresh()
        else:
            outcome = "done in" if ok else "gave up after"
            self._plain(f"{done}/{total}, {outcome} {self._elapsed():.1f}s")
        self.close()

    def close(self) -> None:
        """Stop a progress display that is still running (its last state stays on screen)."""
        if self._progress is not None:
            self._progress.stop()
        self._progress = self._task = self._wait = None

    def _elapsed(self) -> float:
        return float(self._clock() - self._started)

    def _plain(self, text: str) -> None:
        assert self._wait is not None
        self.console.print(f"  wait: {self._wait[0]}: {text}", markup=False, highlight=False,
                           overflow="ignore", crop=False)

    def _start_display(self, description: str, done: int, total: int) -> None:
        from rich.progress import Progress

        self._progress = Progress(
            *_wait_columns(self._clock), console=self.console, auto_refresh=self._auto_refresh,
            transient=False, redirect_stdout=False, redirect_stderr=False, get_time=self._clock,
        )
        self._task = self._progress.add_task(description, total=total, completed=done,
                                             state="waiting", began=self._started, ended=None)
        self._progress.start()
        self._progress.refresh()


def _wait_columns(clock: Any) -> list[Any]:
    """The columns of a wait: state, what is awaited, bar, done/total, elapsed.

    Defined here, not at module level, so that importing this module does not import rich.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, ProgressColumn, TextColumn
    from rich.spinner import Spinner
    from rich.text import Text

    class WaitState(ProgressColumn):
        """A spinner while waiting, then a green tick or a red cross."""

        def __init__(self) -> None:
            super().__init__()
            self.spinner = Spinner("dots", style="cyan")

        def render(self, task: Any) -> Any:
            state = task.fields.get("state")
            if state == "done":
                return Text("✓", style="green")
            if state == "failed":
                return Text("✗", style="bold red")
            return self.spinner.render(task.get_time())

    class WaitElapsed(ProgressColumn):
        """Time since the wait began, frozen when it ends (``m:ss``, then ``h:mm:ss``)."""

        def render(self, task: Any) -> Any:
            end = task.fields.get("ended")
            seconds = int((end if end is not None else clock()) - task.fields["began"])
            minutes, second = divmod(seconds, 60)
            hours, minute = divmod(minutes, 60)
            shown = f"{hours}:{minute:02d}:{second:02d}" if hours else f"{minute}:{second:02d}"
            return Text(shown, style="yellow")

    return [WaitState(), TextColumn("{task.description}", markup=False),
            BarColumn(bar_width=30, finished_style="green"), MofNCompleteColumn(), WaitElapsed()]
