"""Time for the lab's controller models: timings, a discrete-event scheduler, and the records a
test reads after a run (who answered ARP when, which API calls the models made).

Every model process reacts to what it sees after its own delay, drawn from a seeded
distribution per kind of process (:class:`Timing`); pods start after a start delay and exit at
a seeded moment within their grace period. The :class:`Scheduler` holds what is due when, on
the store's clock: a manual clock is stepped from one due moment to the next (virtual time: a
30 s grace period costs no wall time), a real clock just runs what is due now. Two runs with
the same seed make the same sequence of model events.

``Timing.instant()`` keeps the lab as it was before processes had delays: every reaction in the
same tick, no grace period, no start delay (what the engine tests that predate the asynchronous
lab run on). ``Timing.realistic()`` is the asynchronous cluster.
"""

from __future__ import annotations

import hashlib
import heapq
import itertools
import random
import threading
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

from migrate.lab.store import Clock

METALLB_CONTROLLER = "metallb-controller"
METALLB_SPEAKER = "metallb-speaker"
CILIUM_OPERATOR = "cilium-operator"
CILIUM_AGENT = "cilium-agent"
CONTROLLER_MANAGER = "kube-controller-manager"
PROCESS_KINDS = (METALLB_CONTROLLER, METALLB_SPEAKER, CILIUM_OPERATOR, CILIUM_AGENT,
                 CONTROLLER_MANAGER)


# --------------------------------------------------------------------------- timings


@dataclass(frozen=True)
class Delay:
    """A uniformly distributed duration in seconds (``low == high``: fixed)."""

    low: float = 0.0
    high: float = 0.0

    def sample(self, rng: random.Random) -> float:
        """One draw (no draw at all for a fixed delay, so instant runs use no randomness)."""
        if self.high <= self.low:
            return self.low
        return rng.uniform(self.low, self.high)


ZERO = Delay()


