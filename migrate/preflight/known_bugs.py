"""Known Cilium and MetalLB bugs (``mappings/known-bugs.yaml``), matched to a cluster's versions.

The table is data: each entry names the component whose version decides (agent, operator,
controller, speaker), the affected version ranges, what of the cluster the bug needs (``when``)
and what to tell the user. ``check_known_bugs`` reports every entry that applies; entries whose
``reported_by`` names another check are reported there (``matching_bugs``). A component whose
version is unknown gets the bugs that may apply, at most as a WARNING (real-clusters.md §4).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cache

from migrate.errors import MigrateError
from migrate.guards import GUARDS
from migrate.preflight.context import OK, WARNING, Context, service_names
from migrate.preflight.inventory import Version, describe, parse_version, version_text
from migrate.preflight.report import CheckResult, CheckSeverity
from migrate.translate.mappings import load_table, mappings_dir

TABLE = "known-bugs"
CHECK = "known-bugs"
COMPONENTS = ("cilium-agent", "cilium-operator", "metallb-controller", "metallb-speaker")
REPORTERS = ("known-bugs", "external-traffic-policy", "translation")
_COMPARATOR = re.compile(r"^(>=|<=|==|>|<)\s*v?(\d+\.\d+\.\d+)$")
_FIELDS = ("id", "project", "issue", "url", "component", "affected", "when", "severity",
           "title", "happens", "tool", "remedy")


@dataclass(frozen=True)
class VersionRange:
    """Comparators that must all hold, e.g. ``>=1.19.0, <1.19.7``."""

    text: str
    bounds: tuple[tuple[str, Version], ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange:
        bounds = []
        for part in (p.strip() for p in text.split(",")):
            match = _COMPARATOR.match(part)
            version = parse_version(match[2]) if match else None
            if match is None or version is None:
                raise ValueError(f"{part!r} is not a comparator like >=1.19.0")
            bounds.append((match[1], version))
        return cls(text, tuple(bounds))

    def contains(self, version: Version) -> bool:
        checks: dict[str, Callable[[Version, Version], bool]] = {
            ">=": lambda v, b: v >= b, ">": lambda v, b: v > b, "<=": lambda v, b: v <= b,
            "<": lambda v, b: v < b, "==": lambda v, b: v == b,
        }
        return all(checks[op](version, bound) for op, bound in self.bounds)

    def interval(self) -> tuple[Version, Version]:
        """The inclusive [low, high] of versions the range holds (patches up to 10**6)."""
        low, high = (0, 0, 0), (10**6, 10**6, 10**6)
        for op, bound in self.bounds:
            if op in (">=", "=="):
                low = max(low, bound)
            if op == ">":
                low = max(low, (bound[0], bound[1], bound[2] + 1))
            if op in ("<=", "=="):
                high = min(high, bound)
            if op == "<":
                high = min(high, _previous(bound))
        return low, high


def _previous(version: Version) -> Version:
    major, minor, patch = version
    if patch:
        return major, minor, patch - 1
    if minor:
        return major, minor - 1, 10**6
    return major - 1, 10**6, 10**6


@dataclass(frozen=True)
class KnownBug:
    """One entry of the table."""

    id: str
    project: str
    issue: int
    url: str
    component: str
    affected: tuple[VersionRange, ...]
    fixed_in: str | None
    when: str
    severity: CheckSeverity
    reported_by: str
    title: str
    happens: str
    tool: str
    remedy: str

    @property
    def ref(self) -> str:
        """``cilium/cilium#45068``: how upstream issues are cited."""
        return f"{self.project}/{self.project}#{self.issue}"

    def affects(self, version: Version, exact: bool = True) -> bool | None:
        """Whether the bug is in that version; with only the minor known (``exact`` False),
        None when some patch releases of it are affected and others not."""
        if exact:
            return any(r.contains(version) for r in self.affected)
        first, last = (version[0], version[1], 0), (version[0], version[1], 10**6)
        touched = False
        for low, high in (r.interval() for r in self.affected):
            if low <= first and last <= high:
                return True
            touched = touched or (low <= last and first <= high)
        return None if touched else False

    def fix_text(self) -> str:
        return f"fixed in {self.fixed_in}" if self.fixed_in else "not fixed yet"


