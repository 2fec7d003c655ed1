"""The invariants, checked on the twin's records (pure functions: data in, problems out).

I1 from the store's status writes (no write ever changed or emptied a planned Service's IPs),
I2 from the announcement record (never two announcers for an IP; every IP answered at the end
of a stage), I3 by comparing the objects the migration may touch before and after a rollback,
I4 from a stage's backup and the order of its requests, the cutover silence per IP from the
announcement record. ``Problem.remedy`` says what a user can do.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from migrate.plan.views import view
from migrate.rehearse.model import Answer, IpCutover, Problem
from migrate.rehearse.records import AnnouncementChange, StatusChange

Obj = dict[str, Any]

REPORT_IT = ("Do not migrate this cluster yet: keep the snapshot (--save-snapshot) and the seed"
             " and report it, so the rehearsal can be replayed.")

# ----------------------------------------------------------------------------- objects (I3)

WATCHED = (("", "Service"), ("apps", "Deployment"), ("apps", "DaemonSet"), ("", "ConfigMap"),
           ("", "Node"),
           ("metallb.io", "IPAddressPool"), ("metallb.io", "L2Advertisement"),
           ("metallb.io", "BGPAdvertisement"), ("metallb.io", "BGPPeer"),
           ("metallb.io", "Community"), ("metallb.io", "BFDProfile"),
           ("cilium.io", "CiliumLoadBalancerIPPool"),
           ("cilium.io", "CiliumL2AnnouncementPolicy"),
           ("cilium.io", "CiliumBGPClusterConfig"), ("cilium.io", "CiliumBGPPeerConfig"),
           ("cilium.io", "CiliumBGPAdvertisement"), ("cilium.io", "CiliumBGPNodeConfig"),
           ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"))
"""The kinds a migration may touch: what "the cluster as before" is made of."""
IGNORED_META = ("resourceVersion", "managedFields", "creationTimestamp", "uid", "generation")
"""What the server writes, not the user."""
SERVICE_DEFAULTS = ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy",
                    "internalTrafficPolicy", "sessionAffinity", "externalTrafficPolicy",
                    "allocateLoadBalancerNodePorts")
"""Fields the API server defaults on a Service's first write (a snapshot is loaded as is)."""
STATE_PREFIX = "lbmigrate-"


def comparable(obj: Obj) -> Obj:
    """An object without what the server and the controllers own: the part a rollback must
    give back exactly (conditions and Deployment and DaemonSet status are the
    controllers')."""
    out = copy.deepcopy(obj)
    for key in IGNORED_META:
        out["metadata"].pop(key, None)
    if out.get("kind") == "Service":
        spec = out.get("spec") or {}
        for key in SERVICE_DEFAULTS:
            spec.pop(key, None)
        for port in spec.get("ports") or []:
            port.pop("nodePort", None)
    status = out.get("status")
    if isinstance(status, dict):
        status.pop("conditions", None)
        if out.get("kind") in ("Deployment", "DaemonSet"):
            out.pop("status")
    return out


def object_key(obj: Obj) -> str:
    """``Kind namespace/name`` (``Kind name`` when cluster-scoped)."""
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta.get("name")
    return f"{obj.get('kind')} {where}"


def comparable_objects(objects: Iterable[Obj]) -> dict[str, Obj]:
    """Every object by key, made comparable; migrate's own state and backups left out."""
    out = {}
    for obj in objects:
        if obj.get("kind") == "ConfigMap" and str(obj["metadata"].get("name", "")).startswith(
                STATE_PREFIX):
            continue
        out[object_key(obj)] = comparable(obj)
    return out


def first_difference(before: Any, after: Any, path: str = "") -> str:
    """The path of the first field that differs (``metadata.labels.app``), ``""`` if none."""
    if isinstance(before, dict) and isinstance(after, dict):
        for key in sorted(set(before) | set(after), key=str):
            if key not in before or key not in after or before[key] != after[key]:
                deeper = first_difference(before.get(key), after.get(key),
                                          f"{path}.{key}" if path else str(key))
                return deeper
        return ""
    if isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
        for index, (left, right) in enumerate(zip(before, after, strict=True)):
            if left != right:
                return first_difference(left, right, f"{path}[{index}]")
        return ""
    return path if before != after else ""


