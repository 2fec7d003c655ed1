"""The errors of migrate: one base class and a few a caller can branch on.

Exit codes are mapped in ``migrate/entry.py`` only.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any


class MigrateError(Exception):
    """Base of every error migrate raises on purpose."""


class InputError(MigrateError):
    """Input that cannot be read or is invalid; names the file, the object and the field."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        obj: str | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.obj = obj
        self.field = field
        super().__init__(self.render())

    def render(self) -> str:
        """One line: where, which object, which field, then what is wrong."""
        where = [part for part in (self.source, self.obj) if part]
        prefix = ": ".join(where)
        if self.field:
            prefix = f"{prefix} field {self.field}" if prefix else f"field {self.field}"
        return f"{prefix}: {self.message}" if prefix else self.message


MISSING: Any = type("Missing", (), {"__repr__": lambda self: "MISSING"})()
"""The value of a field that is absent (what ``InvalidDocument.found`` holds then)."""


def describe_value(value: Any) -> str:
    """A short rendering of a value found in a document: ``80``, ``"80"``, ``null``, a list."""
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 40 else text[:39] + "…"


def describe_object(kind: str | None, namespace: str | None, name: str | None) -> str | None:
    """``Kind namespace/name`` (``Kind name`` when cluster-scoped), or None when unknown."""
    if not kind and not name:
        return None
    where = f"{namespace}/{name}" if namespace and name else (name or "")
    return f"{kind or 'object'} {where}".strip()


class InvalidDocument(InputError):
    """A field of a document that is not what its kind requires: carries the source (file and
    document index, or ``cluster``), the object, the field path and what was expected and
    found (``spec.ports: expected a list, got 80``)."""

    def __init__(
        self,
        *,
        source: str,
        field: str | None,
        expected: str | None = None,
        found: Any = MISSING,
        message: str | None = None,
        kind: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
    ) -> None:
        self.kind = kind
        self.namespace = namespace
        self.name = name
        self.expected = expected
        self.found = found
        if message is None:
            message = "is required" if found is MISSING else (
                f"expected {expected}, got {describe_value(found)}")
        super().__init__(message, source=source, obj=describe_object(kind, namespace, name),
                         field=field)


class InputProblems(InputError):
    """Every problem found in the input of a run, reported together as kubectl and
    kubeconform do: one line each (``lines()``), nothing written."""

    def __init__(self, problems: Sequence[InputError]) -> None:
        if not problems:
            raise ValueError("InputProblems needs at least one problem")
        self.problems: tuple[InputError, ...] = tuple(problems)
        first = self.problems[0]
        super().__init__(first.message, source=first.source, obj=first.obj, field=first.field)

    def lines(self) -> list[str]:
        """One line per problem, in the order they were found."""
        return [line for problem in self.problems for line in problem.render().splitlines()]

    def render(self) -> str:
        return "\n".join(self.lines())


class NothingToMigrateError(MigrateError):
    """The input holds nothing MetalLB-related."""


class BlockedError(MigrateError):
    """A check blocks the operation (ERROR finding, stale plan, lock held, preflight)."""


class ClusterError(MigrateError):
    """The cluster (API server) failed or refused a request."""


class VerificationError(MigrateError):
    """The result does not hold what was promised (IPs, announcers)."""


class CapabilityError(MigrateError):
    """The process lacks a privilege it needs (for example CAP_NET_RAW for ARP)."""


# -- what was being read -------------------------------------------------------------------
current_document: ContextVar[str | None] = ContextVar("current_document", default=None)
"""The document being read (``file#2: Service default/web``); set by the readers."""


@contextmanager
def reading(where: str | None = None) -> Iterator[None]:
    """Mark ``where`` as the document being read (``now_reading`` may name others inside).
    An exception that is a bug of ours (not a MigrateError) leaving the block carries the
    document being read when it was raised as ``migrate_document``, for the internal-error
    line; the variable is restored on leaving."""
    token = current_document.set(where)
    try:
        yield
    except Exception as error:
        found = current_document.get()
        if found and not isinstance(error, MigrateError) and not hasattr(
            error, "migrate_document"
        ):
            with suppress(AttributeError):  # exceptions with __slots__ cannot carry it
                error.migrate_document = found  # type: ignore[attr-defined]
        raise
    finally:
        current_document.reset(token)


def now_reading(where: str | None) -> None:
    """Name the document being read from here on (inside a ``reading`` block)."""
    current_document.set(where)
