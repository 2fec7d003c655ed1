"""``migrate rehearse``: the whole migration, and its rollback, on a twin of the cluster first.

:func:`rehearse` reads the cluster as ``migrate plan`` does (read-only; never a Secret), saves
what it read as a snapshot folder, starts a twin from it (``twin.start_twin``: the lab's API
server and controller models, in-process) and runs there what an operator would run: every
stage of the plan, ``verify``, a full rollback, a check that the start state is back object
by object, every stage again, ``verify`` again (``run``). With ``chaos`` it repeats the
migration and its rollback that many times with one fault each (``chaos``); with ``wire`` the
twin's nodes answer ARP in network namespaces while a prober watches (``wire``). The result
is a :class:`~migrate.rehearse.model.RehearsalReport`: per stage the outcome and the invariants,
per IP the cutover, and the verdict. Rendering is in ``migrate.rehearse.report``.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from migrate.errors import NothingToMigrateError
from migrate.rehearse.model import (
    Problem,
    RehearsalReport,
    StageReport,
    Verdict,
    invariant_label,
)

if TYPE_CHECKING:
    from migrate.apply.waits import Reporter
    from migrate.kube import Kube
    from migrate.plan.model import Plan
    from migrate.rehearse.twin import Twin

__all__ = ["BEHIND", "RehearseOptions", "check_kept_up", "rehearse", "rehearse_snapshot", "verdict"]


@dataclass(frozen=True)
class RehearseOptions:
    """What to rehearse and how (the CLI's options)."""

    canary: str | None = None
    cilium_version: str | None = None
    cilium_namespace: str = "kube-system"
    metallb_namespace: str | None = None
    seed: int = 0
    time_scale: float | None = None
    """None: virtual time (``--wire`` then runs at real time, scale 1)."""
    wire: bool = False
    chaos: int = 0
    chaos_seeds: tuple[int, ...] = ()
    """Replay exactly these chaos runs (instead of ``chaos`` new ones)."""

    @property
    def virtual(self) -> bool:
        """Virtual time: unless a time scale is given or the wire must follow in real time."""
        return self.time_scale is None and not self.wire

    @property
    def scale(self) -> float:
        return self.time_scale if self.time_scale is not None else 1.0


def rehearse(options: RehearseOptions, reporter: Reporter, *, kube: Kube | None = None,
             from_paths: Sequence[str] = (), source: str | None = None,
             save_snapshot: str | Path | None = None) -> RehearsalReport:
    """Rehearse the migration of the cluster behind ``kube`` (read-only) or of the files in
    ``from_paths``; ``save_snapshot``: where to keep the snapshot rehearsed on."""
    from migrate.plan.api import make_plan
    from migrate.rehearse.source import save_snapshot as write_snapshot

    if kube is not None:
        from migrate.sources.live import read_live

        snapshot = read_live(kube, metallb_namespace=options.metallb_namespace,
                             cilium_namespace=options.cilium_namespace)
        described = source or "cluster"
    else:
        from migrate.sources.snapshot import read_snapshot

        snapshot = read_snapshot(list(from_paths), metallb_namespace=options.metallb_namespace)
        described = source or "files: " + ", ".join(from_paths)
    if not snapshot.has_metallb:
        raise NothingToMigrateError("nothing MetalLB-related found: there is nothing to"
                                    " migrate, so nothing to rehearse")
    snapshot.facts["source"] = described
    reporter.event(f"read {len(snapshot.documents)} objects from {described}")
    source_plan = make_plan(snapshot, cilium=options.cilium_version,
                            cilium_namespace=options.cilium_namespace, canary=options.canary)
    with tempfile.TemporaryDirectory(prefix="migrate-snapshot-") as scratch:
        folder = Path(save_snapshot) if save_snapshot is not None else Path(scratch) / "snap"
        write_snapshot(snapshot, folder)
        if save_snapshot is not None:
            reporter.event(f"saved the snapshot to {folder}")
        return rehearse_snapshot(folder, options, reporter, source=described,
                                 source_plan=source_plan,
                                 snapshot_label=str(save_snapshot) if save_snapshot else None)


def _twin_plan(twin: Twin, options: RehearseOptions, source: str) -> Plan:
    """The plan, made the way ``migrate plan`` makes it, from the twin."""
    from migrate.plan.api import make_plan
    from migrate.sources.live import read_live

    snapshot = read_live(twin.kube, metallb_namespace=options.metallb_namespace,
                         cilium_namespace=options.cilium_namespace)
    snapshot.facts["source"] = source
    return make_plan(snapshot, cilium=options.cilium_version,
                     cilium_namespace=options.cilium_namespace, canary=options.canary)


def rehearse_snapshot(folder: str | Path, options: RehearseOptions, reporter: Reporter, *,
                      source: str, source_plan: Plan | None = None,
                      snapshot_label: str | None = None) -> RehearsalReport:
    """Rehearse on a twin of the snapshot in ``folder`` (see the module docstring)."""
    from migrate.rehearse.run import API_ROUND_TRIP, SETTLE, run_main
    from migrate.rehearse.twin import start_twin

    time_mode = "virtual" if options.virtual else f"real (time scale {options.scale:g})"
    twin = start_twin(folder, seed=options.seed, time_scale=options.scale,
                      virtual=options.virtual)
    with twin:
        timing = twin.controllers.timing.name
        reporter.event(f"twin started ({len(twin.store.list('', 'Service'))} Services,"
                       f" {time_mode} time)")
        plan = _twin_plan(twin, options, source)
        report = RehearsalReport(
            source=source, snapshot=snapshot_label, seed=options.seed, time=time_mode,
            timing=timing, cilium_version=plan.cilium_version, canary=options.canary,
            plan_fingerprint=plan.fingerprint,
            findings=[f.to_dict() for f in plan.findings],
            fidelity=[f"not loaded into the twin: {line}" for line in twin.skipped],
            assumptions=[
                f"the twin settles {SETTLE:g}s (twin time) after each stage before the checks",
                f"expected real durations count {API_ROUND_TRIP * 1000:g} ms per API request",
            ])
        if source_plan is not None and _plan_content(source_plan) != _plan_content(plan):
            report.fidelity.append(
                "the plan made on the twin differs from the plan of the source: the twin may"
                " not be the same cluster (compare `migrate plan` on both)")
        if plan.blocked:
            _blocked(report, plan)
            return report
        wire = None
        if options.wire:
            from migrate.rehearse.wire import WireWatch

            wire = WireWatch(twin, [ip for ips in plan.expected_ips.values() for ip in ips])
            reporter.event(f"wire: {len(wire.ips)} IP(s) watched from a network namespace")
            wire.start()
        try:
            run = run_main(twin, plan, reporter)
        finally:
            if wire is not None:
                wire.finish()
        report.stages = run.rows
        report.cutover = run.cutover()
        check_kept_up(report, twin, options)
        if wire is not None:
            window = run.windows.get("apply")
            wire.attach(report.cutover, (window[0].time, window[1].time) if window else None)
            report.wire = wire.summary()
            problems = wire.problems()
            row = StageReport("wire", "ARP", "passed" if not problems else "failed",
                              checks={"I2": "failed" if problems else "ok"},
                              problems=problems,
                              findings=[f"{p.subject}: {p.detail}" for p in problems])
            report.stages.append(row)
    if (options.chaos or options.chaos_seeds) and report.problems:
        report.assumptions.append("the chaos runs were skipped: the migration fails in the twin"
                                  " without any fault")
    elif options.chaos or options.chaos_seeds:
        _chaos(report, folder, plan, options, reporter)
    report.verdict = verdict(report)
    return report


BEHIND = 2.0
"""Modelled seconds the twin's models may run late on a real clock before what they show is
their own lag rather than the cluster's behaviour: one lease retry period (a Cilium agent
renews its leases every 2 s), later than which a renewal was missed."""


def check_kept_up(report: RehearsalReport, twin: Twin, options: RehearseOptions) -> None:
    """On a real clock, note in the report when the models fell behind it (too many Services
    for this time scale: every modelled duration shrinks, the work does not)."""
    late = twin.lag
    if late / options.scale <= BEHIND:
        return
    report.behind = round(late, 3)
    report.fidelity.append(
        f"the twin's models ran up to {late:.2f}s behind the real clock ({late / options.scale:.1f}"
        f" modelled seconds at time scale {options.scale:g}): leases renewed late, reactions"
        " came late; rehearse on virtual time (without --time-scale) or at a larger time scale")


def _plan_content(plan: Plan) -> str:
    """What a plan does, whatever it was read from (files list objects in their own order and
    without the server's defaults): per stage its actions, the IPs, the findings."""
    from migrate.plan.model import canonical_digest

    return canonical_digest({
        "stages": {stage.name: sorted((a.verb, a.target.key, a.description)
                                      for a in stage.actions) for stage in plan.stages},
        "ips": plan.expected_ips,
        "findings": sorted((f.severity.value, f.code, f.obj) for f in plan.findings),
    })


def _blocked(report: RehearsalReport, plan: Plan) -> None:
    errors = [f for f in plan.findings if f.severity.value == "ERROR"]
    problems = [Problem("I6", f.obj, f.message, "Fix it (the finding says how), then"
                        " rehearse again: `migrate apply` refuses a plan with an ERROR"
                        " finding.", "plan") for f in errors]
    report.stages = [StageReport("plan", "preflight", "blocked", checks={"I6": "failed"},
                                 problems=problems,
                                 findings=[f"ERROR: {f.obj}: {f.message}" for f in errors])]
    report.verdict = Verdict("blocked", f"blocked by {len(errors)} ERROR finding(s): nothing"
                             " was applied, even in the twin", problems[0])


def _chaos(report: RehearsalReport, folder: str | Path, plan: Plan, options: RehearseOptions,
           reporter: Reporter) -> None:
    from migrate.rehearse.chaos import measure, run_chaos, run_seed

    requests, writes = measure(folder, plan, options.seed)
    seeds = list(options.chaos_seeds) or [run_seed(options.seed, i)
                                          for i in range(options.chaos)]
    report.chaos = run_chaos(folder, plan, seeds, requests, writes, reporter,
                             twin_seed=options.seed)
    where = report.snapshot or "SNAPSHOT"
    report.chaos_replay = (f"migrate rehearse --from {where} --seed {options.seed}"
                           " --chaos-seed {seed}")


def verdict(report: RehearsalReport) -> Verdict:
    """Safe, or the first problem in the order things happened (chaos runs last)."""
    problems = report.problems
    if problems and report.behind is not None:
        first = problems[0]
        return Verdict("inconclusive", f"inconclusive: the twin ran up to {report.behind:g}s"
                       f" behind its clock, and {invariant_label(first.check)} failed at"
                       f" {first.where} ({len(problems)} problem(s) in all), which its lag can"
                       " cause: rehearse on virtual time (without --time-scale) or at a larger"
                       " --time-scale", first)
    if problems:
        first = problems[0]
        return Verdict("unsafe", f"not safe: {invariant_label(first.check)} failed in the twin"
                       f" at {first.where}"
                       f" ({len(problems)} problem(s) in all)", first)
    failed = [run for run in report.chaos if not run.survived]
    if failed:
        run = failed[0]
        replay = report.chaos_replay.replace("{seed}", str(run.seed))
        first = Problem("chaos", f"chaos run {run.index} (seed {run.seed})",
                        f"{run.fault} at request {run.at} ({run.request}) during {run.during}:"
                        f" {'; '.join(run.problems)}",
                        f"Replay it with `{replay}` and report it with the snapshot.", "chaos")
        return Verdict("unsafe", f"not safe: {len(failed)} of {len(report.chaos)} chaos runs"
                       " did not survive", first)
    summary = "safe to run: every stage kept every IP with one announcer, and the rollback" \
              " gave back the start state exactly"
    if report.chaos:
        summary += f"; {report.chaos_survived} of {len(report.chaos)} chaos runs survived"
    return Verdict("safe", summary)
