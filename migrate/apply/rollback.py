"""Undo applied stages from the recorded backups, newest first, keeping I1 and I2.

The three traps of design §2, and how each undo avoids them:

* Deleting Cilium pools while LB-IPAM runs clears the IPs of the Services they held [C1.4].
  Undo of ``ipam-handover`` therefore stops Cilium's operator first, deletes the pools, and
  starts it again: with no pool LB-IPAM stays dormant and touches no Service [C1.1]. Then the
  ``cilium.io/IPAMRequestSatisfied`` condition it left on the Services is removed.
* Creating or updating ``metallb.io`` objects needs MetalLB's webhook, which its stopped
  controller does not serve [M8]. Undo of ``decommission`` and ``l2-cutover`` recreates MetalLB
  objects with the webhooks' failurePolicy set to Ignore, recorded in the state first and
  restored exactly afterwards, even on error (and by the next run if this one dies).
* A MetalLB controller that starts with no pools clears every Service's IP [M2]. Its pools are
  back (undo of ``decommission`` runs before undo of ``freeze-metallb``, newest first) before
  undo of ``freeze-metallb`` starts it; it then re-adopts the IPs in the status [M6], which the
  pins of stage 1 (still present at that point) also request.

Undo of ``l2-cutover`` (and of ``l2-canary``, its first part for one pool) silences Cilium
before recreating the L2Advertisements: break before make again, so there are never two
announcers (I2). Deleting the policies alone would let an agent that has not seen the deletion
take the lease its holder just released (``migrate/apply/cilium_leases.py``), so the rollback
holds the leases itself first, and lets them go once MetalLB is back. Undo of ``bgp-handover``
goes back node by node, Cilium stopping before MetalLB peers again, and undo of
``bgp-prepare`` restores the BGPPeers' node selectors once MetalLB's controller (and its
webhook) runs again (``migrate/apply/bgp_handover.py``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from migrate.apply.bgp_handover import undo_handover, undo_prepare
from migrate.apply.cilium_leases import HOLDER, drop_held_leases, hold_check, renew_window
from migrate.apply.executor import ApplyOptions
from migrate.apply.lock import held_lock
from migrate.apply.state import (
    MigrationState,
    StageRecord,
    StateStore,
    now_rfc3339,
    operator_identity,
)
from migrate.apply.waits import (
    SATISFIED,
    Reporter,
    SilentReporter,
    check_i1,
    daemonset_joined_check,
    replicas_check,
    wait_arp_silent,
    wait_until,
)
from migrate.errors import BlockedError, MigrateError
from migrate.guards import GUARDS
from migrate.kube import Kube
from migrate.plan.build import CILIUM_RELEASE_SETTLE_SECONDS, MEMBERLIST_SETTLE_SECONDS
from migrate.plan.model import Plan, Target
from migrate.plan.views import creatable

Obj = dict[str, Any]
ROLLING_BACK = "rolling-back"
AGENT_SETTLE_SECONDS = 5.0
"""After Cilium's policies are deleted, the time every agent has to see it before the leases
the rollback holds go (informer events reach the agents within a second or two)."""


@dataclass
class RollbackResult:
    """Which stages were undone."""

    undone: list[str] = field(default_factory=list)
    dry_run: bool = False
    steps: list[str] = field(default_factory=list)


def _objects(backup: Obj) -> list[tuple[Target, Obj | None]]:
    return [(Target.from_dict(item["target"]), item.get("object"))
            for item in backup.get("objects") or []]


def _merge_patch_to(want: Obj, have: Obj) -> Obj:
    """The merge patch that turns the flat map ``have`` into ``want`` (null removes a key)."""
    change: Obj = {k: v for k, v in want.items() if have.get(k) != v}
    change.update({k: None for k in have if k not in want})
    return change


def restore_webhook_bypass(kube: Kube, store: StateStore, state: MigrationState,
                           reporter: Reporter) -> None:
    """Put MetalLB's webhook configuration back exactly as recorded before a bypass."""
    original = state.webhook_bypass
    if not original:
        return
    name = original["metadata"]["name"]
    current = kube.try_get("admissionregistration.k8s.io/v1",
                           "ValidatingWebhookConfiguration", name)
    if current is not None:
        body = creatable(original)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        kube.replace(body)
    reporter.event(f"restored the webhooks of ValidatingWebhookConfiguration {name}")
    state.webhook_bypass = None
    store.save(state)


