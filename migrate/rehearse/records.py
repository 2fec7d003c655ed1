"""What the rehearsal reads of the twin's records: the adapter between the lab and the checks.

Three records, each read from a :class:`Mark` on (a position in every record, taken at the
start of a stage, so a stage's share can be read back):

- the **status writes** of the store (every write that touched a Service's ingress IPs, with
  the field manager that made it): invariant I1;
- the **announcement record**: every change of who answers ARP for an IP, MetalLB's speakers
  and Cilium's lease holders apart (invariant I2, the cutover silence, the report's timelines);
- the **request log** of each API door (what one client sent, in order): writes per stage,
  the expected duration, the fault points of ``--chaos``.

On the lab of today the models keep no announcement record, so :class:`AnnouncementObserver`
builds one: it rides along as the last model and samples ``Controllers.announcements()`` after
every event that can change it. The asynchronous lab keeps its own record
(``Controllers.record``, changes of the same shape); :func:`announcement_source` uses it when
it is there, and then the observer goes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, cast

if TYPE_CHECKING:
    from migrate.lab.models import Controllers
    from migrate.lab.server import LabServer
    from migrate.lab.store import Store


@dataclass(frozen=True)
class AnnouncementChange:
    """Who answers ARP for one IP from ``time`` on (until its next change); the shape of the
    asynchronous lab's ``migrate.lab.runtime.AnnouncementChange``."""

    time: float
    ip: str
    metallb: tuple[str, ...]
    cilium: tuple[str, ...]

    @property
    def nodes(self) -> frozenset[str]:
        """Every node answering, whichever stack."""
        return frozenset(self.metallb) | frozenset(self.cilium)

    @property
    def doubled(self) -> bool:
        """Two announcers: two nodes, or MetalLB and Cilium at once (I2)."""
        return len(self.nodes) > 1 or (bool(self.metallb) and bool(self.cilium))


@dataclass(frozen=True)
class StatusChange:
    """One write that touched a Service's ``status.loadBalancer.ingress``."""

    time: float
    service: str
    """``namespace/name``."""
    manager: str
    before: tuple[str, ...]
    after: tuple[str, ...]


@dataclass(frozen=True)
class Request:
    """One request an API door served: its method and path (with the query)."""

    method: str
    path: str

    @property
    def is_write(self) -> bool:
        """POST, PUT, PATCH or DELETE."""
        return self.method in ("POST", "PUT", "PATCH", "DELETE")

    @property
    def resource(self) -> str:
        """The resource plural of the path (``services``), ``""`` for discovery."""
        parts = [p for p in self.path.split("?")[0].split("/") if p]
        if parts[:1] == ["api"]:
            rest = parts[2:]
        elif parts[:1] == ["apis"]:
            rest = parts[3:]
        else:
            return ""
        if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) != 2:
            rest = rest[2:]
        return rest[0] if rest else ""


@dataclass(frozen=True)
class Mark:
    """A position in every record (and the twin's time) to read what happened since."""

    time: float
    status_writes: int
    announcements: int
    resource_version: int


class AnnouncementSource(Protocol):
    """Where announcement changes come from (the observer, or the lab's own record)."""

    @property
    def changes(self) -> Sequence[Any]: ...


class AnnouncementObserver:
    """Builds the announcement record on a lab whose models keep none (see the module doc).

    Registered as the last model of the controllers, it notes each event that can change who
    answers (not lease renewals, workload status or migrate's own ConfigMaps); the record is
    sampled after the models have handled a batch of events (after each client request on
    virtual time, after each round on a real clock) and whenever the twin's time moves. A
    state that begins and ends inside one batch is not seen: on this lab that is one API
    write and its consequences, handled in a single tick.
    """

    name = "announcement-observer"
    manager = "lab-observer"

    def __init__(self, controllers: Controllers) -> None:
        self.controllers = controllers
        self.changes: list[AnnouncementChange] = []
        self._last: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {}
        self._dirty = True
        self._lock = threading.Lock()  # the models' thread and the rehearsal's both sample
        self.sample()

    # -- the Model protocol the controllers drive ----------------------------------------------
    enabled = True

    def handle(self, event: Any) -> None:
        """Note an event that may change who answers."""
        _, kind = event.group_kind
        if kind in ("Deployment", "ServiceL2Status", "CiliumLoadBalancerIPPool",
                    "ValidatingWebhookConfiguration", "Event"):
            return
        if kind == "ConfigMap" and str((event.obj.get("metadata") or {}).get(
                "name", "")).startswith("lbmigrate-"):
            return
        if kind == "Lease" and event.type == "MODIFIED" and event.old is not None and (
                (event.obj.get("spec") or {}).get("holderIdentity")
                == (event.old.get("spec") or {}).get("holderIdentity")):
            return
        self._dirty = True

    def next_deadline(self) -> float | None:
        return None

    def on_time(self, now: float) -> None:
        return None

    def set_enabled(self, enabled: bool) -> None:
        return None

    def start(self) -> None:
        return None

    def stop(self) -> None:
        return None

    # -- sampling ------------------------------------------------------------------------------
    def sample(self) -> None:
        """Record every IP whose answerers differ from the last sample (if anything that can
        change them happened since)."""
        with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            now = self.controllers.store.clock.now()
            view = {ip: (tuple(a.metallb_nodes), tuple(a.cilium_nodes))
                    for ip, a in self.controllers.announcements().items()}
            for ip in sorted(set(view) | set(self._last)):
                who = view.get(ip, ((), ()))
                if self._last.get(ip, ((), ())) != who:
                    self.changes.append(AnnouncementChange(now, ip, *who))
            self._last = {ip: who for ip, who in view.items() if who != ((), ())}