def rollback_problems(before: Mapping[str, Obj], after: Mapping[str, Obj]) -> list[Problem]:
    """I3: every object back exactly, none left over, none missing."""
    problems = []
    remedy = ("Roll back by hand from the backups `migrate status` lists, then " + REPORT_IT[0]
              .lower() + REPORT_IT[1:])
    for key in sorted(set(before) - set(after)):
        problems.append(Problem("I3", key, "gone after the rollback", remedy))
    for key in sorted(set(after) - set(before)):
        problems.append(Problem("I3", key, "left behind by the rollback", remedy))
    for key in sorted(set(before) & set(after)):
        if before[key] != after[key]:
            field = first_difference(before[key], after[key])
            problems.append(Problem("I3", key, f"differs after the rollback at {field or 'its'}"
                                    " top level" if not field else
                                    f"differs after the rollback at {field}", remedy))
    return problems


# ----------------------------------------------------------------------------- I1

MANAGER_HINTS = {
    "cilium-operator-lb-ipam": "Cilium's LB-IPAM reassigned it: check that a translated pool"
                               " covers the IP and selects the Service (`migrate plan` shows"
                               " the pools and their selectors).",
    "metallb-controller": "MetalLB's controller reassigned it: it was running when it should"
                          " have been stopped, or started again without its pools.",
}


def ip_problems(writes: Sequence[StatusChange], expected: Mapping[str, Sequence[str]],
                ) -> list[Problem]:
    """I1: a status write that changed or emptied the IPs of a Service the plan keeps."""
    problems = []
    for write in writes:
        ips = expected.get(write.service)
        if ips is None or not write.before or sorted(write.after) == sorted(ips):
            continue
        hint = MANAGER_HINTS.get(write.manager, REPORT_IT)
        problems.append(Problem(
            "I1", f"Service {write.service}",
            f"{write.manager} changed its IPs from {', '.join(write.before)} to"
            f" {', '.join(write.after) or 'none'}", hint))
    return problems


def current_ip_problems(expected: Mapping[str, Sequence[str]],
                        current: Mapping[str, Sequence[str]]) -> list[Problem]:
    """I1 now: every Service of the plan has exactly its IPs."""
    problems = []
    for key, ips in sorted(expected.items()):
        now = current.get(key)
        if now is None:
            problems.append(Problem("I1", f"Service {key}", "is gone", REPORT_IT))
        elif sorted(now) != sorted(ips):
            problems.append(Problem("I1", f"Service {key}",
                                    f"has {', '.join(now) or 'no IP'} instead of"
                                    f" {', '.join(ips)}", REPORT_IT))
    return problems


# ----------------------------------------------------------------------------- I2

def _who(change: AnnouncementChange) -> str:
    parts = [f"MetalLB on {', '.join(change.metallb)}"] if change.metallb else []
    if change.cilium:
        parts.append(f"Cilium on {', '.join(change.cilium)}")
    return " and ".join(parts)


def doubled_problems(changes: Sequence[AnnouncementChange], services: Mapping[str, list[str]],
                     ) -> list[Problem]:
    """I2: a moment where an IP had two announcers (two nodes, or both stacks), once per IP."""
    problems = []
    seen: set[str] = set()
    for change in changes:
        if not change.doubled or change.ip in seen:
            continue
        seen.add(change.ip)
        shared = len(set(change.cilium)) > 1 and not change.metallb
        remedy = ("Services sharing this IP elect their Cilium announcer one by one, so two"
                  " nodes answer (cilium/cilium#48419): give them one announcing node"
                  " (a policy nodeSelector), or do not share the IP." if shared else
                  "Both stacks announced it at once: MetalLB must stop before Cilium starts"
                  " (break before make). " + REPORT_IT)
        problems.append(Problem(
            "I2", f"IP {change.ip}" + (f" ({', '.join(services.get(change.ip, []))})"
                                       if services.get(change.ip) else ""),
            f"answered by {_who(change)} at once", remedy))
    return problems


def silent_problems(answering: Mapping[str, AnnouncementChange], must_answer: Iterable[str],
                    services: Mapping[str, list[str]]) -> list[Problem]:
    """I2 at a stage's end: an IP that was announced before the migration and nobody answers."""
    return [Problem("I2", f"IP {ip}" + (f" ({', '.join(services[ip])})" if services.get(ip)
                                        else ""),
                    "answered by nobody at the end of the stage",
                    "Nothing announces it: check that a Cilium policy selects its Service and"
                    " a node with a Cilium agent (`migrate verify` names the lease), and that"
                    " the node's devices include the announcing interface.")
            for ip in sorted(set(must_answer) - set(answering))]


