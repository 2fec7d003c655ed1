"""The rehearsal's report as data: per stage what happened and which invariant held, per IP the
cutover, the chaos runs, and the verdict. ``RehearsalReport.to_json()`` is what ``-o json``
prints; ``migrate.rehearse.report`` renders the table and the HTML page from the same data.

Nothing here depends on wall time: two rehearsals of one snapshot with one seed on virtual
time give the same report.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

INVARIANTS = ("I1", "I2", "I3", "I4", "I5", "I6")
INVARIANT_NAMES = {
    "I1": "no IP moves",
    "I2": "one announcer",
    "I3": "exact rollback",
    "I4": "backup first",
    "I5": "no stale plan",
    "I6": "what is lost is said",
}
CheckResult = Literal["ok", "failed", "-"]


def invariant_label(check: str) -> str:
    """A check as a user reads it: ``I2 (one announcer)``; other checks as they are named."""
    name = INVARIANT_NAMES.get(check)
    return f"{check} ({name})" if name else check
Status = Literal["safe", "blocked", "unsafe", "inconclusive"]
"""``inconclusive``: problems seen by a twin that fell behind its real clock (they may be its
own, not the migration's)."""


@dataclass(frozen=True)
class Problem:
    """One thing that went wrong in the twin: which check, on which object, what, and what to
    do about it."""

    check: str
    """``I1``..``I6``, ``stage`` (a stage could not finish), ``verify`` or ``wire``."""
    subject: str
    detail: str
    remedy: str
    where: str = ""
    """The phase and stage it happened in (``apply l2-cutover``)."""

    def to_json(self) -> dict[str, Any]:
        return {"check": self.check, "object": self.subject, "detail": self.detail,
                "remedy": self.remedy, "where": self.where}


@dataclass
class StageReport:
    """One row of the report: a stage applied (or re-applied), the verify, or the rollback."""

    phase: str
    """``apply``, ``verify``, ``rollback`` or ``re-apply``."""
    stage: str
    outcome: str
    writes: int = 0
    """Objects the engine wrote (its own count; the rollback's undo steps)."""
    requests: int = 0
    """API requests the operator's client sent (reads, writes, the state and the lock)."""
    write_requests: int = 0
    twin_seconds: float = 0.0
    expected_seconds: float = 0.0
    checks: dict[str, CheckResult] = field(default_factory=dict)
    leases: str = "-"
    """Cilium L2 leases held by an eligible node / Services Cilium should announce."""
    findings: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": self.phase, "stage": self.stage, "outcome": self.outcome,
            "writes": self.writes, "requests": self.requests,
            "writeRequests": self.write_requests, "twinSeconds": round(self.twin_seconds, 3),
            "expectedSeconds": round(self.expected_seconds, 3),
            "invariants": {name: self.checks.get(name, "-") for name in INVARIANTS},
            "leases": self.leases, "findings": list(self.findings),
            "problems": [p.to_json() for p in self.problems],
        }


@dataclass(frozen=True)
class Answer:
    """From ``at`` (seconds since the cutover began) who answered an IP."""

    at: float
    metallb: tuple[str, ...]
    cilium: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"at": round(self.at, 3), "metallb": list(self.metallb),
                "cilium": list(self.cilium)}