def _entry(raw: object, index: int, where: str) -> KnownBug:
    if not isinstance(raw, dict):
        raise MigrateError(f"{where}: bugs[{index}] is not a mapping")
    missing = [key for key in _FIELDS if raw.get(key) in (None, "", [])]
    if missing:
        raise MigrateError(f"{where}: bugs[{index}] lacks {', '.join(missing)}")
    name = f"{where}: {raw['id']}"
    if raw["component"] not in COMPONENTS:
        raise MigrateError(f"{name}: component must be one of {', '.join(COMPONENTS)}")
    if raw["when"] not in CONDITIONS:
        raise MigrateError(f"{name}: when must be one of {', '.join(sorted(CONDITIONS))}")
    reported_by = str(raw.get("reported_by") or CHECK)
    if reported_by not in REPORTERS:
        raise MigrateError(f"{name}: reported_by must be one of {', '.join(REPORTERS)}")
    try:
        severity = CheckSeverity(str(raw["severity"]))
        affected = tuple(VersionRange.parse(str(text)) for text in raw["affected"])
    except ValueError as exc:
        raise MigrateError(f"{name}: {exc}") from None
    if severity is OK:
        raise MigrateError(f"{name}: severity must be ERROR, WARNING or INFO")
    fixed_in = raw.get("fixed_in")
    return KnownBug(
        id=str(raw["id"]), project=str(raw["project"]), issue=int(raw["issue"]),
        url=str(raw["url"]), component=str(raw["component"]), affected=affected,
        fixed_in=str(fixed_in) if fixed_in else None, when=str(raw["when"]),
        severity=severity, reported_by=reported_by, title=str(raw["title"]).strip(),
        happens=" ".join(str(raw["happens"]).split()), tool=" ".join(str(raw["tool"]).split()),
        remedy=" ".join(str(raw["remedy"]).split()),
    )


@cache
def known_bugs() -> tuple[KnownBug, ...]:
    """Every entry of ``mappings/known-bugs.yaml``, validated (MigrateError names the entry)."""
    where = str(mappings_dir() / f"{TABLE}.yaml")
    raw = load_table(TABLE).get("bugs")
    if not isinstance(raw, list):
        raise MigrateError(f"{where}: `bugs` must be a list")
    bugs = tuple(_entry(item, index, where) for index, item in enumerate(raw))
    ids = [bug.id for bug in bugs]
    if len(set(ids)) != len(ids):
        raise MigrateError(f"{where}: duplicate ids")
    return bugs


# -- what of the cluster each bug needs ------------------------------------------------------
def _always(ctx: Context) -> tuple[bool, str]:
    return True, ""


def _l2_announced(ctx: Context) -> tuple[bool, str]:
    return bool(ctx.announced), ""


def _shared_ips(ctx: Context) -> dict[str, list[str]]:
    by_ip: dict[str, list[str]] = defaultdict(list)
    for service in ctx.announced:
        for ip in service.ingress_ips:
            by_ip[ip].append(service.key)
    return {ip: sorted(keys) for ip, keys in sorted(by_ip.items()) if len(keys) > 1}


def _shared_ip(ctx: Context) -> tuple[bool, str]:
    shared = _shared_ips(ctx)
    return bool(shared), "shared: " + "; ".join(
        f"{ip} ({', '.join(keys)})" for ip, keys in list(shared.items())[:5])


def _sharing_key_several_ips(ctx: Context) -> tuple[bool, str]:
    by_key: dict[str, set[str]] = defaultdict(set)
    for service in ctx.served:
        key = service.metallb("allow-shared-ip")
        if key:
            by_key[key].update(service.ingress_ips)
    several = {key: sorted(ips) for key, ips in sorted(by_key.items()) if len(ips) > 1}
    return bool(several), "sharing key(s) on several IPs: " + "; ".join(
        f"{key} ({', '.join(ips)})" for key, ips in several.items())


def _etp_local(ctx: Context) -> tuple[bool, str]:
    local = [s for s in ctx.announced if s.external_traffic_policy == "Local"]
    return bool(local), f"externalTrafficPolicy Local: {service_names(local)}"


def pending_services(ctx: Context) -> list[str]:
    """``ns/name`` of the LoadBalancer Services MetalLB serves that have no IP now."""
    return sorted(s.key for s in ctx.served if not s.ingress_ips)


def _metallb_restart(ctx: Context) -> tuple[bool, str]:
    pending = pending_services(ctx)
    if pending:
        return True, f"pending now: {', '.join(pending[:8])}" + (
            f" and {len(pending) - 8} more" if len(pending) > 8 else "")
    return True, ("no Service is pending now, but one created before a rollback would be")


CONDITIONS: dict[str, Callable[[Context], tuple[bool, str]]] = {
    "always": _always,
    "l2-announced": _l2_announced,
    "shared-ip": _shared_ip,
    "sharing-key-several-ips": _sharing_key_several_ips,
    "etp-local": _etp_local,
    "metallb-restart": _metallb_restart,
}


# -- versions ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class ComponentVersion:
    """The version a component runs as far as the input tells, and where it was read."""

    version: Version | None
    exact: bool
    source: str

    @property
    def text(self) -> str:
        if self.version is None:
            return "unknown"
        return version_text(self.version) if self.exact else f"{self.version[0]}.{self.version[1]}"


