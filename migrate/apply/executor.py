"""Carry out one stage of a saved plan: refuse a stale plan, lock, back up, write, wait, check.

The order inside ``apply_stage`` is the contract of design §1: I5 (the objects are as the plan
saw them) before anything; I4 (backups recorded) before the first write; I1 (every Service
keeps its IPs) after every wait and at the end.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from migrate.apply.bgp_handover import WAIT_KINDS as BGP_WAIT_KINDS
from migrate.apply.bgp_handover import wait_check as bgp_wait_check
from migrate.apply.cilium_leases import drop_held_leases
from migrate.apply.lock import held_lock
from migrate.apply.state import (
    MigrationState,
    StageRecord,
    StateStore,
    now_rfc3339,
    operator_identity,
)
from migrate.apply.waits import (
    Reporter,
    WaitOptions,
    check_i1,
    ip_violations,
    ipam_check,
    lease_check,
    metallb_released_check,
    pods_gone_check,
    replicas_check,
    wait_arp_silent,
    wait_until,
)
from migrate.errors import BlockedError, MigrateError
from migrate.guards import GUARDS
from migrate.kube import Kube
from migrate.plan.model import Action, Plan, Stage, Target
from migrate.plan.views import backup_object, ingress_ips, view

Obj = dict[str, Any]
DEFAULT_STATE_NAMESPACE = "kube-system"


@dataclass
class ApplyOptions:
    """Knobs of an apply or a rollback."""

    dry_run: bool = False
    state_namespace: str = DEFAULT_STATE_NAMESPACE
    waits: WaitOptions = field(default_factory=WaitOptions)
    lock_duration: int = 30
    concurrency: int = 8
    """How many independent writes (Service patches) may be in flight at once."""
    arp_interface: str | None = None
    """Where to check on the wire, too, that MetalLB's speakers went quiet before Cilium
    starts announcing (and the other way round in a rollback); None: the API only."""


@dataclass
class StageResult:
    """What happened to a stage."""

    stage: str
    outcome: str  # applied | already-applied | dry-run
    writes: int = 0
    notes: list[str] = field(default_factory=list)


def _get(kube: Kube, action: Action) -> Obj | None:
    t = action.target
    return kube.try_get(t.api_version, t.kind, t.name, t.namespace)


def prefetch(kube: Kube, actions: list[Action]) -> dict[str, Obj | None]:
    """Every Service, and the current object of every action's target, keyed by target key.

    Services come from one paginated LIST whatever the stage touches: I5 needs every
    Service's IPs anyway, and a stage may patch thousands of them. The few other targets are
    read one by one.
    """
    out: dict[str, Obj | None] = {
        Target.of(service).key: service for service in kube.iter_list("v1", "Service")}
    for action in actions:
        target = action.target
        if action.verb == "wait" or target.key in out:
            continue
        out[target.key] = None if target.kind == "Service" else kube.try_get(
            target.api_version, target.kind, target.name, target.namespace)
    return out


def _load_balancer_ips(objects: dict[str, Obj | None]) -> dict[str, list[str]]:
    """namespace/name → ingress IPs of the LoadBalancer Services among prefetched objects."""
    return {
        f"{obj['metadata'].get('namespace')}/{obj['metadata']['name']}": ingress_ips(obj)
        for obj in objects.values()
        if obj is not None and obj.get("kind") == "Service"
        and (obj.get("spec") or {}).get("type") == "LoadBalancer"
    }


def stale_objects(kube: Kube, plan: Plan, stage: Stage, *, resuming: bool,
                  current_objects: dict[str, Obj | None] | None = None) -> list[str]:
    """I5: what differs from what the plan saw (empty when the stage may run).

    ``current_objects``: what ``prefetch`` returned for this stage (read here when None).
    """
    objects = current_objects if current_objects is not None else prefetch(kube, stage.actions)
    problems: list[str] = []
    expected = plan.expected_ips
    current = _load_balancer_ips(objects)
    problems.extend(ip_violations(expected, current))
    known = set(plan.context.get("services") or expected)
    for key in sorted(set(current) - known):
        if current[key] or stage.number <= _ipam_stage_number(plan):
            problems.append(f"Service {key} appeared after planning")
    seen: set[str] = set()
    # What a resumed stage may find: the result of any of its actions on a target (a Node the
    # BGP hand-over labels twice may be at either step).
    results: dict[str, list[Obj | None]] = {}
    for action in stage.actions:
        if action.verb != "wait":
            results.setdefault(action.target.key, []).append(
                None if action.verb == "delete" else action.after)
    for action in stage.actions:
        key = action.target.key
        if action.verb == "wait" or key in seen:
            continue
        seen.add(key)
        now = view(objects.get(key))
        if action.verb == "create":
            if now is not None and now != action.after:
                problems.append(f"{key} already exists with another content")
            continue
        now = _without_an_ip_from_lbipam(plan, stage, action, now)
        if now == action.before:
            continue
        if resuming and now in results[key]:
            continue
        problems.append(f"{key} changed since the plan was made")
    return problems


def _without_an_ip_from_lbipam(plan: Plan, stage: Stage, action: Action,
                               now: Obj | None) -> Obj | None:
    """``now`` without its IPs when the plan saw the Service pending (no IP) and the handover
    is done: LB-IPAM then gives every LoadBalancer Service a pool selects an IP, pending ones
    included (cilium/cilium operator/pkg/lbipam/lbipam.go), which is no reason to refuse the
    later stages (I1 covers the Services that had IPs)."""
    before = action.before
    if (now is None or before is None or action.target.kind != "Service" or before.get("ips")
            or not now.get("ips") or stage.number <= _ipam_stage_number(plan)):
        return now
    return {**now, "ips": []}


def _ipam_stage_number(plan: Plan) -> int:
    """The number of ipam-handover (until LB-IPAM owns the IPs, a new Service is a risk)."""
    return next((s.number for s in plan.stages if s.name == "ipam-handover"), 3)


def _backup_payload(stage: Stage, current: dict[str, Obj | None]) -> Obj:
    objects = []
    seen: set[str] = set()
    for action in stage.actions:
        if action.verb == "wait" or action.target.key in seen:
            continue
        seen.add(action.target.key)
        objects.append({"target": action.target.to_dict(),
                        "object": backup_object(current[action.target.key])})
    return {"stage": stage.name, "takenAt": now_rfc3339(), "objects": objects}


def run_action(kube: Kube, plan: Plan, action: Action, *, dry_run: bool,
               waits: WaitOptions, reporter: Reporter, known: Obj | None = None,
               arp_interface: str | None = None) -> bool:
    """Carry out one action; True when it wrote something. Idempotent on a re-run.

    ``known``: the target as just read (for independent Service patches), else it is read.
    ``arp_interface``: also wait on the wire where a wait is about who answers ARP.
    """
    t = action.target
    if action.verb == "wait":
        if dry_run:
            return False
        spec = action.wait or {}
        timeout = float(spec.get("timeout", 120))
        kind = spec.get("for")
        if kind == "replicas":
            check = replicas_check(kube, t.to_dict(), int(spec.get("replicas", 0)))
        elif kind == "pods-gone":
            check = pods_gone_check(kube, t.to_dict())
        elif kind == "ipam":
            check = ipam_check(kube, plan)
        elif kind == "leases":
            check = lease_check(kube, plan, spec.get("services"))
        elif kind == "metallb-released":
            services = list(spec.get("services") or [])
            check = metallb_released_check(kube, plan, services,
                                           settle=float(spec.get("settle") or 0), options=waits)
        elif kind in BGP_WAIT_KINDS:
            check = bgp_wait_check(kube, plan, spec, waits)
        else:
            raise BlockedError(f"the plan has a wait this version does not know: {kind}")
        wait_until(check, action.description, timeout, waits, reporter)
        if kind == "metallb-released" and arp_interface and GUARDS.arp_silence:
            wait_arp_silent(arp_interface, plan, services, timeout, waits, reporter)
        if kind == "metallb-released":
            # An interrupted rollback may have left the leases it held: Cilium could not
            # announce these Services until they expire.
            for name in drop_held_leases(kube, plan, services):
                reporter.event(f"delete Lease {plan.cilium_namespace}/{name}: left held by an"
                               " interrupted rollback")
        check_i1(kube, plan)
        return False
    current = known if known is not None else _get(kube, action)
    if action.verb == "create":
        if current is not None:
            return False
        assert action.body is not None
        kube.create(action.body, dry_run=dry_run)
    elif action.verb == "delete":
        if current is None:
            return False
        kube.delete(t.api_version, t.kind, t.name, t.namespace, dry_run=dry_run)
    elif action.verb == "patch":
        if view(current) == action.after:
            return False
        kube.patch(t.api_version, t.kind, t.name, action.patch, namespace=t.namespace,
                   dry_run=dry_run)
    elif action.verb == "scale":
        replicas = int(action.replicas or 0)
        if current is not None and (current.get("spec") or {}).get("replicas") == replicas:
            return False
        assert t.namespace is not None
        kube.scale(t.api_version, t.kind, t.name, t.namespace, replicas, dry_run=dry_run)
    else:
        raise BlockedError(f"the plan has an action this version does not know: {action.verb}")
    reporter.event(f"{'(dry run) ' if dry_run else ''}{action.verb} {t.key}: "
                   f"{action.description}")
    return True


def _independent(action: Action) -> bool:
    """Writes that may run side by side: patches of distinct Services."""
    return action.verb == "patch" and action.target.kind == "Service"


def run_actions(kube: Kube, plan: Plan, actions: list[Action], *, options: ApplyOptions,
                reporter: Reporter, known: dict[str, Obj | None] | None = None,
                guard: Callable[[], None] = lambda: None) -> int:
    """Run actions in order; runs of independent Service patches go ``concurrency`` at a time.

    The first error stops the stage (outstanding writes finish first, so the state on the
    server is one the next run can resume from). ``known`` holds objects read at the start of
    the stage, used for the independent patches (nothing else writes those Services).
    ``guard`` runs before each write (or batch of writes): it raises when the lock was lost.
    """
    known = known or {}
    writes = 0
    index = 0
    while index < len(actions):
        end = index
        while end < len(actions) and _independent(actions[end]):
            end += 1
        batch = actions[index:end]
        guard()
        if len(batch) > 1 and options.concurrency > 1:
            with ThreadPoolExecutor(max_workers=options.concurrency) as pool:
                futures = [pool.submit(run_action, kube, plan, action,
                                       dry_run=options.dry_run, waits=options.waits,
                                       reporter=reporter, known=known.get(action.target.key))
                           for action in batch]
                results = [future.exception() or future.result() for future in futures]
            errors = [r for r in results if isinstance(r, BaseException)]
            if errors:
                raise errors[0]
            writes += sum(1 for r in results if r is True)
            index = end
            continue
        writes += run_action(kube, plan, actions[index], dry_run=options.dry_run,
                             waits=options.waits, reporter=reporter,
                             arp_interface=options.arp_interface)
        index += 1
    return writes


def stopped_half_way(stage: str) -> str:
    """What a user can do about a stage that stopped after some of its writes."""
    text = (f"Stage {stage} stopped part-way. Either run `migrate apply --stage {stage}` again"
            " to finish it (writes already done are skipped), or `migrate rollback` to undo it"
            " from the backup taken before its first write.")
    if stage == "ipam-handover":
        text += (" Cilium's operator may be left stopped on purpose: started with only some of"
                 " the pools, LB-IPAM would strip the IPs the missing pools cover.")
    return text


def _check_order(plan: Plan, stage: Stage, state: MigrationState) -> None:
    missing = []
    for earlier in plan.stages:
        if not 0 < earlier.number < stage.number or state.applied(earlier.name):
            continue
        record = state.record(earlier.name)
        how = {"in-progress": " (stopped part-way)", "rolling-back": " (half rolled back)"}
        missing.append(earlier.name + (how.get(record.status, "") if record else ""))
    if missing:
        raise BlockedError(
            f"stage {stage.name} needs the earlier stage(s) applied first: {', '.join(missing)}"
        )


def apply_stage(kube: Kube, plan: Plan, selector: str | int, *,
                options: ApplyOptions | None = None,
                reporter: Reporter | None = None) -> StageResult:
    """Apply one stage of a plan to the cluster (see the module docstring for the order)."""
    from migrate.apply.waits import SilentReporter

    options = options or ApplyOptions()
    reporter = reporter or SilentReporter()
    stage = plan.stage(selector)
    if plan.blocked:
        errors = [f"{f.obj}: {f.message}" for f in plan.findings if f.severity.value == "ERROR"]
        raise BlockedError("the plan has ERROR findings and cannot be applied: "
                           + "; ".join(errors))
    store = StateStore(kube, options.state_namespace)
    store.load()  # a state someone edited or cut short stops here, before the lock is taken
    with held_lock(kube, options.state_namespace, enabled=not options.dry_run,
                   duration=options.lock_duration) as guard:
        return _apply_locked(kube, plan, stage, store, options, reporter, guard)


def _apply_locked(kube: Kube, plan: Plan, stage: Stage, store: StateStore,
                  options: ApplyOptions, reporter: Reporter,
                  guard: Callable[[], None]) -> StageResult:
    from migrate.apply.rollback import restore_webhook_bypass

    state = store.load()
    if state.webhook_bypass and not options.dry_run:
        restore_webhook_bypass(kube, store, state, reporter)
    if state.plan_digest and state.plan_digest != plan.digest() and state.stages:
        raise BlockedError(
            "this cluster is being migrated with another plan (recorded digest"
            f" {state.plan_digest}); use that plan, or roll back first"
        )
    record = state.record(stage.name)
    if record is not None and record.status == "applied":
        return StageResult(stage.name, "already-applied",
                           notes=[f"applied {record.applied_at} by {record.started_by}"])
    _check_order(plan, stage, state)
    resuming = record is not None
    current = prefetch(kube, stage.actions)
    problems = stale_objects(kube, plan, stage, resuming=resuming, current_objects=current)
    if problems:
        raise BlockedError(
            "the plan is stale (the cluster changed after it was made); run migrate plan"
            " again:\n  - " + "\n  - ".join(problems)
        )
    if options.dry_run:
        writes = run_actions(kube, plan, stage.actions, options=options, reporter=reporter,
                             known=current)
        return StageResult(stage.name, "dry-run", writes=writes)
    if record is None:
        if state.plan_digest != plan.digest() or not state.plan_parts:
            state.plan_parts = store.write_plan(plan.to_dict())
        parts = store.write_backup(stage.name, _backup_payload(stage, current))
        record = StageRecord(stage.name, "in-progress", now_rfc3339(),
                             operator_identity(), backup_parts=parts)
        state.stages.append(record)
        state.plan_digest = plan.digest()
        state.plan_fingerprint = plan.fingerprint
        state.history.append({"at": record.started_at, "by": record.started_by,
                              "event": f"started {stage.name}"})
        store.save(state)
    try:
        writes = run_actions(kube, plan, stage.actions, options=options, reporter=reporter,
                             known=current, guard=guard)
        check_i1(kube, plan)
    except MigrateError as error:
        error.add_note(stopped_half_way(stage.name))
        raise
    record.status = "applied"
    record.applied_at = now_rfc3339()
    state.history.append({"at": record.applied_at, "by": operator_identity(),
                          "event": f"applied {stage.name}"})
    store.save(state)
    return StageResult(stage.name, "applied", writes=writes)
