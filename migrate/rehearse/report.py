"""Rendering a rehearsal: the table (stdout), JSON, and one self-contained HTML page with the
stage table and, per IP, the cutover drawn as an SVG timeline. The only place that formats a
:class:`~migrate.rehearse.model.RehearsalReport`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from html import escape
from typing import IO

from migrate.rehearse.model import (
    INVARIANT_NAMES,
    INVARIANTS,
    Answer,
    ChaosRun,
    IpCutover,
    RehearsalReport,
    StageReport,
)

CHECK_STYLE = {"ok": "green", "failed": "bold red", "-": "dim"}
VERDICT_STYLE = {"safe": "bold green", "blocked": "bold yellow", "unsafe": "bold red",
                 "inconclusive": "bold yellow"}


def report_json(report: RehearsalReport) -> str:
    """``-o json``."""
    return json.dumps(report.to_json(), indent=2) + "\n"


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}s" if value < 10 else f"{value:.1f}s"


def _who(metallb: Sequence[str], cilium: Sequence[str]) -> str:
    parts = [f"MetalLB {', '.join(metallb)}"] if metallb else []
    if cilium:
        parts.append(f"Cilium {', '.join(cilium)}")
    return " + ".join(parts) or "nobody"


def summary_lines(report: RehearsalReport) -> list[str]:
    """The short summary a terminal (and the README) shows: verdict, stages, silences."""
    lines = [f"Rehearsal of {report.source} on a twin ({report.time} time, seed"
             f" {report.seed}, lab timing {report.timing})"]
    applied = [row for row in report.stages if row.phase == "apply" and row.stage != "verify"]
    if applied:
        total = sum(row.expected_seconds for row in applied)
        lines.append(f"  {len(applied)} stages applied, {sum(r.writes for r in applied)}"
                     f" writes, expected {total:.1f}s on the cluster")
    rollback = next((row for row in report.stages if row.phase == "rollback"), None)
    if rollback is not None:
        exact = rollback.checks.get("I3") == "ok"
        lines.append(f"  rollback: {rollback.outcome}, start state back"
                     f" {'exactly' if exact else 'NOT exactly'}")
    handed = [c for c in report.cutover if c.silence is not None]
    if handed:
        worst = max(handed, key=lambda c: c.silence or 0.0)
        lines.append(f"  cutover: {len(handed)} IP(s) handed over, longest silence"
                     f" {_seconds(worst.silence)} ({worst.ip}), two announcers"
                     f" {'SEEN' if any(c.two_announcers for c in report.cutover) else 'never'}")
    if report.chaos:
        lines.append(f"  chaos: {report.chaos_survived} of {len(report.chaos)} runs survived")
    lines.append(f"Verdict: {report.verdict.summary}")
    first = report.verdict.first
    if first is not None:
        lines.append(f"  first failure: {first.subject}: {first.detail}")
        lines.append(f"  remedy: {first.remedy}")
    return lines


def report_table(report: RehearsalReport, stream: IO[str]) -> None:
    """The table ``migrate rehearse`` prints."""
    from rich.console import Console
    from rich.markup import escape as rich_escape
    from rich.table import Table

    from migrate.render import _width

    console = Console(file=stream, soft_wrap=False, width=max(_width(stream), 120))
    console.print(rich_escape(summary_lines(report)[0]))
    table = Table(show_lines=False, expand=False)
    for column in ("Phase", "Stage", "Outcome", "Writes", "Requests", "Twin", "Expected",
                   *INVARIANTS, "Leases", "Findings"):
        table.add_column(column, overflow="fold", no_wrap=column not in ("Findings",))
    for row in report.stages:
        checks = [f"[{CHECK_STYLE[row.checks.get(name, '-')]}]{row.checks.get(name, '-')}[/]"
                  for name in INVARIANTS]
        table.add_row(row.phase, row.stage, row.outcome, str(row.writes), str(row.requests),
                      _seconds(row.twin_seconds), _seconds(row.expected_seconds), *checks,
                      row.leases, rich_escape("; ".join(map(_short, row.findings[:3])) + (
                          f" (+{len(row.findings) - 3})" if len(row.findings) > 3 else "")))
    console.print(table)
    if report.cutover:
        cut = Table(title="Cutover per IP", expand=False)
        for column in ("IP", "Services", "Before", "After", "Silence", "Re-apply",
                       "Two announcers", "Wire"):
            cut.add_column(column, overflow="fold")
        for item in report.cutover:
            last = item.answers[-1]
            wire = "-"
            if item.wire is not None:
                wire = (f"{item.wire['doubledRounds']} doubled round(s), silent"
                        f" {_seconds(item.wire['cutoverSilence'])}")
            cut.add_row(item.ip, rich_escape(", ".join(item.services)),
                        _who(item.answers[0].metallb, item.answers[0].cilium),
                        _who(last.metallb, last.cilium), _seconds(item.silence),
                        _seconds(item.reapply_silence),
                        f"[bold red]{item.doubled:.3f}s[/]" if item.two_announcers
                        else "never",
                        wire)
        console.print(cut)
    if report.chaos:
        chaos = Table(title=f"Chaos: {report.chaos_survived} of {len(report.chaos)} runs"
                      " survived", expand=False)
        for column in ("#", "Seed", "Fault", "Request", "During", "Recovery", "Result"):
            chaos.add_column(column, overflow="fold")
        for run in report.chaos:
            chaos.add_row(str(run.index), str(run.seed), run.fault,
                          f"{run.at}: {rich_escape(run.request)}", run.during or "-",
                          rich_escape(run.recovery), "[green]survived[/]" if run.survived
                          else f"[bold red]failed[/]: {rich_escape('; '.join(run.problems))}")
        console.print(chaos)
    for line in report.fidelity:
        console.print(f"[yellow]twin:[/] {rich_escape(line)}")
    style = VERDICT_STYLE[report.verdict.status]
    for line in summary_lines(report)[1:]:
        console.print(f"[{style}]{rich_escape(line)}[/]" if line.startswith("Verdict:")
                      else rich_escape(line))
    failed = [run for run in report.chaos if not run.survived]
    for run in failed:
        console.print("  replay: " + rich_escape(report.chaos_replay.replace(
            "{seed}", str(run.seed))))


# ----------------------------------------------------------------------------- HTML

CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#111}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}
.meta{color:#555;margin-bottom:12px}
.verdict{padding:10px 14px;border-radius:6px;margin:12px 0;font-weight:600}
.safe{background:#dcfce7;color:#14532d}.unsafe{background:#fee2e2;color:#7f1d1d}
.blocked,.inconclusive{background:#fef9c3;color:#713f12}
.remedy{font-weight:400;margin-top:4px}
table{border-collapse:collapse;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 7px;
text-align:left;vertical-align:top}th{background:#f3f4f6}td.num{text-align:right}
td.ok{color:#15803d}td.failed{color:#b91c1c;font-weight:700}td.na{color:#9ca3af}
td{white-space:nowrap}td.findings{white-space:normal;min-width:240px;font-size:13px}
.timeline{display:block;margin:4px 0 14px}.ip{font-weight:600}
.legend span{display:inline-block;margin-right:14px}
.swatch{display:inline-block;width:12px;height:12px;vertical-align:-2px;margin-right:4px}
"""
COLOURS = {"metallb": "#3b82f6", "cilium": "#10b981", "silent": "#ef4444", "two": "#7c3aed"}
WIDTH = 760
LABEL = 70
LANE = 22