@dataclass(frozen=True)
class Timing:
    """How long things take in the lab, per kind of process (``PROCESS_KINDS``).

    ``reaction``: from an API change to the process handling it (watch latency, informer,
    work queue); each process of a kind draws its own. ``start``: from a pod's creation to its
    process running (image pull, container start, informer sync). ``exit``: when a Terminating
    pod's process exits, as a fraction of its ``terminationGracePeriodSeconds``. ``datapath``:
    from a decision to announce (or stop) to the wire answering accordingly. ``lease_jitter``:
    client-go's ``JitterFactor`` on lease acquisition retries (1.2 upstream). ``bgp_connect``:
    from a BGP session being configured to the outcome of its connection attempt (TCP, OPEN,
    KEEPALIVE: RFC 4271 §8). ``frr_reload``: MetalLB's FRR modes apply a changed configuration
    after a debounce (``--bgp-debounce-timeout``, 3 s by default, speaker/main.go) and
    frr-reload.py. ``bgp_status``: how often a Cilium agent writes its CiliumBGPNodeConfig
    status (``CRDStatusUpdateInterval``, 5 s with jitter,
    pkg/bgpv1/manager/reconcilerv2/crd_status.go). ``scale``
    multiplies every modelled duration (``serve --time-scale``), lease periods and grace
    periods included; what the objects say stays unscaled (a Lease keeps the
    ``leaseDurationSeconds`` cilium-config gives, a Terminating pod its
    ``deletionTimestamp`` of now + grace).
    """

    name: str
    reaction: dict[str, Delay] = field(default_factory=dict)
    start: dict[str, Delay] = field(default_factory=dict)
    exit: Delay = ZERO
    datapath: Delay = ZERO
    lease_jitter: float = 0.0
    bgp_connect: Delay = ZERO
    frr_reload: Delay = ZERO
    bgp_status: Delay = ZERO
    replace_deleted_pods: bool = False
    """Whether a pod deleted through the API is replaced by its DaemonSet/ReplicaSet (a
    real cluster always does; the instant lab did not, and tests of a missing agent rely on
    that)."""
    scale: float = 1.0

    @classmethod
    def instant(cls) -> Timing:
        """Every reaction in the tick of the change; pods start and stop at once."""
        return cls("instant")

    @classmethod
    def realistic(cls) -> Timing:
        """An asynchronous cluster. Reactions: watch events reach a controller within tens to
        hundreds of milliseconds; a speaker reloads its configuration on its own (metallb
        ``internal/k8s/controllers/config_controller.go``), each Cilium agent handles its own
        informer events (``pkg/l2announcer/l2announcer.go``). Starts: a MetalLB controller or
        speaker is up within seconds; Cilium's operator needs its informers synced and the
        leader lease; an agent restores its state before the L2 announcer runs. Exit: a pod
        stops somewhere within its grace period."""
        return cls(
            "realistic",
            reaction={
                METALLB_CONTROLLER: Delay(0.05, 0.5),
                METALLB_SPEAKER: Delay(0.05, 1.5),
                CILIUM_OPERATOR: Delay(0.05, 0.5),
                CILIUM_AGENT: Delay(0.05, 1.5),
                CONTROLLER_MANAGER: Delay(0.01, 0.3),
            },
            start={
                METALLB_CONTROLLER: Delay(2.0, 8.0),
                METALLB_SPEAKER: Delay(2.0, 10.0),
                CILIUM_OPERATOR: Delay(5.0, 20.0),
                CILIUM_AGENT: Delay(20.0, 45.0),
                CONTROLLER_MANAGER: ZERO,
            },
            exit=Delay(0.05, 1.0),
            datapath=Delay(0.01, 0.2),
            lease_jitter=1.2,
            bgp_connect=Delay(0.2, 1.5),
            frr_reload=Delay(3.2, 5.0),
            bgp_status=Delay(4.5, 5.5),
            replace_deleted_pods=True,
        )

    @classmethod
    def named(cls, timing: str | Timing) -> Timing:
        """``"instant"``, ``"realistic"`` or a Timing as given."""
        if isinstance(timing, Timing):
            return timing
        if timing == "instant":
            return cls.instant()
        if timing == "realistic":
            return cls.realistic()
        raise ValueError(f"unknown lab timing {timing!r} (instant or realistic)")

    def scaled(self, scale: float) -> Timing:
        """The same timing with every duration multiplied by ``scale``."""
        if scale <= 0:
            raise ValueError("the time scale must be positive")
        return replace(self, scale=scale)

    @property
    def is_instant(self) -> bool:
        """True when nothing takes time (every reaction in the tick of its cause)."""
        return (all(d.high <= 0 for d in self.reaction.values())
                and all(d.high <= 0 for d in self.start.values()) and self.exit.high <= 0)

    def reaction_of(self, kind: str) -> Delay:
        """The reaction delay of a kind of process."""
        return self.reaction.get(kind, ZERO)

    def start_of(self, kind: str) -> Delay:
        """The start delay of a kind of process."""
        return self.start.get(kind, ZERO)


