"""Controller models for the lab: MetalLB's controller and speakers, Cilium's LB-IPAM operator
and L2 announcers, each a process of its own over the lab's object store.

:func:`build_controllers` subscribes them to a :class:`~migrate.lab.store.Store`. Store writes
queue events; :meth:`Controllers.run_until_idle` takes them one at a time, in commit order,
and hands each to every process that watches its kind, after that process's own delay
(:class:`~migrate.lab.runtime.Timing`); whatever is due by now runs (writes the processes make
queue further events). :meth:`Controllers.advance` moves a manual clock from one due moment to
the next (virtual time), or, on a real clock, runs what is due now. Processes exist while
their pods run (:class:`~migrate.lab.workloads.PodController`).

:meth:`Controllers.announcements` tells, per IP, which nodes answer ARP on the wire for
MetalLB and which for Cilium; :attr:`Controllers.record` keeps every change of that over the
run, :attr:`Controllers.requests` every API call the processes made.

BGP has the same three views (:mod:`migrate.lab.models.bgp`): :meth:`Controllers.bgp_sessions`
(per node and stack, each session a speaker runs: its peer, how it connects, its state, what it
advertises), :meth:`Controllers.bgp_announcements` (per prefix, the next hops the upstream
routers hold, per stack) and :attr:`Controllers.bgp_record` (every change of those next hops,
and every connection collision at a router).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from dataclasses import dataclass

from migrate.lab.models._common import Cache, Component, Event, Obj, Process
from migrate.lab.models.bgp import (
    BGPFabric,
    BGPNextHops,
    BGPRecord,
    BGPRoute,
    BGPSession,
    Collision,
    Router,
)
from migrate.lab.models.cilium_l2 import CiliumAgents, CiliumL2Agent
from migrate.lab.models.cilium_lbipam import CiliumLBIPAM, CiliumOperators
from migrate.lab.models.metallb_config import DEFAULT_NAMESPACE
from migrate.lab.models.metallb_controller import MetalLBController, MetalLBControllers
from migrate.lab.models.metallb_speaker import MetalLBSpeaker, MetalLBSpeakers
from migrate.lab.runtime import (
    AnnouncementRecord,
    RequestRecord,
    Scheduler,
    Timing,
    seeded,
)
from migrate.lab.store import Store
from migrate.lab.workloads import PodController, WorkloadRule, sync_deployment_status

__all__ = [
    "Announcers",
    "BGPNextHops",
    "BGPRecord",
    "BGPRoute",
    "BGPSession",
    "CiliumAgents",
    "CiliumL2Agent",
    "CiliumLBIPAM",
    "CiliumOperators",
    "Collision",
    "Controllers",
    "MetalLBController",
    "MetalLBControllers",
    "MetalLBSpeaker",
    "MetalLBSpeakers",
    "Router",
    "Runtime",
    "Timing",
    "build_controllers",
]

log = logging.getLogger("migrate.lab.models")

DEFAULT_MAX_EVENTS = 200_000


@dataclass(frozen=True)
class Announcers:
    """Who answers ARP for one IP on the wire: MetalLB's speakers and Cilium's agents.

    Interfaces are empty when the announcement is not restricted (all interfaces / devices);
    otherwise the interfaces (MetalLB) and devices (Cilium) that answer, or a Cilium policy's
    regexes on a node whose interfaces are unknown.
    """

    metallb_node: str | None = None
    cilium_node: str | None = None
    metallb_interfaces: tuple[str, ...] = ()
    cilium_interfaces: tuple[str, ...] = ()
    services: tuple[str, ...] = ()
    """Every ``namespace/name`` announced with this IP."""
    metallb_nodes: tuple[str, ...] = ()
    cilium_nodes: tuple[str, ...] = ()
    """Every distinct announcer (sharers can have different ones, e.g. one lease each)."""

    @property
    def nodes(self) -> frozenset[str]:
        """Every node answering for the IP, whichever stack it runs."""
        return frozenset(self.metallb_nodes) | frozenset(self.cilium_nodes)


class Runtime:
    """What every process of one lab shares: the store and its clock, the timing and seed,
    the scheduler, the lab's own up-to-date view, and the records."""

    def __init__(self, store: Store, timing: Timing, seed: int) -> None:
        self.store = store
        self.clock = store.clock
        self.timing = timing
        self.seed = seed
        self.rng: random.Random = seeded(seed, "lab")
        self.scheduler = Scheduler(store.clock, timing)
        self.master = Cache()
        """The lab's view: every watched object as of the last event taken from the queue
        (processes start from it)."""
        self.announcements = AnnouncementRecord()
        self.requests = RequestRecord()
        self.bgp = BGPFabric(self)
        """The upstream routers and the BGP sessions to them."""
        self.processed = 0
        self.deferred: list[Process] | None = None
        """While the lab starts: the processes to start once all are known."""

    def now(self) -> float:
        """The clock's time."""
        return self.clock.now()


