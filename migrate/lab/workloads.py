"""Workloads in the lab: the pods of the Deployments and DaemonSets the controller models care
about, and the status a Deployment reports.

:class:`PodController` plays the ReplicaSet and DaemonSet controllers and the kubelet for
MetalLB's controller and speakers and Cilium's operator and agents (the workloads the models
run in). It adopts the pods a snapshot holds and creates the missing ones, already running; a
pod it creates later starts after a start delay (:class:`~migrate.lab.runtime.Timing`), and
its process (:class:`~migrate.lab.models._common.Process`) runs from then on. Scaling a
Deployment down, or a DaemonSet's nodeSelector no longer matching a node, marks the pod
Terminating (``deletionTimestamp``); its process keeps running until it exits, at a seeded
moment within the pod's ``terminationGracePeriodSeconds`` (default 30), and the pod object goes
with it. ``status.replicas`` stops counting a Terminating pod at once, as the ReplicaSet
controller does (kubernetes ``pkg/controller/replicaset/replica_set.go``, ``syncReplicaSet``
→ ``FilterActivePods``). A Deployment whose snapshot status reports fewer ready replicas than
it wants keeps that capacity: the extra pods stay Pending (Unschedulable). A pod deleted
through the API is gone at once (the lab deletes immediately); with the realistic timing its
workload replaces it, after the start delay.

When a snapshot holds no workload for a component, the lab assumes its processes run (one,
or one per node for a DaemonSet's component), as if the snapshot had left the workload out.

Every other Deployment gets :class:`DeploymentStatus`: status follows spec at once.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from migrate.lab.store import ApiError, Store

if TYPE_CHECKING:
    from migrate.lab.models import Runtime
    from migrate.lab.models._common import Component, Event
    from migrate.lab.runtime import Timer

Obj = dict[str, Any]
MANAGER = "kube-controller-manager"
KUBELET = "kubelet"
DEFAULT_GRACE = 30.0
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
"""The characters Kubernetes uses in generated name suffixes (``utilrand.String``)."""

_MANAGED: weakref.WeakKeyDictionary[Store, Callable[[Obj], bool]] = weakref.WeakKeyDictionary()
"""Per store, the Deployments whose pods a PodController models (DeploymentStatus skips them)."""


def _meta(obj: Obj) -> Obj:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


def _spec(obj: Obj) -> Obj:
    value = obj.get("spec")
    return value if isinstance(value, dict) else {}


def _labels(obj: Obj) -> dict[str, str]:
    value = _meta(obj).get("labels")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _key(obj: Obj) -> tuple[str, str]:
    return str(_meta(obj).get("namespace") or ""), str(_meta(obj).get("name") or "")


# --------------------------------------------------------------------------- unmanaged status


def _wanted_status(obj: Obj) -> Obj:
    replicas = (obj.get("spec") or {}).get("replicas")
    replicas = 1 if replicas is None else int(replicas)
    generation = int((obj.get("metadata") or {}).get("generation") or 1)
    return {"observedGeneration": generation, "replicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "updatedReplicas": replicas}


def _status_only(old: Obj | None, new: Obj) -> bool:
    """Whether an update changed nothing but the status (and the resourceVersion)."""
    if old is None:
        return False

    def rest(obj: Obj) -> Obj:
        meta = {k: v for k, v in _meta(obj).items() if k not in ("resourceVersion",
                                                                  "managedFields")}
        return {**{k: v for k, v in obj.items() if k != "status"}, "metadata": meta}

    return rest(old) == rest(new)


def sync_deployment_status(store: Store, obj: Obj) -> None:
    """Make a Deployment whose pods are not modelled report ``spec.replicas`` ready."""
    managed = _MANAGED.get(store)
    if managed is not None and managed(obj):
        return  # its pods are modelled: the PodController reports its status
    wanted = _wanted_status(obj)
    status = obj.get("status") or {}
    if all(status.get(k) == v for k, v in wanted.items()):
        return
    current = store.try_get("apps", "Deployment", obj["metadata"]["name"],
                            obj["metadata"].get("namespace"))
    if current is None:
        return
    current["status"] = {**(current.get("status") or {}), **_wanted_status(current)}
    current["metadata"].pop("resourceVersion", None)
    with contextlib.suppress(ApiError):  # a newer write follows and brings its own event
        store.update(current, subresource="status", manager=MANAGER)


class DeploymentStatus:
    """Keeps the status of every Deployment whose pods are not modelled in line with its spec,
    at once (a subscriber of the store; ``build_controllers`` does the same as it takes each
    event)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.subscribe(self._on_event)
        for deployment in store.list("apps", "Deployment"):
            sync_deployment_status(store, deployment)

    def _on_event(self, event_type: str, obj: Obj, old: Obj | None) -> None:
        if event_type != "DELETED" and obj.get("kind") == "Deployment":
            sync_deployment_status(self.store, obj)


