"""Fault injection for the lab's API server.

A :class:`FaultRule` matches requests by Kubernetes verb (``get``, ``list``, ``watch``,
``create``, ``update``, ``patch``, ``delete``, ``deletecollection`` or ``*``), resource plural
(optionally ``plural/subresource``, or ``*``), object name (or any) and occurrence (the n-th
matching request only, or every one), and makes the server answer with an HTTP status (a real
``Status`` body; 429 carries ``Retry-After``), wait before answering, or drop the connection
without a response. A rule with ``after=True`` lets the request through first: the write it
carries is done, then its answer is lost (``drop``) or replaced by the status, as when an API
server times out a request it goes on to complete. Tests install rules through
``server.faults.add(rule)`` and remove them with ``server.faults.remove(rule)`` or
``server.faults.clear()``; a FaultSet subclass may decide per request (``decide``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")

REASONS = {
    400: "BadRequest",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass(frozen=True)
class RequestInfo:
    """What a fault rule can match on."""

    verb: str
    resource: str
    """Plural, e.g. ``services``; ``subresource`` carries ``status`` / ``scale``."""
    subresource: str | None
    name: str | None
    namespace: str | None


@dataclass(eq=False)
class FaultRule:
    """Match requests and say what goes wrong (see the module docstring).

    ``nth`` (1-based) fires on that matching request only; ``None`` fires on every one.
    ``status`` answers with that HTTP code; ``delay`` (seconds) waits first (and then, without
    ``status`` or ``drop``, answers normally); ``drop`` closes the socket without a response.
    ``after``: the request is processed first, and only its answer suffers the fault.
    """

    verb: str = "*"
    resource: str = "*"
    name: str | None = None
    nth: int | None = None
    status: int | None = None
    retry_after: int | None = None
    delay: float = 0.0
    drop: bool = False
    message: str | None = None
    after: bool = False
    seen: int = field(default=0, init=False)
    """How many requests matched so far."""
    fired: int = field(default=0, init=False)
    """How many times the fault was applied."""

    def __post_init__(self) -> None:
        if self.verb != "*" and self.verb not in VERBS:
            raise ValueError(f"unknown verb {self.verb!r}; one of {VERBS} or '*'")
        if self.status is None and not self.drop and self.delay <= 0:
            raise ValueError("a fault needs a status, a delay or drop=True")
        if self.nth is not None and self.nth < 1:
            raise ValueError("nth counts from 1")
        if self.retry_after is not None and self.status is None:
            raise ValueError("retry_after goes with a status (usually 429)")

    def matches(self, request: RequestInfo) -> bool:
        """Whether the rule applies to a request (occurrence not considered)."""
        if self.verb not in ("*", request.verb):
            return False
        if self.resource != "*":
            plural, _, sub = self.resource.partition("/")
            if plural != request.resource or (sub or None) != request.subresource:
                return False
        return self.name is None or self.name == request.name

    @property
    def reason(self) -> str:
        """The Status reason that goes with the HTTP code."""
        return REASONS.get(self.status or 500, "InternalError")


@dataclass(frozen=True)
class Fault:
    """What the server must do to one request (merged from the rules that fired)."""

    delay: float = 0.0
    status: int | None = None
    reason: str = ""
    message: str = ""
    retry_after: int | None = None
    drop: bool = False
    after: bool = False
    """Process the request first; then lose or replace its answer."""


class FaultSet:
    """The rules installed on a server; thread-safe."""

    def __init__(self) -> None:
        self._rules: list[FaultRule] = []
        self._lock = threading.Lock()

    def add(self, rule: FaultRule) -> FaultRule:
        """Install a rule; returns it (to remove it later or read ``fired``)."""
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: FaultRule) -> None:
        """Uninstall a rule (no error when it is not installed)."""
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def clear(self) -> None:
        """Uninstall every rule."""
        with self._lock:
            self._rules.clear()

    @property
    def rules(self) -> list[FaultRule]:
        """The installed rules (a copy of the list)."""
        with self._lock:
            return list(self._rules)

    def decide(self, request: RequestInfo) -> Fault | None:
        """Count the request against every matching rule and merge the faults that fire."""
        delay = 0.0
        chosen: FaultRule | None = None
        drop = False
        after = False
        with self._lock:
            for rule in self._rules:
                if not rule.matches(request):
                    continue
                rule.seen += 1
                if rule.nth is not None and rule.seen != rule.nth:
                    continue
                rule.fired += 1
                delay += rule.delay
                drop = drop or rule.drop
                after = after or rule.after
                if rule.status is not None and chosen is None:
                    chosen = rule
        if chosen is None and not drop and delay <= 0:
            return None
        if chosen is None:
            return Fault(delay=delay, drop=drop, after=after)
        status = chosen.status or 500
        message = chosen.message or (
            f"injected fault: {status} {chosen.reason} on {request.verb} {request.resource}"
            + (f"/{request.name}" if request.name else "")
        )
        return Fault(delay=delay, status=status, reason=chosen.reason, message=message,
                     retry_after=chosen.retry_after, drop=drop, after=after)