class Controllers:
    """The running processes over one store (built by :func:`build_controllers`)."""

    def __init__(self, store: Store, *, metallb_namespace: str = DEFAULT_NAMESPACE,
                 cilium_namespace: str = "kube-system", metallb_lb_class: str | None = None,
                 metallb_controller: bool = True, metallb_speakers: bool = True,
                 cilium_lbipam: bool = True, cilium_l2: bool = True,
                 timing: str | Timing = "instant", seed: int = 0,
                 time_scale: float = 1.0, deployment_status: bool = False) -> None:
        self.store = store
        self.deployment_status = deployment_status
        """Whether Deployments whose pods are not modelled report spec.replicas ready."""
        self.wake = threading.Event()
        """Set on every store write (what a real-time driver waits on)."""
        chosen = Timing.named(timing)
        if time_scale != 1.0:
            chosen = chosen.scaled(time_scale)
        self.runtime = Runtime(store, chosen, seed)
        self._queue: deque[Event] = deque()
        self._queue_lock = threading.Lock()
        self._run_lock = threading.RLock()
        self.saturated = False
        """True when the last run_until_idle stopped at its budget (a write loop)."""
        self.lateness = 0.0
        """On a real clock, the most seconds a due callback ran after its moment: how far the
        models fell behind their clock (a lease renewed late may have expired meanwhile)."""
        self.metallb_controller = MetalLBControllers(
            self.runtime, namespace=metallb_namespace, lb_class=metallb_lb_class,
            enabled=metallb_controller)
        self.metallb_speaker = MetalLBSpeakers(
            self.runtime, namespace=metallb_namespace, lb_class=metallb_lb_class,
            enabled=metallb_speakers)
        self.cilium_lbipam = CiliumOperators(self.runtime, namespace=cilium_namespace,
                                             enabled=cilium_lbipam)
        self.cilium_l2 = CiliumAgents(self.runtime, namespace=cilium_namespace,
                                      enabled=cilium_l2)
        self.components: list[Component] = [self.metallb_controller, self.metallb_speaker,
                                            self.cilium_lbipam, self.cilium_l2]
        self.pods = PodController(self.runtime, _rules(self, metallb_namespace,
                                                       cilium_namespace))
        store.subscribe(self._on_store_event)
        with self._run_lock:
            self.runtime.scheduler.tick = self.runtime.now()
            self.runtime.deferred = []
            try:
                self.runtime.master.load(store)
                self._configure_routers(metallb_namespace)
                self.pods.start()
                for process in list(self.runtime.deferred):
                    process.start()
                self.runtime.deferred = None
                for component in self.components:
                    component.on_change()
                if deployment_status:
                    for deployment in store.list("apps", "Deployment"):
                        sync_deployment_status(store, deployment)
            finally:
                self.runtime.deferred = None
                self.runtime.scheduler.tick = None
        self.run_until_idle()

    def _configure_routers(self, metallb_namespace: str) -> None:
        """The routers MetalLB's BGPPeers name, as MetalLB peers with them (lab start)."""
        master = self.runtime.master
        secrets = {f"{s['metadata'].get('namespace')}/{s['metadata']['name']}": s
                   for s in master.list("", "Secret")}
        self.runtime.bgp.configure_routers(master.list("metallb.io", "BGPPeer",
                                                       metallb_namespace), secrets)

    # ----------------------------------------------------------------- accessors

    @property
    def timing(self) -> Timing:
        """How long things take in this lab."""
        return self.runtime.timing

    @property
    def seed(self) -> int:
        """The seed every process's delays are drawn from."""
        return self.runtime.seed

    @property
    def record(self) -> AnnouncementRecord:
        """Every change of who answers ARP for an IP, over the whole run."""
        return self.runtime.announcements

    @property
    def requests(self) -> RequestRecord:
        """Every API call the model processes made."""
        return self.runtime.requests

    @property
    def bgp_record(self) -> BGPRecord:
        """Every change of a prefix's next hops at each router, and every collision."""
        return self.runtime.bgp.record

    def now(self) -> float:
        """The lab clock's time."""
        return self.runtime.now()

    # ----------------------------------------------------------------- events

    def _on_store_event(self, event_type: str, obj: Obj, old: Obj | None) -> None:
        with self._queue_lock:
            self._queue.append(Event(event_type, obj, old))
        self.wake.set()

    def pending(self) -> int:
        """Store events queued and not yet taken."""
        with self._queue_lock:
            return len(self._queue)

    def _ingest(self, event: Event) -> None:
        """One store event: the lab's view, the pod controller, then every process that
        watches its kind (each after its own delay)."""
        if not self.runtime.master.apply(event):
            return
        if (self.deployment_status and event.type != "DELETED"
                and event.group_kind == ("apps", "Deployment")):
            sync_deployment_status(self.store, event.obj)
        self.pods.handle(event)
        for component in self.components:
            component.enqueue(event)

    def run_until_idle(self, max_events: int = DEFAULT_MAX_EVENTS) -> int:
        """Take queued events one at a time, each followed by whatever is due by now, until
        nothing is left; returns how many steps ran.

        Stops after ``max_events`` steps (setting :attr:`saturated`) so that a write loop
        between models, such as two controllers fighting over a Service's status, cannot hang.
        """
        scheduler = self.runtime.scheduler
        with self._run_lock:
            outer = scheduler.tick
            scheduler.tick = self.runtime.now() if outer is None else outer
            try:
                return self._run(max_events)
            finally:
                scheduler.tick = outer

    def _run(self, max_events: int) -> int:
        steps = 0
        scheduler = self.runtime.scheduler
        self.saturated = False
        real = not self.store.clock.is_manual
        while True:
            now = self.runtime.now()
            timer = scheduler.pop_due(max(now, scheduler.base()))
            if timer is not None:
                if steps >= max_events:
                    scheduler.at(timer.due, timer.callback, label=timer.label)
                    return self._saturate(steps)
                if real and now - timer.due > self.lateness:
                    self.lateness = now - timer.due
                steps += 1
                timer.callback()
                continue
            with self._queue_lock:
                if not self._queue:
                    return steps
                event = self._queue.popleft()
            if steps >= max_events:
                with self._queue_lock:
                    self._queue.appendleft(event)
                return self._saturate(steps)
            steps += 1
            self._ingest(event)

    def _saturate(self, steps: int) -> int:
        self.saturated = True
        log.warning("controller models still busy after %d steps", steps)
        return steps

    # ----------------------------------------------------------------- time

    def advance(self, seconds: float) -> None:
        """Move a manual clock by ``seconds``, stopping at every due moment on the way
        (virtual time), or, on a real clock, run whatever is due now."""
        clock = self.store.clock
        with self._run_lock:
            self.run_until_idle()
            if not clock.is_manual:
                return
            target = clock.now() + max(0.0, seconds)
            scheduler = self.runtime.scheduler
            while True:
                due = scheduler.next_due()
                if due is None or due > target:
                    break
                now = clock.now()
                if due > now:
                    clock.advance(due - now)
                self.run_until_idle()
            now = clock.now()
            if target > now:
                clock.advance(target - now)
            self.run_until_idle()

    def sleep(self, seconds: float) -> None:
        """What a client waiting on the lab does: virtual time moves on a manual clock;
        on a real clock, real time passes and what is due runs."""
        if self.store.clock.is_manual:
            self.advance(seconds)
        else:
            time.sleep(seconds)
            self.run_until_idle()

    # ----------------------------------------------------------------- switches

    def set_enabled(self, component: Component, enabled: bool) -> None:
        """Switch one component on (its processes start from the current state) or off (they
        stop at once, as if killed: nothing is released)."""
        with self._run_lock:
            self.run_until_idle()
            component.set_enabled(enabled)
            self.run_until_idle()

    def close(self) -> None:
        """Stop listening to the store (the webhook of MetalLB's controller goes too)."""
        self.store.unsubscribe(self._on_store_event)
        self.store.remove_admission_hook(self.metallb_controller.admission_hook)

    # ----------------------------------------------------------------- the wire's view

    def announcements(self) -> dict[str, Announcers]:
        """Per IP answered on the wire by either stack now, who answers (see
        :class:`Announcers`). The ARP test wire follows this view."""
        with self._run_lock:
            metallb: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {}
            if self.metallb_speaker.enabled:
                for speaker in self.metallb_speaker.models():
                    for key, ips in speaker.on_wire.items():
                        ann = speaker.announced.get(key)
                        interfaces = (speaker.answering_interfaces(ann) or ()) if ann else ()
                        for ip in ips:
                            metallb.setdefault(ip, []).append((key, speaker.node, interfaces))
            cilium: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {}
            for cann in self.cilium_l2.announcements():
                for ip in cann.ips:
                    cilium.setdefault(ip, []).append((cann.service, cann.node, cann.interfaces))
        out: dict[str, Announcers] = {}
        for ip in sorted(set(metallb) | set(cilium)):
            m = sorted(metallb.get(ip, []))
            c = sorted(cilium.get(ip, []))
            out[ip] = Announcers(
                metallb_node=m[0][1] if m else None,
                cilium_node=c[0][1] if c else None,
                metallb_interfaces=m[0][2] if m else (),
                cilium_interfaces=c[0][2] if c else (),
                services=tuple(sorted({s for s, _, _ in m} | {s for s, _, _ in c})),
                metallb_nodes=tuple(sorted({n for _, n, _ in m})),
                cilium_nodes=tuple(sorted({n for _, n, _ in c})),
            )
        return out


    # ----------------------------------------------------------------- BGP's view

    def bgp_sessions(self) -> list[BGPSession]:
        """Every BGP session a speaker runs now, by node, stack (``metallb``, ``cilium``) and
        peer: is it Established, with which peer (address, ASNs, port, password Secret,
        multihop, timers), and which routes it advertises to it (communities, local
        preference, aggregated prefixes). See :class:`~migrate.lab.models.bgp.BGPSession`."""
        with self._run_lock:
            return self.runtime.bgp.view()

    def bgp_announcements(self) -> dict[str, BGPNextHops]:
        """Per prefix some upstream router routes now: its next-hop nodes, per stack."""
        with self._run_lock:
            return self.runtime.bgp.next_hops()

    def bgp_routers(self) -> list[Router]:
        """The upstream routers (configured from MetalLB's BGPPeers at the lab's start)."""
        return sorted(self.runtime.bgp.routers.values(), key=lambda r: r.address)