# --------------------------------------------------------------------------- rules


@dataclass
class WorkloadRule:
    """Which workload objects and pods belong to one component."""

    component: Component
    kind: str  # Deployment | DaemonSet
    namespace: str
    default_name: str
    chart_labels: Callable[[dict[str, str]], bool]
    pod_labels: Callable[[dict[str, str]], bool]
    seen: bool = False
    """A workload of the component was seen (so no process is assumed when none is left)."""

    def matches(self, obj: Obj) -> bool:
        """Whether a Deployment/DaemonSet is this component's workload."""
        if obj.get("kind") != self.kind:
            return False
        namespace, name = _key(obj)
        return (name == self.default_name and namespace == self.namespace) or \
            self.chart_labels(_labels(obj))

    def owns_pod(self, pod: Obj, workload: Obj | None) -> bool:
        """Whether ``pod`` belongs to ``workload`` (its selector), or to the component."""
        labels = _labels(pod)
        if workload is not None:
            if _key(pod)[0] != _key(workload)[0]:
                return False
            selector = (_spec(workload).get("selector") or {}).get("matchLabels") or {}
            if selector:
                return all(labels.get(str(k)) == str(v) for k, v in selector.items())
        return _key(pod)[0] == self.namespace and self.pod_labels(labels)


@dataclass
class PodState:
    """One pod the controller models."""

    namespace: str
    name: str
    rule: WorkloadRule
    owner: tuple[str, str] | None
    """(namespace, name) of its workload; None for an orphan pod of the snapshot."""
    node: str
    grace: float
    seq: int
    running: bool = False
    terminating: bool = False
    unschedulable: bool = False
    uid: str = ""
    spec_source: Obj = field(default_factory=dict)
    timer: Timer | None = None

    @property
    def process_name(self) -> str:
        """The name of its process."""
        return self.name


def node_selector_matches(template_spec: Obj, node: Obj) -> bool:
    """A pod template's nodeSelector against the Node's labels, with the labels every kubelet
    sets (``kubernetes.io/os``, ``kubernetes.io/arch``) filled in when a snapshot leaves them
    out."""
    labels = dict(_labels(node))
    info = (node.get("status") or {}).get("nodeInfo") or {}
    labels.setdefault("kubernetes.io/os", str(info.get("operatingSystem") or "linux"))
    labels.setdefault("kubernetes.io/arch", str(info.get("architecture") or "amd64"))
    selector = template_spec.get("nodeSelector") or {}
    return all(labels.get(str(k)) == str(v) for k, v in selector.items())


def _template_spec(workload: Obj) -> Obj:
    template = _spec(workload).get("template") or {}
    spec = template.get("spec") if isinstance(template, dict) else None
    return spec if isinstance(spec, dict) else {}


def _grace_of(spec: Obj) -> float:
    value = spec.get("terminationGracePeriodSeconds")
    try:
        return float(value) if value is not None else DEFAULT_GRACE
    except (TypeError, ValueError):
        return DEFAULT_GRACE


def _pod_running(pod: Obj) -> bool:
    status = pod.get("status") or {}
    if str(status.get("phase") or "Running") != "Running":
        return False
    for cond in status.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "Ready" and cond.get("status") == "False":
            return False
    return True


# --------------------------------------------------------------------------- the controller