def _check_cell(value: str) -> str:
    css = {"ok": "ok", "failed": "failed"}.get(value, "na")
    return f'<td class="{css}">{escape(value)}</td>'


def _stage_rows(rows: Sequence[StageReport]) -> str:
    out = []
    for row in rows:
        cells = [f"<td>{escape(row.phase)}</td>", f"<td>{escape(row.stage)}</td>",
                 f"<td>{escape(row.outcome)}</td>", f'<td class="num">{row.writes}</td>',
                 f'<td class="num">{row.requests}</td>',
                 f'<td class="num">{escape(_seconds(row.twin_seconds))}</td>',
                 f'<td class="num">{escape(_seconds(row.expected_seconds))}</td>',
                 *(_check_cell(row.checks.get(name, "-")) for name in INVARIANTS),
                 f"<td>{escape(row.leases)}</td>",
                 '<td class="findings">' + "<br>".join(escape(f) for f in row.findings)
                 + "</td>"]
        out.append(f'<tr data-phase="{escape(row.phase)}" data-stage="{escape(row.stage)}">'
                   + "".join(cells) + "</tr>")
    return "\n".join(out)


def _segments(answers: Sequence[Answer], length: float) -> list[tuple[float, float, Answer]]:
    """(start, end, answer) over the window; zero-length ones kept (instants)."""
    out = []
    for index, answer in enumerate(answers):
        end = answers[index + 1].at if index + 1 < len(answers) else length
        out.append((answer.at, max(end, answer.at), answer))
    return out