def component_versions(ctx: Context) -> dict[str, ComponentVersion]:
    """The version of each component; a component without a version tag takes the other
    component of its project (released together), then ``--cilium-version``."""
    cilium = ctx.cilium
    requested = (ComponentVersion(ctx.version, ctx.version_exact,
                                  f"--cilium-version {ctx.requested}")
                 if ctx.requested and ctx.version else None)
    agent = (ComponentVersion(cilium.version, True, cilium.version_source or "")
             if cilium.version else None)
    operator = (ComponentVersion(cilium.operator_version, True,
                                 cilium.operator_version_source or "")
                if cilium.operator_version else None)
    found = ctx.metallb.component_versions
    controller = (ComponentVersion(found["controller"][0], True, found["controller"][1])
                  if "controller" in found else None)
    speaker = (ComponentVersion(found["speaker"][0], True, found["speaker"][1])
               if "speaker" in found else None)
    unknown = ComponentVersion(None, False, "no version tag in the input")
    return {
        "cilium-agent": agent or operator or requested or unknown,
        "cilium-operator": operator or agent or requested or unknown,
        "metallb-controller": controller or speaker or unknown,
        "metallb-speaker": speaker or controller or unknown,
    }


@dataclass(frozen=True)
class Match:
    """A bug that applies to this cluster (``certain`` False: its version is unknown)."""

    bug: KnownBug
    certain: bool
    detail: str
    version: ComponentVersion

    @property
    def severity(self) -> CheckSeverity:
        if self.certain or self.bug.severity is not CheckSeverity.ERROR:
            return self.bug.severity
        return WARNING

    def text(self, detail: bool = True) -> str:
        """What the user reads about it, citing the upstream issue (``detail``: with what of
        the cluster it needs, e.g. the Services it concerns)."""
        maybe = "" if self.certain else (
            "may apply (version unknown): " if self.version.version is None
            else "may apply (patch release unknown): ")
        detail_text = f" ({self.detail})" if self.detail and detail else ""
        return (f"{maybe}{self.bug.title}{detail_text} ({self.bug.ref}, {self.bug.fix_text()}):"
                f" {self.bug.happens} {self.bug.tool}")


def matching_bugs(ctx: Context, reported_by: str = CHECK,
                  bugs: Sequence[KnownBug] | None = None) -> list[Match]:
    """The bugs of ``reported_by`` that apply to the cluster, worst first, then in table
    order."""
    versions = component_versions(ctx)
    matches = []
    for bug in known_bugs() if bugs is None else bugs:
        if bug.reported_by != reported_by:
            continue
        holds, detail = CONDITIONS[bug.when](ctx)
        if not holds:
            continue
        running = versions[bug.component]
        if running.version is None:
            matches.append(Match(bug, False, detail, running))
            continue
        affected = bug.affects(running.version, running.exact)
        if affected is not False:
            matches.append(Match(bug, affected is True, detail, running))
    return sorted(matches, key=lambda match: match.severity.rank)


def _versions_text(versions: dict[str, ComponentVersion]) -> str:
    def pair(project: str, first: str, second: str) -> str:
        a, b = versions[f"{project.lower()}-{first}"], versions[f"{project.lower()}-{second}"]
        if a.text == b.text:
            return f"{project} {a.text}"
        return f"{project} {first} {a.text}, {second} {b.text}"

    return (f"{pair('Cilium', 'agent', 'operator')},"
            f" {pair('MetalLB', 'controller', 'speaker')}")


def _workload(ctx: Context, component: str) -> str | None:
    body = {
        "cilium-agent": ctx.cilium.agent, "cilium-operator": ctx.cilium.operator,
        "metallb-controller": ctx.metallb.controller, "metallb-speaker": ctx.metallb.speaker,
    }[component]
    return describe(body) if body else None


def check_known_bugs(ctx: Context) -> CheckResult:
    """The known bugs of ``mappings/known-bugs.yaml`` that apply to the versions the cluster
    runs and to what it uses (real-clusters.md §4)."""
    versions = _versions_text(component_versions(ctx))
    matches = matching_bugs(ctx) if GUARDS.known_bugs else []
    if not matches:
        return CheckResult(CHECK, OK, f"{versions}: no known bug of these versions applies to"
                           " this cluster.")
    severity = min((m.severity for m in matches), key=lambda s: s.rank)
    lines = [f"{m.severity.value} {m.text()}" for m in matches]
    found = f"{versions}: {len(matches)} known bug(s) apply. " + " ".join(lines)
    remedies = list(dict.fromkeys(m.bug.remedy for m in matches))
    if any(not m.certain for m in matches):
        remedies.append("Tell the versions: check the image tags of the agent, operator,"
                        " controller and speaker, or pass --cilium-version X.Y.Z.")
    worst = next(m for m in matches if m.severity is severity)
    return CheckResult(CHECK, severity, found, " ".join(remedies),
                       obj=_workload(ctx, worst.bug.component))