def _rules(controllers: Controllers, metallb_namespace: str,
           cilium_namespace: str) -> list[WorkloadRule]:
    """Which workloads and pods belong to which component (Helm charts' and manifests'
    names and labels, reference/metallb.md §9 and the Cilium chart)."""
    return [
        WorkloadRule(
            controllers.metallb_controller, "Deployment", metallb_namespace, "controller",
            lambda labels: labels.get("app.kubernetes.io/component") == "controller"
            and labels.get("app.kubernetes.io/name") == "metallb",
            lambda labels: labels.get("component") == "controller"
            or labels.get("app.kubernetes.io/component") == "controller"),
        WorkloadRule(
            controllers.metallb_speaker, "DaemonSet", metallb_namespace, "speaker",
            lambda labels: labels.get("app.kubernetes.io/component") == "speaker",
            lambda labels: labels.get("component") == "speaker"
            or labels.get("app.kubernetes.io/component") == "speaker"),
        WorkloadRule(
            controllers.cilium_lbipam, "Deployment", cilium_namespace, "cilium-operator",
            lambda labels: labels.get("io.cilium/app") == "operator",
            lambda labels: labels.get("io.cilium/app") == "operator"
            or labels.get("name") == "cilium-operator"),
        WorkloadRule(
            controllers.cilium_l2, "DaemonSet", cilium_namespace, "cilium",
            lambda labels: labels.get("k8s-app") == "cilium",
            lambda labels: labels.get("k8s-app") == "cilium"),
    ]