def _fill(answer: Answer, pattern: str) -> str:
    nodes = set(answer.metallb) | set(answer.cilium)
    if len(nodes) > 1 or (answer.metallb and answer.cilium):
        return f"url(#{pattern})"
    if answer.cilium:
        return COLOURS["cilium"]
    if answer.metallb:
        return COLOURS["metallb"]
    return COLOURS["silent"]


def timeline_svg(item: IpCutover, index: int = 0) -> str:
    """One IP's cutover: a lane of who answered (the twin's models) from just before the
    stage to its end, and under it the wire (``--wire``)."""
    length = max(item.seconds, 1e-9)
    lead = length * 0.25  # "before": who answered as the cutover began
    span = WIDTH - LABEL - 10

    def x(at: float) -> float:
        return LABEL + (at + lead) / (length + lead) * span

    lanes = [("model", [(-lead, 0.0, item.answers[0]),
                        *_segments(item.answers, length)])]
    if item.wire is not None:
        wire_answers = [Answer(float(a["at"]), (), tuple(a["nodes"])) for a in
                        item.wire.get("answers") or []] or [Answer(0.0, (), ())]
        lanes.append(("wire", [(-lead, 0.0, wire_answers[0]),
                               *_segments(wire_answers, length)]))
    height = 26 + LANE * len(lanes) + 18
    pattern = f"two-{index}"
    parts = [f'<svg class="timeline" data-ip="{escape(item.ip)}" xmlns="http://www.w3.org/2000/svg"'
             f' width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" role="img"'
             f' aria-label="cutover of {escape(item.ip)}">',
             f'<defs><pattern id="{pattern}" width="6" height="6" patternUnits="userSpaceOnUse"'
             ' patternTransform="rotate(45)"><rect width="6" height="6" fill="#c4b5fd"/>'
             f'<rect width="3" height="6" fill="{COLOURS["two"]}"/></pattern></defs>',
             f'<text x="0" y="14" class="ip" font-size="13" font-weight="600">'
             f'{escape(item.ip)}</text>',
             f'<text x="{max(LABEL + 50, 8 * len(item.ip) + 16)}" y="14" font-size="11"'
             ' fill="#555">'
             f'{escape(", ".join(item.services))}</text>']
    for lane_index, (name, segments) in enumerate(lanes):
        y = 22 + lane_index * LANE
        parts.append(f'<text x="0" y="{y + 14}" font-size="11" fill="#555">{name}</text>')
        for start, end, answer in segments:
            left, right = x(start), x(end)
            who = _who(answer.metallb, answer.cilium) if name == "model" else (
                ", ".join(answer.cilium) or "nobody")
            fill = _fill(answer, pattern) if name == "model" else (
                COLOURS["silent"] if not answer.cilium else
                f"url(#{pattern})" if len(answer.cilium) > 1 else "#64748b")
            if right - left < 0.5:
                if name == "model" and fill.startswith("url("):  # two announcers, an instant
                    parts.append(f'<line class="doubled" x1="{left:.2f}" y1="{y - 2}"'
                                 f' x2="{left:.2f}" y2="{y + LANE - 2}" stroke='
                                 f'"{COLOURS["two"]}" stroke-width="4"><title>{escape(who)}'
                                 f' at {start:.3f}s</title></line>')
                continue
            parts.append(f'<rect x="{left:.2f}" y="{y}" width="{right - left:.2f}"'
                         f' height="{LANE - 4}" fill="{fill}"><title>{escape(who)} from'
                         f' {start:.3f}s</title></rect>')
            if right - left > 8 + 6.5 * len(who):
                parts.append(f'<text x="{left + 4:.2f}" y="{y + 13}" font-size="11"'
                             f' fill="#fff">{escape(who)}</text>')
    handover = next((a.at for a in item.answers if a.cilium), None)
    if handover is not None:
        hx = x(handover)
        parts.append(f'<line class="handover" x1="{hx:.2f}" y1="18" x2="{hx:.2f}"'
                     f' y2="{22 + LANE * len(lanes)}" stroke="{COLOURS["silent"]}"'
                     ' stroke-width="2"/>')
        parts.append(f'<text x="{WIDTH - 4}" y="14" font-size="11" text-anchor="end"'
                     f' fill="{COLOURS["silent"]}">Cilium from {handover:.3f}s, silence'
                     f' {escape(_seconds(item.silence))}</text>')
    axis = 22 + LANE * len(lanes) + 12
    for at, anchor in ((0.0, "middle"), (length / 2, "middle"), (length, "end")):
        parts.append(f'<text x="{x(at):.2f}" y="{axis}" font-size="10" fill="#555"'
                     f' text-anchor="{anchor}">{at:.1f}s</text>')
    parts.append(f'<text x="{LABEL}" y="{axis}" font-size="10" fill="#555">before</text>')
    parts.append("</svg>")
    return "".join(parts)