class PodController:
    """The ReplicaSet/DaemonSet controllers and the kubelet for the models' workloads."""

    def __init__(self, runtime: Runtime, rules: list[WorkloadRule]) -> None:
        self.runtime = runtime
        self.rules = rules
        self.pods: dict[tuple[str, str], PodState] = {}
        self.capacity: dict[tuple[str, str], int] = {}
        """Deployment -> how many of its pods can be ready (from its snapshot status)."""
        self._seq = 0
        self._deleting: set[tuple[str, str]] = set()
        self._implicit: dict[str, set[str]] = {}
        from migrate.lab.runtime import CONTROLLER_MANAGER, seeded

        self.kind = CONTROLLER_MANAGER
        self.rng = seeded(runtime.seed, CONTROLLER_MANAGER)
        _MANAGED[runtime.store] = self.manages

    # ----------------------------------------------------------------- helpers

    def manages(self, obj: Obj) -> bool:
        """Whether a Deployment's pods are modelled here."""
        return any(rule.matches(obj) for rule in self.rules)

    def _rule_of(self, obj: Obj) -> WorkloadRule | None:
        return next((r for r in self.rules if r.matches(obj)), None)

    def _workloads(self, rule: WorkloadRule) -> list[Obj]:
        return [w for w in self.runtime.master.list("apps", rule.kind) if rule.matches(w)]

    def _nodes(self) -> list[Obj]:
        return self.runtime.master.list("", "Node")

    def _api(self, verb: str, resource: str, name: str) -> None:
        self.runtime.requests.add(self.runtime.now(), self.kind, verb, resource, name)

    def _suffix(self, length: int = 5) -> str:
        return "".join(self.rng.choice(NAME_ALPHABET) for _ in range(length))

    def _react(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` after the controller manager's reaction delay."""
        delay = self.runtime.timing.reaction_of(self.kind).sample(self.rng)

        def run() -> None:
            self.runtime.processed += 1
            callback()

        self.runtime.scheduler.after(delay, run, label=self.kind)

    # ----------------------------------------------------------------- start

    def start(self) -> None:
        """Adopt the snapshot's pods, create the missing ones (running), assume processes for
        components with no workload at all."""
        adopted: set[tuple[str, str]] = set()
        for rule in self.rules:
            workloads = self._workloads(rule)
            rule.seen = bool(workloads)
            for workload in workloads:
                adopted |= self._adopt(rule, workload)
                status = workload.get("status")
                if rule.kind == "Deployment" and isinstance(status, dict) and (
                        "replicas" in status or "readyReplicas" in status):
                    ready = int(status.get("readyReplicas") or 0)
                    if ready < int(_spec(workload).get("replicas", 1) or 0):
                        self.capacity[_key(workload)] = ready
                self._reconcile(rule, workload, initial=True)
            orphans = [p for p in self.runtime.master.list("", "Pod")
                       if _key(p) not in adopted and _key(p) not in self.pods
                       and rule.owns_pod(p, None)]
            for pod in orphans:
                self._track(rule, pod, None)
            if not workloads and not orphans:
                self._assume(rule)

    def _adopt(self, rule: WorkloadRule, workload: Obj) -> set[tuple[str, str]]:
        found = set()
        for pod in self.runtime.master.list("", "Pod", _key(workload)[0]):
            if _key(pod) in self.pods or not rule.owns_pod(pod, workload):
                continue
            if _meta(pod).get("deletionTimestamp"):
                continue
            self._track(rule, pod, _key(workload))
            found.add(_key(pod))
        return found

    def _track(self, rule: WorkloadRule, pod: Obj, owner: tuple[str, str] | None) -> None:
        self._seq += 1
        spec = _spec(pod)
        state = PodState(_key(pod)[0], _key(pod)[1], rule, owner,
                         str(spec.get("nodeName") or ""), _grace_of(spec), self._seq,
                         uid=str(_meta(pod).get("uid") or ""), spec_source=pod)
        self.pods[_key(pod)] = state
        if _pod_running(pod):
            self._run(state)
        else:
            state.unschedulable = True

    def _assume(self, rule: WorkloadRule) -> None:
        """No workload and no pod in the snapshot: the component's processes run anyway."""
        from migrate.lab.models._common import Process

        component = rule.component
        names = self._implicit.setdefault(component.kind, set())
        if rule.kind == "DaemonSet":
            wanted = {str(_meta(n).get("name")) for n in self._nodes()}
            for node in sorted(wanted - names):
                component.add(Process(self.runtime, component, f"assumed-{node}", node=node))
                names.add(node)
            for node in sorted(names - wanted):
                component.remove(f"assumed-{node}", graceful=True)
                names.discard(node)
        elif not names:
            component.add(Process(self.runtime, component, "assumed"))
            names.add("")

    def _forget_assumed(self, rule: WorkloadRule) -> None:
        component = rule.component
        for node in sorted(self._implicit.pop(component.kind, set())):
            component.remove(f"assumed-{node}" if node else "assumed", graceful=True)

    # ----------------------------------------------------------------- events

    def handle(self, event: Event) -> None:
        """A committed change, as the controller manager's informers see it."""
        group, kind = event.group_kind
        if (group, kind) in (("apps", "Deployment"), ("apps", "DaemonSet")):
            rule = self._rule_of(event.obj)
            if rule is None:
                return
            obj = event.obj
            if event.type == "MODIFIED" and _status_only(event.old, obj):
                return  # its own status write: nothing the controller acts on changed
            if event.type == "DELETED":
                self._react(lambda: self._workload_deleted(_key(obj)))
            else:
                self._react(lambda: self._workload_changed(rule, _key(obj)))
        elif (group, kind) == ("", "Node"):
            self._react(self._nodes_changed)
        elif (group, kind) == ("", "Pod") and event.type == "DELETED":
            key = _key(event.obj)
            if key in self._deleting:
                self._deleting.discard(key)
            elif key in self.pods:
                self._pod_deleted(key)
            uid = str(_meta(event.obj).get("uid") or "")
            if uid:
                self._react(lambda: self._collect_owned(uid))

    def _workload_changed(self, rule: WorkloadRule, key: tuple[str, str]) -> None:
        workload = self.runtime.master.get("apps", rule.kind, key[1], key[0])
        if workload is None:
            return
        if not rule.seen:
            rule.seen = True
            self._forget_assumed(rule)
        self._reconcile(rule, workload)

    def _workload_deleted(self, key: tuple[str, str]) -> None:
        """Cascading deletion: every pod of the workload terminates."""
        for state in sorted(self.pods.values(), key=lambda s: s.seq):
            if state.owner == key and not state.terminating:
                self._terminate(state)
        self.capacity.pop(key, None)

    def _nodes_changed(self) -> None:
        for rule in self.rules:
            if rule.kind != "DaemonSet":
                continue
            if self._implicit.get(rule.component.kind) is not None and not rule.seen:
                self._assume(rule)
            for workload in self._workloads(rule):
                self._reconcile(rule, workload)

    def _pod_deleted(self, key: tuple[str, str]) -> None:
        """A pod deleted through the API: its process is gone at once (no grace here)."""
        state = self.pods.pop(key)
        if state.timer is not None:
            state.timer.cancel()
        if state.running:
            state.rule.component.remove(state.process_name, graceful=False)
        if state.owner is not None:
            owner, rule = state.owner, state.rule
            if self.runtime.timing.replace_deleted_pods:
                self._react(lambda: self._workload_changed(rule, owner))
            else:
                self._react(lambda: self._owner_changed(rule, owner))

    def _collect_owned(self, uid: str) -> None:
        """The garbage collector: objects owned by a deleted pod go too (the speakers'
        ServiceL2Status and ServiceBGPStatus objects)."""
        for kind in ("ServiceL2Status", "ServiceBGPStatus"):
            for obj in self.runtime.master.list("metallb.io", kind):
                owners = _meta(obj).get("ownerReferences") or []
                if any(isinstance(o, dict) and o.get("uid") == uid for o in owners):
                    namespace, name = _key(obj)
                    self._api("DELETE", f"{kind.lower()}es", name)
                    with contextlib.suppress(ApiError):
                        self.runtime.store.delete("metallb.io", kind, name, namespace,
                                                  manager="generic-garbage-collector")

    # ----------------------------------------------------------------- reconcile

    def _owned(self, key: tuple[str, str]) -> list[PodState]:
        return sorted((s for s in self.pods.values() if s.owner == key), key=lambda s: s.seq)

    def _reconcile(self, rule: WorkloadRule, workload: Obj, *, initial: bool = False) -> None:
        if rule.kind == "Deployment":
            self._reconcile_deployment(rule, workload, initial)
        else:
            self._reconcile_daemonset(rule, workload, initial)

    def _reconcile_deployment(self, rule: WorkloadRule, workload: Obj, initial: bool) -> None:
        key = _key(workload)
        want = _spec(workload).get("replicas")
        want = 1 if want is None else int(want)
        active = [s for s in self._owned(key) if not s.terminating]
        if len(active) < want:
            nodes = [str(_meta(n).get("name")) for n in self._nodes()] or [""]
            for _ in range(want - len(active)):
                counts = {n: sum(1 for s in self._owned(key) if s.node == n) for n in nodes}
                node = min(nodes, key=lambda n: (counts[n], n))
                self._create(rule, workload, node, initial=initial)
        elif len(active) > want:
            # ReplicaSet getPodsToDelete: not ready before ready, then the newest first
            ranked = sorted(active, key=lambda s: (s.running, -s.seq))
            for state in ranked[: len(active) - want]:
                self._terminate(state)
        self._write_status(rule, key)

    def _reconcile_daemonset(self, rule: WorkloadRule, workload: Obj, initial: bool) -> None:
        key = _key(workload)
        template = _template_spec(workload)
        eligible = {str(_meta(n).get("name")) for n in self._nodes()
                    if node_selector_matches(template, n)}
        active = [s for s in self._owned(key) if not s.terminating]
        covered = {s.node for s in active}
        for node in sorted(eligible - covered):
            self._create(rule, workload, node, initial=initial)
        for state in active:
            if state.node not in eligible:
                self._terminate(state)
        self._write_daemonset_status(key, eligible)

    # ----------------------------------------------------------------- pods

    def _create(self, rule: WorkloadRule, workload: Obj, node: str, *, initial: bool) -> None:
        """A new pod of ``workload`` on ``node``: running at once at start, else Pending until
        its start delay has passed (or for good when the Deployment has no capacity left)."""
        store = self.runtime.store
        namespace, workload_name = _key(workload)
        template = copy.deepcopy(_spec(workload).get("template") or {})
        digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).digest()
        spec = template.get("spec") if isinstance(template.get("spec"), dict) else {}
        assert isinstance(spec, dict)
        spec["nodeName"] = node
        spec.setdefault("terminationGracePeriodSeconds", int(DEFAULT_GRACE))
        if rule.kind == "Deployment":
            pod_hash = "".join(NAME_ALPHABET[b % len(NAME_ALPHABET)] for b in digest[:10])
            name = f"{workload_name}-{pod_hash}-{self._suffix()}"
            owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet",
                     "name": f"{workload_name}-{pod_hash}", "controller": True,
                     "blockOwnerDeletion": True}
        else:
            name = f"{workload_name}-{self._suffix()}"
            owner = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": workload_name,
                     "uid": str(_meta(workload).get("uid") or ""), "controller": True,
                     "blockOwnerDeletion": True}
        labels = dict((template.get("metadata") or {}).get("labels") or {})
        capacity = self.capacity.get((namespace, workload_name))
        ready_now = sum(1 for s in self._owned((namespace, workload_name))
                        if not s.terminating and not s.unschedulable)
        unschedulable = capacity is not None and ready_now >= capacity
        now = store.clock.rfc3339()
        running = initial and not unschedulable
        status: Obj = (
            {"phase": "Running", "startTime": now,
             "conditions": [{"type": "PodScheduled", "status": "True"},
                            {"type": "Ready", "status": "True"}]}
            if running else
            {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/1 nodes are available"}] if unschedulable else []})
        body: Obj = {"apiVersion": "v1", "kind": "Pod",
                     "metadata": {"name": name, "namespace": namespace, "labels": labels,
                                  "ownerReferences": [owner]},
                     "spec": spec, "status": status}
        self._api("CREATE", "pods", name)
        try:
            created = store.create(body, manager=MANAGER)
        except ApiError:
            return
        self._seq += 1
        state = PodState(namespace, name, rule, (namespace, workload_name), node,
                         _grace_of(spec), self._seq, unschedulable=unschedulable,
                         uid=str(_meta(created).get("uid") or ""), spec_source=created)
        self.pods[(namespace, name)] = state
        if running:
            self._run(state)
        elif not unschedulable:
            delay = self.runtime.timing.start_of(rule.component.kind).sample(self.rng)
            state.timer = self.runtime.scheduler.after(
                delay, lambda: self._started(state), label=f"start {name}")

    def _started(self, state: PodState) -> None:
        """The containers are up and ready: the process runs."""
        self.runtime.processed += 1
        if (state.namespace, state.name) not in self.pods or state.terminating:
            return
        state.timer = None
        pod = self.runtime.store.try_get("", "Pod", state.name, state.namespace)
        if pod is None:
            return
        now = self.runtime.store.clock.rfc3339()
        pod["status"] = {"phase": "Running", "startTime": now,
                         "conditions": [{"type": "PodScheduled", "status": "True"},
                                        {"type": "Ready", "status": "True"}]}
        _meta(pod).pop("resourceVersion", None)
        self._api("UPDATE", "pods/status", state.name)
        with contextlib.suppress(ApiError):
            pod = self.runtime.store.update(pod, subresource="status", manager=KUBELET)
        state.spec_source = pod
        self._run(state)
        if state.owner is not None:
            self._owner_changed(state.rule, state.owner)

    def _run(self, state: PodState) -> None:
        from migrate.lab.models._common import Process

        state.running = True
        component = state.rule.component
        node = state.node if state.rule.kind == "DaemonSet" else None
        component.add(Process(self.runtime, component, state.process_name, node=node,
                              pod=state.spec_source))

    def _terminate(self, state: PodState) -> None:
        """Graceful deletion: deletionTimestamp now + grace; the process exits within it."""
        if state.terminating:
            return
        state.terminating = True
        if state.timer is not None:
            state.timer.cancel()
            state.timer = None
        store = self.runtime.store
        pod = store.try_get("", "Pod", state.name, state.namespace)
        if pod is not None:
            seconds = int(state.grace)
            _meta(pod)["deletionTimestamp"] = store.clock.rfc3339(store.clock.now() + seconds)
            _meta(pod)["deletionGracePeriodSeconds"] = seconds
            _meta(pod).pop("resourceVersion", None)
            self._api("DELETE", "pods", state.name)
            with contextlib.suppress(ApiError):
                store.update(pod, manager=MANAGER)
        if state.running:
            state.rule.component.mark_terminating(state.process_name)
            fraction = self.runtime.timing.exit.sample(self.rng)
            state.timer = self.runtime.scheduler.after(
                state.grace * fraction, lambda: self._exited(state), label=f"exit {state.name}")
        else:
            self._exited(state)
        if state.owner is not None:
            self._owner_changed(state.rule, state.owner)

    def _exited(self, state: PodState) -> None:
        """The process has exited: the kubelet removes the pod."""
        self.runtime.processed += 1
        state.timer = None
        key = (state.namespace, state.name)
        if self.pods.pop(key, None) is None:
            return
        if state.running:
            state.rule.component.remove(state.process_name, graceful=True)
        self._deleting.add(key)
        self._api("DELETE", "pods", state.name)
        try:
            self.runtime.store.delete("", "Pod", state.name, state.namespace, manager=KUBELET)
        except ApiError:
            self._deleting.discard(key)
        if state.owner is not None:
            self._owner_changed(state.rule, state.owner)

    # ----------------------------------------------------------------- workload status

    def _owner_changed(self, rule: WorkloadRule, key: tuple[str, str]) -> None:
        """A pod of ``key`` started, began terminating or exited: its owner's status follows."""
        if rule.kind == "Deployment":
            self._write_status(rule, key)
            return
        workload = self.runtime.master.get("apps", "DaemonSet", key[1], key[0])
        if workload is not None:
            template = _template_spec(workload)
            self._write_daemonset_status(key, {str(_meta(n).get("name")) for n in self._nodes()
                                               if node_selector_matches(template, n)})

    def _write_daemonset_status(self, key: tuple[str, str], eligible: set[str]) -> None:
        """What the DaemonSet controller reports (pkg/controller/daemon/daemon_controller.go,
        updateDaemonSetStatus): nodes that should run a pod, those that do, ready ones; the
        first four are always present, the others omitted when 0."""
        store = self.runtime.store
        current = store.try_get("apps", "DaemonSet", key[1], key[0])
        if current is None:
            return
        active = [s for s in self._owned(key) if not s.terminating]
        scheduled = [s for s in active if s.node in eligible]
        ready = sum(1 for s in scheduled if s.running)
        status: Obj = {"currentNumberScheduled": len(scheduled),
                       "numberMisscheduled": len(active) - len(scheduled),
                       "desiredNumberScheduled": len(eligible), "numberReady": ready,
                       "observedGeneration": int(_meta(current).get("generation") or 1)}
        for field_name, count in (("updatedNumberScheduled", len(scheduled)),
                                  ("numberAvailable", ready),
                                  ("numberUnavailable", max(0, len(eligible) - ready))):
            if count:
                status[field_name] = count
        self._store_status(current, status, "daemonsets/status")

    def _store_status(self, current: Obj, status: Obj, resource: str) -> None:
        """Write a workload's status as its controller does (unless it is already so)."""
        if current.get("status") == status:
            return
        current["status"] = status
        _meta(current).pop("resourceVersion", None)
        self._api("UPDATE", resource, str(_meta(current).get("name")))
        with contextlib.suppress(ApiError):
            self.runtime.store.update(current, subresource="status", manager=MANAGER)

    def _write_status(self, rule: WorkloadRule, key: tuple[str, str]) -> None:
        """What the Deployment controller reports from its ReplicaSet: non-terminating pods
        only (FilterActivePods), ready ones, and the Available condition."""
        store = self.runtime.store
        current = store.try_get("apps", "Deployment", key[1], key[0])
        if current is None:
            return
        want = _spec(current).get("replicas")
        want = 1 if want is None else int(want)
        active = [s for s in self._owned(key) if not s.terminating]
        ready = sum(1 for s in active if s.running)
        generation = int(_meta(current).get("generation") or 1)
        max_unavailable = _max_unavailable(current, want)
        available = ready >= want - max_unavailable
        old = current.get("status") or {}
        status: Obj = {"observedGeneration": generation}
        for field_name, count in (("replicas", len(active)), ("updatedReplicas", len(active)),
                                  ("readyReplicas", ready), ("availableReplicas", ready),
                                  ("unavailableReplicas", max(0, want - ready))):
            if count:
                status[field_name] = count  # omitempty, as the API returns it
        stamp = store.clock.rfc3339()
        conditions = []
        previous = {c.get("type"): c for c in old.get("conditions") or [] if isinstance(c, dict)}
        for ctype, value, reason, message in (
                ("Available", "True" if available else "False",
                 "MinimumReplicasAvailable" if available else "MinimumReplicasUnavailable",
                 "Deployment has minimum availability." if available
                 else "Deployment does not have minimum availability."),
                ("Progressing", "True", "NewReplicaSetAvailable",
                 f'ReplicaSet "{key[1]}" has successfully progressed.')):
            before = previous.get(ctype) or {}
            changed = before.get("status") != value
            conditions.append({
                "type": ctype, "status": value, "reason": reason, "message": message,
                "lastUpdateTime": stamp if changed else before.get("lastUpdateTime", stamp),
                "lastTransitionTime": stamp if changed
                else before.get("lastTransitionTime", stamp)})
        status["conditions"] = conditions
        self._store_status(current, status, "deployments/status")


def _max_unavailable(deployment: Obj, replicas: int) -> int:
    """RollingUpdate maxUnavailable (default 25%, rounded down); 0 for Recreate."""
    strategy = _spec(deployment).get("strategy") or {}
    if strategy.get("type") == "Recreate":
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        try:
            return int(replicas * int(value[:-1]) / 100)
        except ValueError:
            return 0
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0