def seeded(seed: int, *parts: str) -> random.Random:
    """A generator for one process, derived from the run's seed and the process's name, so
    that adding a process does not change what the others draw."""
    digest = hashlib.sha256("/".join((str(seed), *parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# --------------------------------------------------------------------------- the scheduler


class Timer:
    """One scheduled callback; :meth:`cancel` makes it a no-op."""

    __slots__ = ("callback", "cancelled", "due", "label")

    def __init__(self, due: float, callback: Callable[[], None], label: str) -> None:
        self.due = due
        self.callback = callback
        self.cancelled = False
        self.label = label

    def cancel(self) -> None:
        """Do not run (idempotent)."""
        self.cancelled = True


class Scheduler:
    """Callbacks due at moments of the store's clock, run in (time, tie-break, order) order.

    The tie-break orders callbacks due at the very same moment (lease races of the instant
    timing, see :func:`migrate.lab.models.cilium_l2.race_order`); the insertion order decides
    otherwise, so that a change and its consequences keep the order they were made in.
    """

    def __init__(self, clock: Clock, timing: Timing) -> None:
        self.clock = clock
        self.timing = timing
        self._heap: list[tuple[float, str, int, Timer]] = []
        self._seq = itertools.count()
        self.tick: float | None = None
        """The moment the current round of work started (set by the lab while it runs): a
        delay counts from it, so that what a round starts at the same moment stays at the
        same moment on a real clock too (ties then break by key, not by microseconds)."""

    def now(self) -> float:
        """The clock's time."""
        return self.clock.now()

    def base(self) -> float:
        """Where delays count from: with the instant timing the current round's start (so
        that attempts a round makes at once stay simultaneous on a real clock), else now."""
        if self.tick is not None and self.timing.is_instant:
            return self.tick
        return self.clock.now()

    def at(self, due: float, callback: Callable[[], None], *, key: str = "",
           label: str = "") -> Timer:
        """Run ``callback`` at ``due`` (clock seconds)."""
        timer = Timer(due, callback, label)
        heapq.heappush(self._heap, (due, key, next(self._seq), timer))
        return timer

    def after(self, seconds: float, callback: Callable[[], None], *, key: str = "",
              label: str = "") -> Timer:
        """Run ``callback`` after a modelled duration (multiplied by the time scale)."""
        return self.at(self.base() + seconds * self.timing.scale, callback, key=key, label=label)

    def next_due(self) -> float | None:
        """When the next live callback is due, or None."""
        while self._heap and self._heap[0][3].cancelled:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    def pop_due(self, now: float) -> Timer | None:
        """The next live callback due at or before ``now`` (removed), or None."""
        while self._heap:
            due, _, _, timer = self._heap[0]
            if timer.cancelled:
                heapq.heappop(self._heap)
                continue
            if due > now:
                return None
            heapq.heappop(self._heap)
            return timer
        return None

    def __len__(self) -> int:
        return sum(1 for entry in self._heap if not entry[3].cancelled)


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class AnnouncementChange:
    """Who answers ARP for one IP from ``time`` on (until the IP's next change)."""

    time: float
    ip: str
    metallb: tuple[str, ...]
    cilium: tuple[str, ...]

    @property
    def nodes(self) -> frozenset[str]:
        """Every node answering, whichever stack."""
        return frozenset(self.metallb) | frozenset(self.cilium)


@dataclass(frozen=True)
class Span:
    """A stretch of time for one IP (``end`` None: still going at the end of the record)."""

    ip: str
    start: float
    end: float | None
    nodes: tuple[str, ...] = ()

    def length(self, until: float) -> float:
        """Its length, an open span counted up to ``until``."""
        return (self.end if self.end is not None else until) - self.start


class AnnouncementRecord:
    """Every change of who answers ARP for an IP, as the wire would see it.

    Fed by the speaker and agent processes (an announcement counts once it is on the wire:
    after the datapath delay, on an interface the node has). ``changes`` lists them in time
    order; :meth:`overlaps` and :meth:`silences` answer "were there ever two announcers?" and
    "how long was an IP unanswered?" over a whole run.
    """

    def __init__(self) -> None:
        self.changes: list[AnnouncementChange] = []
        self._counts: dict[str, Counter[tuple[str, str]]] = {}

    def answer(self, time: float, stack: str, node: str, ip: str, answering: bool) -> None:
        """One (stack, node) starts or stops answering for ``ip`` (counted per Service that
        wants it, so two Services sharing an IP on one node need two stops)."""
        counts = self._counts.setdefault(ip, Counter())
        before = self._who(counts)
        if answering:
            counts[(stack, node)] += 1
        elif counts[(stack, node)] > 0:
            counts[(stack, node)] -= 1
            if counts[(stack, node)] == 0:
                del counts[(stack, node)]
        after = self._who(counts)
        if after != before:
            self.changes.append(AnnouncementChange(time, ip, *after))

    @staticmethod
    def _who(counts: Counter[tuple[str, str]]) -> tuple[tuple[str, ...], tuple[str, ...]]:
        metallb = tuple(sorted(n for (s, n), c in counts.items() if s == "metallb" and c > 0))
        cilium = tuple(sorted(n for (s, n), c in counts.items() if s == "cilium" and c > 0))
        return metallb, cilium

    def current(self) -> dict[str, AnnouncementChange]:
        """The last change of every IP ever announced."""
        last: dict[str, AnnouncementChange] = {}
        for change in self.changes:
            last[change.ip] = change
        return last

    def ips(self) -> list[str]:
        """Every IP that appears in the record."""
        return sorted({c.ip for c in self.changes})

    def _by_ip(self) -> dict[str, list[AnnouncementChange]]:
        out: dict[str, list[AnnouncementChange]] = {}
        for change in self.changes:
            out.setdefault(change.ip, []).append(change)
        return out

    def overlaps(self, *, same_node_counts: bool = False) -> list[Span]:
        """Every stretch in which more than one node answered an IP (two MACs on the wire).
        With ``same_node_counts`` both stacks answering from one node count too."""
        spans: list[Span] = []
        for ip, changes in self._by_ip().items():
            for change, following in _pairs(changes):
                many = len(change.nodes) > 1 or (
                    same_node_counts and bool(change.metallb) and bool(change.cilium))
                if many:
                    spans.append(Span(ip, change.time,
                                      following.time if following else None,
                                      tuple(sorted(change.nodes))))
        return sorted(spans, key=lambda s: (s.start, s.ip))

    def silences(self, ip: str | None = None) -> list[Span]:
        """Every stretch, after an IP was first answered, in which nobody answered it."""
        spans: list[Span] = []
        for each, changes in self._by_ip().items():
            if ip is not None and each != ip:
                continue
            for change, following in _pairs(changes):
                if not change.nodes:
                    spans.append(Span(each, change.time,
                                      following.time if following else None))
        return sorted(spans, key=lambda s: (s.start, s.ip))

    def cutover_silences(self) -> dict[str, float]:
        """Per IP that went from MetalLB to Cilium: how long nobody answered between MetalLB's
        last answer and Cilium's first (0.0 when both answered at once)."""
        out: dict[str, float] = {}
        for ip, changes in self._by_ip().items():
            first = next((i for i, c in enumerate(changes) if c.cilium), None)
            if first is None:
                continue
            if changes[first].metallb:
                out[ip] = 0.0
                continue
            last = max((i for i in range(first) if changes[i].metallb), default=None)
            if last is not None:
                out[ip] = changes[first].time - changes[last + 1].time
        return out

    def __len__(self) -> int:
        return len(self.changes)


def _pairs(changes: list[AnnouncementChange]) -> Iterator[
        tuple[AnnouncementChange, AnnouncementChange | None]]:
    for index, change in enumerate(changes):
        yield change, changes[index + 1] if index + 1 < len(changes) else None


@dataclass(frozen=True)
class Request:
    """One API call a model process made (``verb`` GET, LIST, CREATE, UPDATE, DELETE)."""

    time: float
    process: str
    verb: str
    resource: str
    name: str


class RequestRecord:
    """The API calls the model processes make, as the API server would count them (the
    lab's models call the store directly, so the HTTP request log does not see them)."""

    def __init__(self, size: int = 500_000) -> None:
        self._lock = threading.Lock()
        self.recent: deque[Request] = deque(maxlen=size)
        self.totals: Counter[tuple[str, str]] = Counter()
        """(verb, resource) -> count, over the whole run."""

    def add(self, time: float, process: str, verb: str, resource: str, name: str) -> None:
        """Record one call."""
        with self._lock:
            self.recent.append(Request(time, process, verb, resource, name))
            self.totals[(verb, resource)] += 1

    def count(self, *, verb: str | None = None, resource: str | None = None,
              since: float | None = None, until: float | None = None,
              process: str | None = None) -> int:
        """Calls in the recent window matching every criterion given (``process`` matches a
        prefix of the process name, e.g. ``cilium-agent``)."""
        return sum(1 for r in self.select(verb=verb, resource=resource, since=since,
                                          until=until, process=process))

    def select(self, *, verb: str | None = None, resource: str | None = None,
               since: float | None = None, until: float | None = None,
               process: str | None = None) -> Iterable[Request]:
        """The matching calls of the recent window, oldest first."""
        with self._lock:
            recent = list(self.recent)
        for r in recent:
            if verb is not None and r.verb != verb:
                continue
            if resource is not None and r.resource != resource:
                continue
            if since is not None and r.time < since:
                continue
            if until is not None and r.time >= until:
                continue
            if process is not None and not r.process.startswith(process):
                continue
            yield r