@dataclass
class IpCutover:
    """One IP through the cutover: who answered when, how long nobody did, and whether two
    announcers ever did (``answers`` start with who answered as the cutover began)."""

    ip: str
    services: list[str]
    seconds: float
    """Length of the window the answers cover (the stage and the settle after it)."""
    answers: list[Answer] = field(default_factory=list)
    silence: float | None = None
    """Seconds between MetalLB's last answer and Cilium's first (None: not handed over)."""
    longest_silence: float = 0.0
    doubled: float = 0.0
    """Seconds during which two announcers answered."""
    two_announcers: bool = False
    """Whether two announcers ever answered, if only for an instant."""
    reapply_silence: float | None = None
    wire: dict[str, Any] | None = None
    """What the prober saw on the wire (``--wire``): rounds, silences, MACs."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ip": self.ip, "services": list(self.services), "seconds": round(self.seconds, 3),
            "answers": [a.to_json() for a in self.answers],
            "silence": None if self.silence is None else round(self.silence, 3),
            "longestSilence": round(self.longest_silence, 3),
            "doubledSeconds": round(self.doubled, 3),
            "twoAnnouncers": self.two_announcers,
            "reapplySilence": None if self.reapply_silence is None else round(
                self.reapply_silence, 3),
        }
        if self.wire is not None:
            out["wire"] = self.wire
        return out


@dataclass
class ChaosRun:
    """One run of ``--chaos``: the fault, where it hit, how the operator recovered, and
    whether the migration survived it (I1 throughout, an exact rollback at the end)."""

    index: int
    seed: int
    fault: str
    at: int
    """The operator's request (counted from 1) the fault hit."""
    request: str = ""
    """That request, e.g. ``PATCH services shop/web``."""
    during: str = ""
    """The operation it interrupted (``apply pin``, ``rollback``)."""
    recovery: str = ""
    survived: bool = False
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "seed": self.seed, "fault": self.fault, "at": self.at,
                "request": self.request, "during": self.during, "recovery": self.recovery,
                "survived": self.survived, "problems": list(self.problems)}


@dataclass
class Verdict:
    """Safe to run, or blocked by a finding, or the first thing that fails in the twin."""

    status: Status
    summary: str
    first: Problem | None = None

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "summary": self.summary,
                "first": self.first.to_json() if self.first else None}


@dataclass
class RehearsalReport:
    """Everything a rehearsal found."""

    source: str
    snapshot: str | None
    seed: int
    time: str
    """``virtual`` or ``real (time scale X)``."""
    timing: str
    """The lab's timing (``realistic``: every process with its own delays)."""
    cilium_version: str = ""
    canary: str | None = None
    plan_fingerprint: str = ""
    findings: list[dict[str, Any]] = field(default_factory=list)
    """The plan's findings (``Finding.to_dict``)."""
    fidelity: list[str] = field(default_factory=list)
    """Where the twin may differ from the cluster (documents not loaded, another plan)."""
    stages: list[StageReport] = field(default_factory=list)
    cutover: list[IpCutover] = field(default_factory=list)
    chaos: list[ChaosRun] = field(default_factory=list)
    chaos_replay: str = ""
    """The command that replays a chaos run (``{seed}`` stands for its seed)."""
    wire: dict[str, Any] | None = None
    behind: float | None = None
    """Seconds the twin's models ran behind their real clock, when that distorts what they
    model (see ``migrate.rehearse.BEHIND``); None: they kept up, or virtual time."""
    verdict: Verdict = field(default_factory=lambda: Verdict("safe", ""))
    assumptions: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[Problem]:
        """Every problem of every row, in the order they happened."""
        return [p for row in self.stages for p in row.problems]

    @property
    def chaos_survived(self) -> int:
        return sum(1 for run in self.chaos if run.survived)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source, "snapshot": self.snapshot, "seed": self.seed,
            "time": self.time, "timing": self.timing, "ciliumVersion": self.cilium_version,
            "canary": self.canary, "planFingerprint": self.plan_fingerprint,
            "findings": self.findings, "fidelity": list(self.fidelity),
            "stages": [row.to_json() for row in self.stages],
            "cutover": [ip.to_json() for ip in self.cutover],
            "verdict": self.verdict.to_json(), "assumptions": list(self.assumptions),
        }
        if self.chaos:
            out["chaos"] = {"runs": len(self.chaos), "survived": self.chaos_survived,
                            "replay": self.chaos_replay,
                            "results": [run.to_json() for run in self.chaos]}
        if self.wire is not None:
            out["wire"] = self.wire
        if self.behind is not None:
            out["behindSeconds"] = self.behind
        return out