def build_controllers(
    store: Store,
    *,
    metallb_controller: bool = True,
    metallb_speakers: bool = True,
    cilium_lbipam: bool = True,
    cilium_l2: bool = True,
    metallb_namespace: str = DEFAULT_NAMESPACE,
    cilium_namespace: str = "kube-system",
    metallb_lb_class: str | None = None,
    deployment_status: bool = True,
    timing: str | Timing = "instant",
    seed: int = 0,
    time_scale: float = 1.0,
) -> Controllers:
    """Start the models (each component switchable) over ``store`` from its current state.

    ``timing``: ``"instant"`` (every reaction in the tick of its cause, no grace period, the
    lab before it had time), ``"realistic"`` (each process reacts after its own delay, pods
    start and stop in their own time), or a :class:`~migrate.lab.runtime.Timing`. ``seed``
    makes a realistic run reproducible; ``time_scale`` multiplies every modelled duration.
    Whatever the store already holds is processed at once (e.g. MetalLB re-adopts status IPs,
    LB-IPAM imports them if pools exist); later writes are processed by
    :meth:`Controllers.run_until_idle` or :meth:`Controllers.advance`. ``deployment_status``:
    Deployments whose pods are not modelled report ``spec.replicas`` ready at once.
    """
    controllers = Controllers(
        store, metallb_namespace=metallb_namespace, cilium_namespace=cilium_namespace,
        metallb_lb_class=metallb_lb_class, metallb_controller=metallb_controller,
        metallb_speakers=metallb_speakers, cilium_lbipam=cilium_lbipam, cilium_l2=cilium_l2,
        timing=timing, seed=seed, time_scale=time_scale, deployment_status=deployment_status)
    return controllers