@contextmanager
def webhook_bypass(kube: Kube, store: StateStore, state: MigrationState, name: str | None,
                   reporter: Reporter) -> Iterator[None]:
    """While inside, MetalLB's webhooks fail open; recorded first, always restored [M8]."""
    current = kube.try_get("admissionregistration.k8s.io/v1",
                           "ValidatingWebhookConfiguration", name) if name else None
    if current is None:
        yield
        return
    state.webhook_bypass = copy.deepcopy(current)
    store.save(state)
    relaxed = copy.deepcopy(current)
    for webhook in relaxed.get("webhooks") or []:
        webhook["failurePolicy"] = "Ignore"
    kube.replace(relaxed)
    reporter.event(f"MetalLB's webhooks fail open while its objects are restored ({name})")
    try:
        yield
    finally:
        restore_webhook_bypass(kube, store, state, reporter)


class _Undo:
    def __init__(self, kube: Kube, plan: Plan, store: StateStore, state: MigrationState,
                 options: ApplyOptions, reporter: Reporter) -> None:
        self.kube = kube
        self.plan = plan
        self.store = store
        self.state = state
        self.options = options
        self.reporter = reporter
        self.dry = options.dry_run
        self.steps: list[str] = []
        self.unsent = False
        """True while a dry run's writes would need MetalLB's webhooks bypassed."""

    def step(self, text: str) -> None:
        self.steps.append(text)
        self.reporter.event(("(dry run) " if self.dry else "") + text)

    # -- primitives ------------------------------------------------------------------------
    def services(self) -> dict[str, Obj]:
        """Every Service by target key, from one paginated LIST (not a GET per Service)."""
        return {Target.of(svc).key: svc for svc in self.kube.iter_list("v1", "Service")}

    def restore_metadata(self, target: Target, original: Obj, current: Obj | None) -> None:
        """Labels and annotations back exactly as recorded (merge patch with nulls).

        ``current``: the object as just read (None: it is gone, nothing to restore)."""
        if current is None:
            return
        patch: Obj = {"metadata": {}}
        for part in ("labels", "annotations"):
            change = _merge_patch_to((original.get("metadata") or {}).get(part) or {},
                                     (current.get("metadata") or {}).get(part) or {})
            if change:
                patch["metadata"][part] = change
        if patch["metadata"]:
            self.step(f"restore labels and annotations of {target.key}")
            self.kube.patch(target.api_version, target.kind, target.name, patch,
                            namespace=target.namespace, dry_run=self.dry)

    def exists(self, target: Target) -> bool:
        return self.kube.try_get(target.api_version, target.kind, target.name,
                                 target.namespace) is not None

    def recreate(self, target: Target, original: Obj) -> None:
        if self.exists(target):
            return
        if self.dry and self.unsent and target.group_is_metallb:
            self.step(f"recreate {target.key} (with MetalLB's webhooks bypassed; not sent)")
            return
        self.step(f"recreate {target.key}")
        self.kube.create(creatable(original), dry_run=self.dry)

    def delete(self, target: Target) -> None:
        if self.kube.delete(target.api_version, target.kind, target.name, target.namespace,
                            dry_run=self.dry):
            self.step(f"delete {target.key}")

    def scale(self, target: Target, replicas: int, why: str, *,
              before: Obj | None = None) -> None:
        """Scale a Deployment and wait: at 0 until no pod is left, Terminating ones included;
        above, until it is as ready as ``before`` (the recorded object) was."""
        current = self.kube.try_get(target.api_version, target.kind, target.name,
                                    target.namespace)
        if current is None:
            return
        if (current.get("spec") or {}).get("replicas") != replicas:
            self.step(f"scale {target.key} to {replicas}: {why}")
            assert target.namespace is not None
            self.kube.scale(target.api_version, target.kind, target.name, target.namespace,
                            replicas, dry_run=self.dry)
        if not self.dry:
            what = ("has no pod left" if replicas == 0 else
                    "is as ready as before the migration")
            wait_until(replicas_check(self.kube, target.to_dict(), replicas, before=before),
                       f"{target.key} {what}", 180, self.options.waits, self.reporter)

    def clear_satisfied_condition(self) -> None:
        for svc in self.kube.iter_list("v1", "Service"):
            conditions = (svc.get("status") or {}).get("conditions") or []
            if not any(c.get("type") == SATISFIED for c in conditions):
                continue
            meta = svc["metadata"]
            kept = [c for c in conditions if c.get("type") != SATISFIED]
            self.step(f"remove {SATISFIED} from Service {meta['namespace']}/{meta['name']}")
            self.kube.patch("v1", "Service", meta["name"], {"status": {"conditions": kept}},
                            namespace=meta["namespace"], subresource="status",
                            dry_run=self.dry)

    # -- per stage -------------------------------------------------------------------------
    def undo(self, name: str, backup: Obj) -> None:
        objects = _objects(backup)
        if name == "pin":
            services = self.services()
            for target, original in objects:
                if target.kind == "Service" and original is not None:
                    self.restore_metadata(target, original, services.get(target.key))
        elif name == "freeze-metallb":
            for target, original in objects:
                if target.kind == "Deployment" and original is not None:
                    replicas = int((original.get("spec") or {}).get("replicas", 1))
                    self.scale(target, replicas, "MetalLB's controller runs again and"
                               " re-adopts the IPs in the status", before=original)
        elif name == "ipam-handover":
            operator = next(((t, o) for t, o in objects if t.kind == "Deployment"), None)
            # Only the pools that exist: a stage that failed before its creates (or a rollback
            # that already deleted them) leaves none, and then the operator is not stopped.
            pools = [t for t, o in objects
                     if t.kind == "CiliumLoadBalancerIPPool" and o is None and self.exists(t)]
            if pools and operator is not None and operator[1] is not None:
                self.scale(operator[0], 0, "LB-IPAM must not see its pools vanish")
            for target in pools:
                self.delete(target)
            if operator is not None and operator[1] is not None:
                replicas = int((operator[1].get("spec") or {}).get("replicas", 1))
                self.scale(operator[0], replicas, "with no pool LB-IPAM stays dormant",
                           before=operator[1])
            self.clear_satisfied_condition()
        elif name in ("l2-canary", "l2-cutover"):
            handed_back = self.handed_back(name)
            self.hold_cilium_leases(handed_back)
            for target, original in objects:
                if target.kind == "CiliumL2AnnouncementPolicy" and original is None:
                    self.delete(target)
            deleted_at = self.options.waits.clock()
            metallb = [(t, o) for t, o in objects if t.group_is_metallb and o is not None]
            with self.bypass(bool(metallb)):
                for target, original in metallb:
                    self.recreate(target, original)
            legacy = [(t, o) for t, o in objects if t.kind == "ConfigMap" and o is not None]
            for target, original in objects:
                if target.kind == "DaemonSet" and original is not None:
                    self.restore_node_selector(target, original)
                    if legacy:
                        self.wait_speakers_joined(target)
            for target, original in legacy:
                self.recreate(target, original)
            self.drop_cilium_leases(handed_back, deleted_at)
        elif name == "bgp-prepare":
            undo_prepare(self, backup)
        elif name == "bgp-handover":
            undo_handover(self, backup)
        elif name == "decommission":
            metallb = [(t, o) for t, o in objects
                       if t.group_is_metallb and o is not None]
            with self.bypass(bool(metallb)):
                for target, original in metallb:
                    self.recreate(target, original)
            services = self.services()
            for target, original in objects:
                if target.kind == "ConfigMap" and original is not None:
                    self.recreate(target, original)
                if target.kind == "Service" and original is not None:
                    self.restore_metadata(target, original, services.get(target.key))

    def handed_back(self, stage: str) -> list[str]:
        """The Services whose ARP answers the undo of ``stage`` gives back to MetalLB."""
        canary = list((self.plan.context.get("canary") or {}).get("services") or ())
        announced = sorted(self.plan.context.get("announced") or {})
        return canary if stage == "l2-canary" else [k for k in announced if k not in canary]

    def hold_cilium_leases(self, services: list[str]) -> None:
        """Break before make on the way back: before Cilium's policies go, the rollback holds
        the lease of every Service it hands back, waits until the agents that led have
        stopped (their renew deadline) and their datapath entries had time to go, and (with
        an interface) until nobody answers on the wire (migrate/apply/cilium_leases.py)."""
        if not services or not GUARDS.cilium_released:
            return
        if self.dry:
            self.step(f"hold the Cilium leases of {len(services)} Service(s) until MetalLB is"
                      " back")
            return
        window = renew_window(self.kube, self.plan)
        settle = float(self.plan.context.get("ciliumReleaseSettle",
                                              CILIUM_RELEASE_SETTLE_SECONDS))
        self.step(f"hold the Cilium leases of {len(services)} Service(s) (holder {HOLDER}):"
                  f" the agents that lead them stop within {window:g}s")
        waits = self.options.waits
        wait_until(hold_check(self.kube, self.plan, services, quiet=window + settle,
                              options=waits),
                   f"the rollback holds the Cilium leases of {len(services)} Service(s) and"
                   " no agent leads them", 120 + window + settle, waits, self.reporter)
        if self.options.arp_interface:
            wait_arp_silent(self.options.arp_interface, self.plan, services, 120, waits,
                            self.reporter)

    def drop_cilium_leases(self, services: list[str], deleted_at: float) -> None:
        """Once MetalLB's objects are back and every agent had time to see the policies go
        (AGENT_SETTLE_SECONDS after their deletion), the held leases go: an agent that still
        had a policy would otherwise create the lease anew and answer."""
        if not services or self.dry:
            return
        waits = self.options.waits
        remaining = deleted_at + AGENT_SETTLE_SECONDS * waits.timeout_scale - waits.clock()
        if remaining > 0:
            waits.sleep(remaining)
        for name in drop_held_leases(self.kube, self.plan, services):
            self.step(f"delete Lease {self.plan.cilium_namespace}/{name} (held by the"
                      " rollback)")

    def wait_speakers_joined(self, target: Target) -> None:
        """Before a legacy configuration returns: every un-parked speaker runs and they know of
        each other, so they agree on one announcer per Service from their first config (a
        speaker alone in its memberlist announces every Service)."""
        if self.dry:
            return
        settle = float(self.plan.context.get("memberlistSettle", MEMBERLIST_SETTLE_SECONDS))
        wait_until(daemonset_joined_check(self.kube, target.to_dict(), settle=settle,
                                          options=self.options.waits),
                   f"every speaker of {target.key} runs and has joined the others", 180,
                   self.options.waits, self.reporter)

    def restore_node_selector(self, target: Target, original: Obj) -> None:
        want = (((original.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
            "nodeSelector") or {}
        current = self.kube.get(target.api_version, target.kind, target.name, target.namespace)
        have = (((current.get("spec") or {}).get("template") or {}).get("spec") or {}).get(
            "nodeSelector") or {}
        change = _merge_patch_to(want, have)
        if change:
            self.step(f"restore the node selector of {target.key} (speakers run again)")
            self.kube.patch(target.api_version, target.kind, target.name,
                            {"spec": {"template": {"spec": {"nodeSelector": change}}}},
                            namespace=target.namespace, dry_run=self.dry)

    @contextmanager
    def bypass(self, needed: bool) -> Iterator[None]:
        name = self.plan.context.get("webhook")
        if not needed or not name:
            yield
            return
        if self.dry:
            # A server dry run still calls the admission webhooks, and MetalLB's, with its
            # controller stopped, refuses every create [M8]; relaxing them is a write a dry
            # run must not make. So the preview names these creates without sending them.
            self.unsent = True
            try:
                yield
            finally:
                self.unsent = False
            return
        with webhook_bypass(self.kube, self.store, self.state, name, self.reporter):
            yield


def recorded_plan(kube: Kube, namespace: str) -> Plan | None:
    """The plan the cluster's migration was applied with, as apply recorded it (None when no
    migration, or one recorded by a version that did not store its plan)."""
    store = StateStore(kube, namespace)
    state = store.load()
    data = store.read_plan(state)
    if data is None:
        return None
    parts = ", ".join(state.plan_parts)
    return Plan.from_dict(data, origin=f"cluster: the plan recorded in ConfigMap {namespace}/"
                          f"{parts}", digest=state.plan_digest)


def rollback(kube: Kube, plan: Plan | None, *, to: str | int | None = None,
             options: ApplyOptions | None = None,
             reporter: Reporter | None = None) -> RollbackResult:
    """Undo applied stages newest first, down to (not including) ``to``; all when None.

    ``plan``: the plan the stages were applied with; None reads the one apply recorded in the
    cluster (a lost plan file must not make a migration impossible to undo)."""
    options = options or ApplyOptions()
    reporter = reporter or SilentReporter()
    store = StateStore(kube, options.state_namespace)
    if plan is None:
        plan = recorded_plan(kube, options.state_namespace)
        if plan is None:
            if not store.load().stages:
                return RollbackResult(dry_run=options.dry_run)
            raise BlockedError("no plan is recorded in the cluster for this migration; give"
                               " the plan file it was applied with (--plan)")
    floor = plan.stage(to).number if to is not None else 0
    # A state or backup someone edited or cut short stops the rollback here, before the lock
    # is taken (they are read again under the lock: another operator may have changed them).
    _read_backups(store, _stages_to_undo(store.load(), plan, floor))
    with held_lock(kube, options.state_namespace, enabled=not options.dry_run,
                   duration=options.lock_duration) as guard:
        return _rollback_locked(kube, plan, floor, store, options, reporter, guard)


def _undo_recorded(kube: Kube, plan: Plan, store: StateStore, state: MigrationState,
                   record: StageRecord, undo: _Undo, backup: Obj) -> None:
    """Undo one recorded stage and forget it, in an order every failure can resume from."""
    if record.status != ROLLING_BACK:
        # Recorded before the first undo write: a rollback that dies half-way leaves the
        # stage neither applied nor absent. "applied" would make a later apply skip it
        # (already applied) and run the next stage on top of a half-undone one, e.g.
        # l2-cutover with Cilium's operator stopped and half its pools gone. As it is, apply
        # resumes the stage (its writes are idempotent) or a second rollback finishes it.
        record.status = ROLLING_BACK
        store.save(state)
    undo.undo(record.name, backup)
    check_i1(kube, plan)
    # The state forgets the stage before its backup goes: if saving fails, the stage is still
    # listed and its backup still there, so the next rollback undoes it again (a no-op). The
    # other order left a listed stage with no backup, which neither a re-run nor a rollback
    # could get past. A backup left behind by a failed delete is harmless: the next apply of
    # that stage overwrites it, and the end of a full rollback deletes it.
    state.stages.remove(record)
    state.history.append({"at": now_rfc3339(), "by": operator_identity(),
                          "event": f"rolled back {record.name}"})
    store.save(state)
    store.delete_backup(record.backup_parts)


def _stages_to_undo(state: MigrationState, plan: Plan, floor: int) -> list[StageRecord]:
    """The recorded stages after ``floor``, newest first."""
    order = {stage.name: stage.number for stage in plan.stages}
    return sorted((r for r in state.stages if order.get(r.name, 0) > floor),
                  key=lambda r: order.get(r.name, 0), reverse=True)


def _read_backups(store: StateStore, todo: list[StageRecord]) -> dict[str, Obj]:
    """The backup of each stage to undo, read and checked."""
    return {record.name: store.read_backup(record.backup_parts) for record in todo}


def _rollback_locked(kube: Kube, plan: Plan, floor: int, store: StateStore,
                     options: ApplyOptions, reporter: Reporter,
                     guard: Callable[[], None]) -> RollbackResult:
    state = store.load()
    if state.plan_digest and state.plan_digest != plan.digest():
        raise BlockedError(
            f"the cluster was migrated with another plan (digest {state.plan_digest});"
            " roll back with that plan"
        )
    todo = _stages_to_undo(state, plan, floor)
    # Every backup is read (and checked) before the first write: one that was edited or cut
    # short stops the rollback while nothing is changed yet.
    backups = _read_backups(store, todo)
    if state.webhook_bypass and not options.dry_run:
        restore_webhook_bypass(kube, store, state, reporter)
    result = RollbackResult(dry_run=options.dry_run)
    undo = _Undo(kube, plan, store, state, options, reporter)
    for record in todo:
        backup = backups[record.name]
        reporter.event(f"undo {record.name}")
        if options.dry_run:
            undo.undo(record.name, backup)
            result.undone.append(record.name)
            continue
        try:
            guard()  # stop before undoing a stage if the lock is no longer ours
            _undo_recorded(kube, plan, store, state, record, undo, backup)
        except MigrateError as error:
            error.add_note(
                f"The rollback stopped while undoing {record.name}, marked {ROLLING_BACK} in"
                f" the state: run `migrate rollback` again to finish it (what is undone is"
                f" skipped), or `migrate apply --stage {record.name}` to redo the stage.")
            raise
        result.undone.append(record.name)
    if not options.dry_run and not any(r.name != "preflight" for r in state.stages):
        store.delete()
    result.steps = undo.steps
    return result