# ----------------------------------------------------------------------------- cutover

def ip_services(expected: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """IP → the Services that have it."""
    out: dict[str, list[str]] = {}
    for key, ips in sorted(expected.items()):
        for ip in ips:
            out.setdefault(ip, []).append(key)
    return out


def handover_silence(answers: Sequence[Answer]) -> float | None:
    """Seconds between MetalLB's last answer and Cilium's first (0.0 when they overlap, None
    when Cilium never answers after MetalLB did)."""
    first = next((i for i, a in enumerate(answers) if a.cilium), None)
    if first is None:
        return None
    if answers[first].metallb:
        return 0.0
    last = max((i for i in range(first) if answers[i].metallb), default=None)
    if last is None:
        return None
    return answers[first].at - answers[last + 1].at


def cutover_of(before: Sequence[AnnouncementChange], during: Sequence[AnnouncementChange],
               ips: Iterable[str], start: float, end: float,
               services: Mapping[str, list[str]]) -> list[IpCutover]:
    """Per IP, who answered from ``start`` to ``end`` (twin seconds; the answers' times are
    relative to ``start``): ``before`` is the record up to the window (its last change per IP
    is who answered as it began), ``during`` the changes inside it, in order (several can
    share one moment: on the instant lab a whole hand-over does)."""
    first: dict[str, AnnouncementChange] = {}
    for change in before:
        first[change.ip] = change
    out = []
    for ip in sorted(ips, key=_ip_order):
        at_start = first.get(ip)
        answers = [Answer(0.0, at_start.metallb if at_start else (),
                          at_start.cilium if at_start else ())]
        answers += [Answer(max(change.time - start, 0.0), change.metallb, change.cilium)
                    for change in during if change.ip == ip]
        cutover = IpCutover(ip, services.get(ip, []), end - start, answers)
        cutover.silence = handover_silence(answers)
        cutover.longest_silence, cutover.doubled = _spans(answers, end - start)
        cutover.two_announcers = any(
            len(set(a.metallb) | set(a.cilium)) > 1 or (a.metallb and a.cilium)
            for a in answers)
        out.append(cutover)
    return out


def _spans(answers: Sequence[Answer], length: float) -> tuple[float, float]:
    """(longest stretch nobody answered after somebody had, total time with two announcers)."""
    longest = doubled = 0.0
    answered_before = False
    for index, answer in enumerate(answers):
        until = answers[index + 1].at if index + 1 < len(answers) else length
        nodes = set(answer.metallb) | set(answer.cilium)
        if not nodes and answered_before:
            longest = max(longest, until - answer.at)
        if len(nodes) > 1 or (answer.metallb and answer.cilium):
            doubled += until - answer.at
        answered_before = answered_before or bool(nodes)
    return longest, doubled


def _ip_order(ip: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in ip.split("."))
    except ValueError:
        return (1 << 16,)


# ----------------------------------------------------------------------------- I4

def backup_problems(stage: str, backup_written: int | None, first_change: int | None,
                    backup: Obj | None, before: Mapping[str, Obj | None]) -> list[Problem]:
    """I4: the stage's backup was written (at resourceVersion ``backup_written``) before its
    first change to a migrated object (``first_change``), and it holds each target as it was
    before the stage (``before``: ``Kind namespace/name`` → the object, or None if absent)."""
    if first_change is None:
        return []
    if backup_written is None or backup_written > first_change:
        return [Problem("I4", f"stage {stage}", "an object was changed before the stage's"
                        " backup was recorded", REPORT_IT)]
    if backup is None:
        return [Problem("I4", f"stage {stage}", "no backup is recorded for the stage",
                        REPORT_IT)]
    problems = []
    for item in backup.get("objects") or []:
        target = item.get("target") or {}
        where = (f"{target.get('namespace')}/{target.get('name')}" if target.get("namespace")
                 else target.get("name"))
        key = f"{target.get('kind')} {where}"
        if key in before and view(item.get("object")) != view(before[key]):
            problems.append(Problem("I4", key, "its backup differs from what it was before"
                                    " the stage", REPORT_IT))
    return problems
