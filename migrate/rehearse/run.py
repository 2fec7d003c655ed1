"""The rehearsal's main run on one twin: plan → every stage → verify → rollback → the start
state back exactly → every stage again → verify, each step checked against the invariants.

A stage is applied as ``migrate apply`` applies it (the same library call, through an API
client of its own, waiting on the twin's clock); after it the twin settles for
:data:`SETTLE` seconds of twin time, then the checks read the twin's records for the stage's
share: its status writes (I1), its announcement changes (I2), its backup and the order of its
writes (I4), whether the engine found the plan stale (I5).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from migrate.apply.executor import apply_stage
from migrate.apply.rollback import rollback
from migrate.apply.state import StateStore
from migrate.apply.waits import Reporter
from migrate.errors import BlockedError, MigrateError
from migrate.plan.model import Plan, Stage, Target
from migrate.plan.views import ingress_ips
from migrate.rehearse import invariants as inv
from migrate.rehearse.model import IpCutover, Problem, StageReport, invariant_label
from migrate.rehearse.records import Mark, Request
from migrate.rehearse.twin import Twin, TwinClient

SETTLE = 5.0
"""Twin seconds the models get after each stage before the checks look (free on virtual
time): what a stage sets moving must have settled by the time the next one starts."""
API_ROUND_TRIP = 0.02
"""Seconds a real API server takes per request, for the expected duration (an assumption:
tens of milliseconds over a LAN or VPN)."""
REAL_CONCURRENCY = 8
"""Service patches in flight at once in a real ``migrate apply`` (its default)."""
HANDOVER_STAGES = ("l2-canary", "l2-cutover")
STATE_NAMESPACE = "kube-system"


WAIT_REMEDIES = (
    ("lease held by an eligible node",
     "No node the Cilium policy selects took the lease: check that a Cilium agent runs on the"
     " nodes the policy selects (from the L2Advertisement's nodeSelectors) and that"
     " enable-l2-announcements is true in cilium-config; then rehearse again."),
    ("LB-IPAM has taken over",
     "LB-IPAM did not take the pinned IPs over: check the translated pools cover them and"
     " select their Services (`migrate plan`), and that Cilium's operator runs LB-IPAM"
     " (enable-lb-ipam); then rehearse again."),
    ("has no pods",
     "The workload did not stop within the wait: something scales it back up (a GitOps"
     " controller, an HPA); suspend it for the migration (`migrate preflight`)."),
)


def _subject(text: str, fallback: str) -> str:
    """The first object an error names (``shop/api (holder: none)`` → ``Service shop/api``)."""
    match = re.search(r"yet: ([\w.-]+/[\w.-]+) \(", text) or re.search(
        r"Service ([\w.-]+/[\w.-]+)", text)
    return f"Service {match.group(1)}" if match else fallback


def stage_problem(error: MigrateError, where: str) -> Problem:
    """The problem a stage that stopped with ``error`` is (I5 when the plan was stale), with
    the object it names and what to do."""
    text = str(error)
    notes = [str(n) for n in getattr(error, "__notes__", ())]
    stage = where.split(" ", 1)[-1]
    if isinstance(error, BlockedError) and "plan is stale" in text:
        _, _, rest = text.partition(":\n")
        changed = [line.strip(" -") for line in rest.splitlines() if line.strip(" -")]
        subject = changed[0].split(" changed")[0] if changed else stage
        return Problem("I5", subject, "; ".join(changed) or text,
                       "The objects changed between the stages: something besides migrate"
                       " writes them (a GitOps controller, an operator); suspend it for the"
                       " migration (`migrate preflight` names the known ones).", where)
    remedy = next((fix for clue, fix in WAIT_REMEDIES if clue in text), None)
    return Problem("stage", _subject(text, f"stage {stage}"), text,
                   remedy or " ".join(notes) or inv.REPORT_IT, where)


def object_writes(requests: Sequence[Request]) -> int:
    """Writes to migrated objects (not to migrate's own state, backups and lock)."""
    return sum(1 for r in requests if r.is_write and "/lbmigrate-" not in r.path
               and not (r.method == "POST" and r.resource in ("configmaps", "leases")))


def expected_seconds(twin: Twin, waited: float, requests: Sequence[Request]) -> float:
    """How long the step would take on the real cluster: the time its client waited for the
    models (its polls; over the time scale on a real clock, where the models' delays were
    scaled) plus a round trip per request, Service patches :data:`REAL_CONCURRENCY` at a time.
    The twin's own processing time is left out: a real API server's is the round trip."""
    model = waited if twin.virtual else waited / twin.time_scale
    patches = sum(1 for r in requests if r.method == "PATCH" and r.resource == "services")
    return model + (len(requests) - patches + patches / REAL_CONCURRENCY) * API_ROUND_TRIP


@dataclass
class MainRun:
    """The main run's state: the twin, the plan, what the start looked like, the rows."""

    twin: Twin
    plan: Plan
    reporter: Reporter
    rows: list[StageReport] = field(default_factory=list)
    windows: dict[str, tuple[Mark, Mark]] = field(default_factory=dict)
    """``phase`` → the cutover window: from the first hand-over stage (l2-canary or
    l2-cutover) to the end of l2-cutover's settle."""
    state_namespace: str = STATE_NAMESPACE

    def __post_init__(self) -> None:
        self.start = self.twin.records.mark()
        self.objects = self.snapshot_objects()
        self.answered = set(self.twin.records.answering())
        self.services = inv.ip_services(self.plan.expected_ips)
        self.announced: dict[str, Any] = dict(self.plan.context.get("announced") or {})

    # -- reading the twin ------------------------------------------------------------------
    def snapshot_objects(self) -> dict[str, dict[str, Any]]:
        """Every object a migration may touch, comparable (I3)."""
        return inv.comparable_objects(
            obj for group, kind in inv.WATCHED for obj in self.twin.store.list(group, kind))

    def current_ips(self) -> dict[str, list[str]]:
        return {f"{s['metadata']['namespace']}/{s['metadata']['name']}": ingress_ips(s)
                for s in self.twin.store.list("", "Service")}

    def leases(self) -> str:
        """``held/announced``: Cilium L2 leases held by a node their Service may use."""
        if not self.announced:
            return "-"
        held = 0
        for key, eligible in self.announced.items():
            namespace, _, name = key.partition("/")
            lease = self.twin.store.try_get("coordination.k8s.io", "Lease",
                                            f"cilium-l2announce-{namespace}-{name}",
                                            self.plan.cilium_namespace)
            holder = ((lease or {}).get("spec") or {}).get("holderIdentity")
            if holder and (eligible is None or holder in eligible):
                held += 1
        return f"{held}/{len(self.announced)}"

    def _before(self, stage: Stage) -> dict[str, dict[str, Any] | None]:
        out: dict[str, dict[str, Any] | None] = {}
        for action in stage.changes:
            t = action.target
            out[t.key] = self.twin.store.try_get(_group(t), t.kind, t.name, t.namespace)
        return out

    def _backup(self, stage: str) -> dict[str, Any] | None:
        store = StateStore(self.twin.kube, self.state_namespace)
        state = store.load()
        record = state.record(stage)
        if record is None or not record.backup_parts:
            return None
        return store.read_backup(record.backup_parts)

    # -- checks over a window --------------------------------------------------------------
    def _window_checks(self, row: StageReport, since: Mark, until: Mark, *, finished: bool,
                       ) -> None:
        where = f"{row.phase} {row.stage}"
        records = self.twin.records
        i1 = inv.ip_problems(records.status_writes(since, until), self.plan.expected_ips)
        if finished:
            i1 += inv.current_ip_problems(self.plan.expected_ips, self.current_ips())
        i2 = inv.doubled_problems(records.announcement_changes(since, until), self.services)
        if finished:
            i2 += inv.silent_problems(records.answering(), self.answered, self.services)
        self._add(row, "I1", i1, where)
        self._add(row, "I2", i2, where)

    @staticmethod
    def _add(row: StageReport, check: str, problems: list[Problem], where: str) -> None:
        row.checks[check] = "failed" if problems else "ok"
        for problem in problems:
            row.problems.append(Problem(problem.check, problem.subject, problem.detail,
                                        problem.remedy, where))
            row.findings.append(f"{invariant_label(problem.check)}: {problem.subject}:"
                                f" {problem.detail}")

    def _measure(self, row: StageReport, client: TwinClient, first_request: int,
                 began: tuple[float, float]) -> list[Request]:
        requests = client.requests(first_request)
        row.requests = len(requests)
        row.write_requests = sum(1 for r in requests if r.is_write)
        row.twin_seconds = self.twin.now() - began[0]
        row.expected_seconds = expected_seconds(self.twin, self.twin.waited - began[1],
                                                requests)
        return requests

    # -- steps -----------------------------------------------------------------------------
    def apply_stage(self, phase: str, stage: Stage, client: TwinClient) -> StageReport:
        """Apply one stage and check it; the row says how it went."""
        row = StageReport(phase, stage.name, "applied")
        where = f"{phase} {stage.name}"
        self.reporter.event(f"{phase}: stage {stage.number} ({stage.name})")
        before = self._before(stage)
        since = self.twin.records.mark()
        first_request = client.request_count
        began = (self.twin.now(), self.twin.waited)
        finished = True
        try:
            result = apply_stage(client.kube, self.plan, stage.name, options=client.options(),
                                 reporter=self.reporter)
            row.outcome, row.writes = result.outcome, result.writes
        except MigrateError as error:
            finished = False
            row.outcome = "failed"
            problem = stage_problem(error, where)
            row.checks[problem.check] = "failed"
            row.problems.append(problem)
            row.findings.append(f"{problem.subject}: {problem.detail}")
        requests = self._measure(row, client, first_request, began)
        if not finished:
            row.writes = object_writes(requests)
        self.twin.settle(SETTLE)
        until = self.twin.records.mark()
        if stage.name in HANDOVER_STAGES:
            self.windows[phase] = (self.windows.get(phase, (since, until))[0], until)
        self._window_checks(row, since, until, finished=finished)
        row.checks.setdefault("I5", "ok" if finished else "-")
        if stage.changes:
            targets = [(_group(a.target), a.target.kind, a.target.namespace or "",
                        a.target.name) for a in stage.changes]
            problems = inv.backup_problems(
                stage.name,
                self.twin.records.first_write(since, "", "ConfigMap", self.state_namespace,
                                              f"lbmigrate-backup-{stage.name}-"),
                self.twin.records.first_change(since, targets),
                self._backup(stage.name), before)
            self._add(row, "I4", problems, where)
        if stage.name == "preflight":
            row.checks["I6"] = "ok"
        if stage.name == "preflight" and phase == "apply":
            row.findings.extend(f"{f.severity.value}: {f.obj}: {f.message}"
                                for f in self.plan.findings if f.severity.value != "INFO")
        row.leases = self.leases()
        self.rows.append(row)
        return row

    def apply_all(self, phase: str, client: TwinClient) -> bool:
        """Every stage in order; False at the first that fails (the rest are not tried)."""
        for stage in self.plan.stages:
            if self.apply_stage(phase, stage, client).outcome == "failed":
                return False
        return True

    def verify(self, phase: str) -> StageReport:
        """``migrate verify``'s API checks on the twin, as a row."""
        from migrate.verify.api import verify_api

        self.reporter.event(f"{phase}: verify")
        row = StageReport(phase, "verify", "passed")
        report = verify_api(self.twin.kube, self.plan, state_namespace=self.state_namespace)
        problems = [Problem(VERIFY_CHECKS.get(c.name, "verify"), c.subject, c.detail,
                            VERIFY_REMEDIES.get(c.name, inv.REPORT_IT), f"{phase} verify")
                    for c in report.failures]
        for check in ("I1", "I2"):
            row.checks[check] = "failed" if any(p.check == check for p in problems) else "ok"
        if problems:
            row.outcome = "failed"
        row.problems = problems
        row.findings = [f"{p.subject}: {p.detail}" for p in problems]
        row.leases = self.leases()
        self.rows.append(row)
        return row

    def roll_back(self, phase: str, client: TwinClient) -> StageReport:
        """``migrate rollback`` of every applied stage; then the start state must be back."""
        self.reporter.event(f"{phase}: every applied stage, newest first")
        row = StageReport(phase, "rollback", "rolled back")
        where = f"{phase} rollback"
        since = self.twin.records.mark()
        first_request = client.request_count
        began = (self.twin.now(), self.twin.waited)
        finished = True
        try:
            result = rollback(client.kube, self.plan, options=client.options(),
                              reporter=self.reporter)
            row.writes = len(result.steps)
            row.findings.append("undone: " + (", ".join(result.undone) or "nothing"))
        except MigrateError as error:
            finished = False
            row.outcome = "failed"
            problem = stage_problem(error, where)
            row.checks["I3"] = "failed"
            row.problems.append(problem)
            row.findings.append(f"{problem.subject}: {problem.detail}")
        self._measure(row, client, first_request, began)
        self.twin.settle(SETTLE)
        until = self.twin.records.mark()
        self._window_checks(row, since, until, finished=finished)
        if finished:
            problems = inv.rollback_problems(self.objects, self.snapshot_objects())
            if self.twin.store.try_get("", "ConfigMap", "lbmigrate-state",
                                       self.state_namespace) is not None:
                problems.append(Problem("I3", f"ConfigMap {self.state_namespace}/"
                                        "lbmigrate-state", "the migration state is left after"
                                        " a full rollback", inv.REPORT_IT))
            self._add(row, "I3", problems, where)
        row.leases = self.leases()
        self.rows.append(row)
        return row

    # -- the cutover -----------------------------------------------------------------------
    def cutover(self) -> list[IpCutover]:
        """Per IP handed over, who answered when through the first cutover (and the silence
        of the re-apply's)."""
        ips = set(self.answered) | {ip for key in self.announced
                                    for ip in self.plan.expected_ips.get(key, [])}
        out = self._cutover("apply", ips)
        later = {c.ip: c for c in self._cutover("re-apply", ips)}
        for item in out:
            if item.ip in later:
                item.reapply_silence = later[item.ip].silence
        return out

    def _cutover(self, phase: str, ips: set[str]) -> list[IpCutover]:
        window = self.windows.get(phase)
        if window is None:
            return []
        start, end = window
        records = self.twin.records
        return inv.cutover_of(records.announcement_changes(until=start),
                              records.announcement_changes(start, end), ips, start.time,
                              end.time, self.services)


VERIFY_CHECKS = {"service-ips": "I1", "one-announcer": "I2", "one-holder-per-ip": "I2",
                 "metallb-advertisements": "I2"}
VERIFY_REMEDIES = {
    "lease": "No eligible node holds the Service's lease: check that a Cilium agent runs on a"
             " node its policy selects, and that `enable-l2-announcements` is true.",
    "lbipam": "LB-IPAM does not hold the IP: check the translated pool covers it and selects"
              " the Service (`migrate plan` shows both).",
    "one-holder-per-ip": "Services sharing this IP elect their Cilium announcer one by one"
                         " (cilium/cilium#48419): give them one announcing node.",
}


def _group(target: Target) -> str:
    return target.api_version.rpartition("/")[0]


def run_main(twin: Twin, plan: Plan, reporter: Reporter) -> MainRun:
    """The whole main run (the module docstring)."""
    run = MainRun(twin, plan, reporter)
    operator = twin.client("operator")
    began = time.monotonic()
    applied = run.apply_all("apply", operator)
    if applied:
        run.verify("apply")
    rolled = run.roll_back("rollback", operator)
    if applied and rolled.outcome != "failed" and not rolled.problems:
        again = twin.client("operator-again")
        if run.apply_all("re-apply", again):
            run.verify("re-apply")
    reporter.event(f"rehearsal done in {time.monotonic() - began:.1f}s of wall time")
    return run