def _chaos_rows(runs: Sequence[ChaosRun]) -> str:
    return "\n".join(
        f'<tr><td class="num">{run.index}</td><td class="num">{run.seed}</td>'
        f"<td>{escape(run.fault)}</td><td>{run.at}: {escape(run.request)}</td>"
        f"<td>{escape(run.during or '-')}</td><td>{escape(run.recovery)}</td>"
        + (_check_cell("ok").replace(">ok<", ">survived<") if run.survived else
           f'<td class="failed">failed: {escape("; ".join(run.problems))}</td>') + "</tr>"
        for run in runs)


def report_html(report: RehearsalReport) -> str:
    """One self-contained page (no script, no external asset)."""
    verdict = report.verdict
    first = ""
    if verdict.first is not None:
        first = (f'<div class="remedy">First failure: {escape(verdict.first.subject)}:'
                 f" {escape(verdict.first.detail)} ({escape(verdict.first.where)})</div>"
                 f'<div class="remedy">Remedy: {escape(verdict.first.remedy)}</div>')
    head = "".join(f"<th>{escape(c)}</th>" for c in (
        "Phase", "Stage", "Outcome", "Writes", "Requests", "Twin", "Expected"))
    head += "".join(f'<th title="{escape(INVARIANT_NAMES[n])}">{n}</th>' for n in INVARIANTS)
    head += "<th>Leases</th><th>Findings</th>"
    body = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>migrate rehearse: {escape(report.source)}</title>",
        f"<style>{CSS}</style></head><body>",
        f"<h1>Rehearsal of {escape(report.source)}</h1>",
        f'<div class="meta">{escape(report.time)} time, seed {report.seed}, lab timing'
        f" {escape(report.timing)}, Cilium {escape(report.cilium_version)}"
        + (f", canary pool {escape(report.canary)}" if report.canary else "")
        + (f", snapshot {escape(report.snapshot)}" if report.snapshot else "") + "</div>",
        f'<div class="verdict {verdict.status}" id="verdict">{escape(verdict.summary)}'
        f"{first}</div>",
        "<h2>Stages</h2>", f'<table id="stages"><thead><tr>{head}</tr></thead><tbody>',
        _stage_rows(report.stages), "</tbody></table>",
        '<p class="meta">' + " · ".join(f"{n} {escape(INVARIANT_NAMES[n])}"
                                        for n in INVARIANTS) + "</p>",
    ]
    if report.cutover:
        body += ["<h2>Cutover per IP</h2>",
                 '<div class="legend">' + "".join(
                     f'<span><i class="swatch" style="background:{colour}"></i>{label}</span>'
                     for label, colour in (("MetalLB answers", COLOURS["metallb"]),
                                           ("Cilium answers", COLOURS["cilium"]),
                                           ("nobody answers", COLOURS["silent"]),
                                           ("two announcers", COLOURS["two"]),
                                           ("wire: one MAC", "#64748b"))) + "</div>",
                 '<div id="timelines">',
                 *(timeline_svg(item, i) for i, item in enumerate(report.cutover)),
                 "</div>"]
    if report.chaos:
        body += [f"<h2>Chaos: {report.chaos_survived} of {len(report.chaos)} runs survived"
                 "</h2>", '<table id="chaos"><thead><tr><th>#</th><th>Seed</th><th>Fault</th>'
                 "<th>Request</th><th>During</th><th>Recovery</th><th>Result</th></tr></thead>"
                 "<tbody>", _chaos_rows(report.chaos), "</tbody></table>"]
        if any(not run.survived for run in report.chaos):
            body.append(f'<p class="meta">Replay a run: <code>{escape(report.chaos_replay)}'
                        "</code></p>")
    notes = [*report.fidelity, *report.assumptions]
    if notes:
        body += ["<h2>Notes</h2><ul>", *(f"<li>{escape(n)}</li>" for n in notes), "</ul>"]
    body.append("</body></html>")
    return "\n".join(body) + "\n"