def announcement_source(controllers: Controllers) -> tuple[AnnouncementSource, Callable[[], None]]:
    """The lab's announcement record and a function that samples it now: the asynchronous
    lab's own (``Controllers.record``; nothing to sample), else an observer registered here."""
    record = getattr(controllers, "record", None)
    if record is not None and hasattr(record, "changes"):
        return record, lambda: None
    observer = AnnouncementObserver(controllers)
    cast(Any, controllers).models.append(observer)  # a duck-typed Model, the last one
    return observer, observer.sample


class LabRecords:
    """The adapter: the twin's records as the rehearsal's checks read them."""

    def __init__(self, store: Store, controllers: Controllers) -> None:
        self.store = store
        self.controllers = controllers
        self._announcements, self._sample = announcement_source(controllers)

    def sample(self) -> None:
        """Bring the announcement record up to date (the observer samples at events only)."""
        self._sample()

    def mark(self) -> Mark:
        """Where every record is now."""
        self.sample()
        return Mark(self.store.clock.now(), len(self.store.status_writes),
                    len(self._announcements.changes), self.store.resource_version())

    def status_writes(self, since: Mark | None = None, until: Mark | None = None
                      ) -> list[StatusChange]:
        """The store's status writes between two marks (all by default)."""
        writes = self.store.status_writes[
            since.status_writes if since else 0: until.status_writes if until else None]
        return [StatusChange(w.time, f"{w.namespace}/{w.name}", w.manager, tuple(w.before),
                             tuple(w.after)) for w in writes]

    def announcement_changes(self, since: Mark | None = None, until: Mark | None = None
                             ) -> list[AnnouncementChange]:
        """The announcement changes between two marks (all by default)."""
        self.sample()
        changes = self._announcements.changes[
            since.announcements if since else 0: until.announcements if until else None]
        return [AnnouncementChange(float(c.time), str(c.ip), tuple(c.metallb), tuple(c.cilium))
                for c in changes]

    def first_change(self, since: Mark, targets: Iterable[tuple[str, str, str, str]]
                     ) -> int | None:
        """The resourceVersion of the first change, after ``since``, to one of ``targets``
        ((group, kind, namespace or "", name)): a create, a delete, or an update of what a
        plan looks at (a Service's IPs aside, which its controllers write)."""
        wanted: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for group, kind, namespace, name in targets:
            wanted.setdefault((group, kind), set()).add((namespace, name))
        found: list[int] = []
        for (group, kind), names in wanted.items():
            events = self._events(since, group, kind)
            for event in events:
                meta = event.object.get("metadata") or {}
                if (str(meta.get("namespace") or ""), str(meta.get("name"))) not in names:
                    continue
                if event.type == "MODIFIED" and _plan_view(event.object) == _plan_view(
                        event.old):
                    continue
                found.append(event.resource_version)
                break
        return min(found) if found else None

    def first_write(self, since: Mark, group: str, kind: str, namespace: str, prefix: str
                    ) -> int | None:
        """The resourceVersion of the first write after ``since`` to an object of that kind
        whose name starts with ``prefix`` (migrate's backups)."""
        events = self._events(since, group, kind, namespace)
        return next((e.resource_version for e in events
                     if str((e.object.get("metadata") or {}).get("name", "")).startswith(
                         prefix)), None)

    def _events(self, since: Mark, group: str, kind: str, namespace: str | None = None
                ) -> list[Any]:
        """The store's events of a kind since a mark (none once its log no longer reaches
        back that far: a stage of tens of thousands of writes; its order is then unchecked)."""
        from migrate.lab.store import ApiError

        try:
            events, _ = self.store.events_after(since.resource_version, group=group, kind=kind,
                                                namespace=namespace)
        except ApiError:
            return []
        return events

    def answering(self) -> dict[str, AnnouncementChange]:
        """Who answers each IP now (IPs nobody answers are left out)."""
        last: dict[str, AnnouncementChange] = {}
        for change in self.announcement_changes():
            last[change.ip] = change
        return {ip: change for ip, change in last.items() if change.nodes}

    def announcers_view(self) -> Mapping[str, Any]:
        """The models' current view, for the wire follower (``Controllers.announcements``)."""
        return self.controllers.announcements()


def _plan_view(obj: Any) -> Any:
    from migrate.plan.views import view

    seen = view(obj)
    if isinstance(seen, dict):
        seen.pop("ips", None)
    return seen


def door_requests(server: LabServer, since: int = 0) -> list[Request]:
    """The requests a door served from its ``since``-th on (its log keeps the latest 100,000)."""
    log = list(server.requests)
    first = server.request_count - len(log)
    return [Request(method, path) for method, path in log[max(since - first, 0):]]
