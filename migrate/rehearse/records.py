"""What the rehearsal reads of the twin's records: the adapter between the lab and the checks.

Three records, each read from a :class:`Mark` on (a position in every record, taken at the
start of a stage, so a stage's share can be read back):

- the **status writes** of the store (every write that touched a Service's ingress IPs, with
  the field manager that made it): invariant I1;
- the **announcement record**: every change of who answers ARP for an IP, MetalLB's speakers
  and Cilium's lease holders apart (invariant I2, the cutover silence, the report's timelines);
- the **request log** of each API door (what one client sent, in order): writes per stage,
  the expected duration, the fault points of ``--chaos``.

The lab keeps the announcement record itself (``Controllers.record``), at the moment each
model changes who answers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

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
    """Where announcement changes come from (the lab's record)."""

    @property
    def changes(self) -> Sequence[Any]: ...


class LabRecords:
    """The adapter: the twin's records as the rehearsal's checks read them."""

    def __init__(self, store: Store, controllers: Controllers) -> None:
        self.store = store
        self.controllers = controllers
        self._announcements: AnnouncementSource = controllers.record

    def sample(self) -> None:
        """Bring the records up to date: the lab keeps its announcement record as its models
        change who answers, so there is nothing to sample (kept for the rehearsal's drivers,
        which call it after each round)."""

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
