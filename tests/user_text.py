"""Every text migrate shows a user, as the test suite produces it, is free of the project's
internal note tags ("[M8]", "[C1.4]", "[C2]" ...: sections of the reference notes a user does not
have) and of paths to those notes.

A pytest plugin (loaded from ``tests/conftest.py``): for the whole session it records the
findings, preflight checks, plan stages and actions, verify checks, errors, progress messages
and CLI outputs (in-process through click's runner, or ``migrate`` run as a subprocess) that the
tests create, and fails the session at its end, naming each offending text and the test that
produced it. ``tests/test_user_text.py`` scans what is written down (README, help, golden files,
mappings, the package's string literals).
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

INTERNAL_REFERENCE = re.compile(
    r"\[(?:M|C|R|T)\d+(?:\.\d+)*\b[^\]\n]*\]"  # a section tag: [M8], [C1.4], [M6 rule 3]
    r"|\.\./shared/|\bshared/reference/|\breference/(?:metallb|cilium|real-clusters|talos)"
    r"|\bdesign\.md\b"  # the notes themselves
    r"|\binvariant I\d+\b|\bI\d+(?: violated|:)"  # the design's invariants by number
)
"""A reference to the project's internal notes."""


def internal_references(text: str) -> list[str]:
    """The internal-note references in ``text`` (empty when it is fit to show a user)."""
    return [match.group(0) for match in INTERNAL_REFERENCE.finditer(text)]


@dataclass(frozen=True)
class Seen:
    """A text the suite produced: what it is, the text, and the test that produced it."""

    kind: str
    text: str
    test: str


class Collector:
    """Records user-visible texts while the suite runs."""

    def __init__(self) -> None:
        self.seen: list[Seen] = []
        self._undo: list[Callable[[], None]] = []

    def record(self, kind: str, *texts: Any) -> None:
        test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" (", 1)[0]
        for text in _strings(texts):
            if text:
                self.seen.append(Seen(kind, text, test))

    def offending(self) -> list[Seen]:
        """Each recorded text that references the internal notes, once."""
        out: dict[tuple[str, str], Seen] = {}
        for seen in self.seen:
            if internal_references(seen.text):
                out.setdefault((seen.kind, seen.text), seen)
        return list(out.values())

    def wrap_init(self, cls: type, kind: str, attributes: Iterable[str]) -> None:
        """Record ``attributes`` of every ``cls`` (or subclass calling its ``__init__``) built
        from now on."""
        original = cls.__dict__.get("__init__")
        inherited = cls.__init__
        names = tuple(attributes)

        @functools.wraps(inherited)
        def init(instance: Any, *args: Any, **kwargs: Any) -> None:
            inherited(instance, *args, **kwargs)
            self.record(kind, *(getattr(instance, name, None) for name in names))

        type.__setattr__(cls, "__init__", init)
        if original is None:
            self._undo.append(lambda: type.__delattr__(cls, "__init__"))
        else:
            self._undo.append(lambda: type.__setattr__(cls, "__init__", original))

    def wrap_function(self, owner: Any, name: str, kind: str,
                      texts: Callable[[tuple[Any, ...], Any], Iterable[Any]]) -> None:
        """Record ``texts(args, result)`` of every call of ``owner.name``."""
        original = getattr(owner, name)

        @functools.wraps(original)
        def call(*args: Any, **kwargs: Any) -> Any:
            result = original(*args, **kwargs)
            self.record(kind, *texts(args, result))
            return result

        setattr(owner, name, call)
        self._undo.append(lambda: setattr(owner, name, original))

    def undo(self) -> None:
        while self._undo:
            self._undo.pop()()


def _strings(values: Iterable[Any]) -> Iterator[str]:
    for value in values:
        if isinstance(value, str):
            yield value
        elif isinstance(value, bytes):
            yield value.decode(errors="replace")
        elif isinstance(value, (list, tuple)):
            yield from _strings(value)
        elif value is not None and not isinstance(value, (int, float, bool)):
            yield str(value)


COLLECTOR = Collector()


def _runs_migrate(args: tuple[Any, ...]) -> bool:
    argv = args[0] if args else ()
    words = [argv] if isinstance(argv, (str, bytes)) else list(argv or ())
    return any("migrate" in str(word) for word in words)


def _install(collector: Collector) -> None:
    import click.testing

    from migrate.apply.waits import SilentReporter
    from migrate.errors import MigrateError
    from migrate.model.findings import Finding
    from migrate.plan.model import Action, Stage
    from migrate.preflight.report import CheckResult
    from migrate.verify.api import Check

    collector.wrap_init(Finding, "finding", ["message", "field"])
    collector.wrap_init(CheckResult, "preflight check", ["found", "remedy"])
    collector.wrap_init(Stage, "plan stage", ["title", "why", "checks_before", "checks_after"])
    collector.wrap_init(Action, "plan action", ["description"])
    collector.wrap_init(Check, "verify check", ["detail"])
    collector.wrap_init(MigrateError, "error", ["args"])
    collector.wrap_function(SilentReporter, "event", "progress event",
                            lambda args, _result: args[1:])
    collector.wrap_function(click.testing.CliRunner, "invoke", "CLI output",
                            lambda _args, result: [result.output, _stderr(result)])
    collector.wrap_function(
        subprocess, "run", "migrate output",
        lambda args, result: [result.stdout, result.stderr] if _runs_migrate(args) else [])


def _stderr(result: Any) -> str | None:
    try:
        return str(result.stderr)
    except ValueError:  # click < 8.2 without mix_stderr=False: stderr is in output
        return None


@pytest.fixture(scope="session", autouse=True)
def _user_texts_carry_no_internal_references() -> Iterator[Collector]:
    """Record what the suite shows users; fail at the end on an internal-note reference."""
    _install(COLLECTOR)
    try:
        yield COLLECTOR
    finally:
        COLLECTOR.undo()
    bad = COLLECTOR.offending()
    if bad:
        lines = [f"  {seen.kind} in {seen.test}: {', '.join(internal_references(seen.text))}"
                 f" in {seen.text[:300]!r}" for seen in bad[:40]]
        pytest.fail("user-visible text references the project's internal notes (cite upstream"
                    " or give the reason in words):\n" + "\n".join(lines), pytrace=False)
