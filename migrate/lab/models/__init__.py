"""Controller models for the lab: MetalLB's controller and speakers, Cilium's LB-IPAM operator
and L2 announcer, run over the lab's object store.

:func:`build_controllers` subscribes them to a :class:`~migrate.lab.store.Store`. Store writes
queue events; :meth:`Controllers.run_until_idle` feeds them to the models one at a time, in
commit order (writes the models make queue further events); :meth:`Controllers.advance` moves
the clock and runs the timers (lease renewal and expiry). :meth:`Controllers.announcements`
tells, per IP, which node answers ARP for MetalLB and which for Cilium.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass

from migrate.lab.models._common import Cache, Event, Model, Obj
from migrate.lab.models.cilium_l2 import CiliumL2Announcer
from migrate.lab.models.cilium_lbipam import CiliumLBIPAM
from migrate.lab.models.metallb_controller import DEFAULT_NAMESPACE, MetalLBController
from migrate.lab.models.metallb_speaker import MetalLBSpeaker
from migrate.lab.store import Store

__all__ = [
    "Announcers",
    "CiliumL2Announcer",
    "CiliumLBIPAM",
    "Controllers",
    "MetalLBController",
    "MetalLBSpeaker",
    "build_controllers",
]

log = logging.getLogger("migrate.lab.models")

DEFAULT_MAX_EVENTS = 200_000


@dataclass(frozen=True)
class Announcers:
    """Who answers ARP for one IP: MetalLB's elected speaker and Cilium's lease holder.

    Interfaces are empty when the announcement is not restricted (all interfaces / devices);
    MetalLB's are interface names [M3], Cilium's the policies' regexes [C2].
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


class Controllers:
    """The running models over one store (built by :func:`build_controllers`)."""

    def __init__(self, store: Store, *, metallb_namespace: str = DEFAULT_NAMESPACE,
                 cilium_namespace: str = "kube-system", metallb_lb_class: str | None = None,
                 metallb_controller: bool = True, metallb_speakers: bool = True,
                 cilium_lbipam: bool = True, cilium_l2: bool = True) -> None:
        self.store = store
        self.cache = Cache()
        self._queue: deque[Event] = deque()
        self._queue_lock = threading.Lock()
        self._run_lock = threading.RLock()
        self.saturated = False
        """True when the last run_until_idle stopped at its event budget (a write loop)."""
        self.metallb_controller = MetalLBController(
            store, self.cache, namespace=metallb_namespace, lb_class=metallb_lb_class,
            enabled=metallb_controller)
        self.metallb_speaker = MetalLBSpeaker(
            store, self.cache, namespace=metallb_namespace, lb_class=metallb_lb_class,
            enabled=metallb_speakers)
        self.cilium_lbipam = CiliumLBIPAM(store, self.cache, namespace=cilium_namespace,
                                          enabled=cilium_lbipam)
        self.cilium_l2 = CiliumL2Announcer(store, self.cache, namespace=cilium_namespace,
                                           enabled=cilium_l2)
        self.models: list[Model] = [self.metallb_controller, self.metallb_speaker,
                                    self.cilium_lbipam, self.cilium_l2]
        store.subscribe(self._on_store_event)
        with self._run_lock:
            self.cache.load(store)
            for model in self.models:
                if model.enabled:
                    model.start()
        self.run_until_idle()

    # ----------------------------------------------------------------- events

    def _on_store_event(self, event_type: str, obj: Obj, old: Obj | None) -> None:
        with self._queue_lock:
            self._queue.append(Event(event_type, obj, old))

    def pending(self) -> int:
        """Events queued and not yet processed."""
        with self._queue_lock:
            return len(self._queue)

    def run_until_idle(self, max_events: int = DEFAULT_MAX_EVENTS) -> int:
        """Process queued events one at a time until none is left; returns how many.

        Stops after ``max_events`` (setting :attr:`saturated`) so that a write loop between
        models, such as two controllers fighting over a Service's status, cannot hang.
        """
        processed = 0
        with self._run_lock:
            self.saturated = False
            while True:
                with self._queue_lock:
                    if not self._queue:
                        return processed
                    event = self._queue.popleft()
                if processed >= max_events:
                    with self._queue_lock:
                        self._queue.appendleft(event)
                    self.saturated = True
                    log.warning("controller models still busy after %d events", processed)
                    return processed
                processed += 1
                if not self.cache.apply(event):
                    continue
                for model in self.models:
                    if model.enabled:
                        model.handle(event)

    # ----------------------------------------------------------------- time

    def advance(self, seconds: float) -> None:
        """Move a manual clock by ``seconds`` (stopping at every timer on the way), or, on a
        real clock, run whatever timers are due now; events are processed after each step."""
        clock = self.store.clock
        with self._run_lock:
            self.run_until_idle()
            if not clock.is_manual:
                self._fire(clock.now())
                return
            target = clock.now() + seconds
            while True:
                due = self._next_deadline()
                if due is None or due > target:
                    break
                now = clock.now()
                if due > now:
                    clock.advance(due - now)
                self._fire(clock.now())
            now = clock.now()
            if target > now:
                clock.advance(target - now)
            self._fire(clock.now())

    def _next_deadline(self) -> float | None:
        times = [t for m in self.models if m.enabled and (t := m.next_deadline()) is not None]
        return min(times) if times else None

    def _fire(self, now: float) -> None:
        for model in self.models:
            deadline = model.next_deadline() if model.enabled else None
            if deadline is not None and deadline <= now:
                model.on_time(now)
        self.run_until_idle()

    # ----------------------------------------------------------------- switches

    def set_enabled(self, model: Model, enabled: bool) -> None:
        """Switch one model on (it starts from the current state) or off."""
        with self._run_lock:
            self.run_until_idle()
            model.set_enabled(enabled)
            self.run_until_idle()

    def close(self) -> None:
        """Stop listening to the store (the admission hook of the MetalLB model goes too)."""
        self.store.unsubscribe(self._on_store_event)
        self.store.remove_admission_hook(self.metallb_controller._admission_hook)

    # ----------------------------------------------------------------- the wire's view

    def announcements(self) -> dict[str, Announcers]:
        """Per IP currently announced by either stack, who answers for it (see
        :class:`Announcers`). The ARP test wire follows this view."""
        with self._run_lock:
            metallb: dict[str, list[tuple[str, str, tuple[str, ...]]]] = {}
            if self.metallb_speaker.enabled:
                for ann in self.metallb_speaker.announced.values():
                    for ip in ann.ips:
                        metallb.setdefault(ip, []).append((ann.service, ann.node, ann.interfaces))
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
) -> Controllers:
    """Start the models (each switchable) over ``store`` from its current state.

    Whatever the store already holds is processed at once (e.g. MetalLB re-adopts status IPs,
    LB-IPAM imports them if pools exist); later writes are processed by
    :meth:`Controllers.run_until_idle` or :meth:`Controllers.advance`.
    """
    if deployment_status:
        # Deployment status follows spec, as the controller manager would report it once the
        # pods start or stop; migrate waits on it after scaling workloads.
        from migrate.lab.workloads import DeploymentStatus

        DeploymentStatus(store)
    return Controllers(
        store, metallb_namespace=metallb_namespace, cilium_namespace=cilium_namespace,
        metallb_lb_class=metallb_lb_class, metallb_controller=metallb_controller,
        metallb_speakers=metallb_speakers, cilium_lbipam=cilium_lbipam, cilium_l2=cilium_l2)
