"""Shared fixtures: paths to the project's test data and to the shared reference material."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

# Fails the session when a text the suite shows a user cites the project's internal notes.
from tests.user_text import _user_texts_carry_no_internal_references  # noqa: F401

REPO = Path(__file__).resolve().parents[1]
TESTDATA = REPO / "testdata"
SHARED = (Path(os.environ["MIGRATE_SHARED"]) if os.environ.get("MIGRATE_SHARED") else next(
    (folder / "shared" for folder in (REPO.parent, REPO.parent.parent)
     if (folder / "shared").is_dir()), REPO.parent / "shared"))
"""The shared folder beside the repository (or beside the folder of worktrees);
``$MIGRATE_SHARED`` points elsewhere."""


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared folder beside the repository (CRDs, real-world files); skip when absent."""
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent (shared reference material is not in this checkout)")
    return SHARED


FIGURE = "figure"
"""The user property a test's measured figure is recorded under (see :func:`figure`)."""


@pytest.fixture
def figure(record_property: Callable[[str, object], None]) -> Callable[[str], None]:
    """Report a figure the test measured (a cutover's silence, a degraded moment): printed in
    the run's "measured figures" section, with or without pytest-xdist's workers."""
    def report(text: str) -> None:
        record_property(FIGURE, text)
    return report


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print every figure the tests reported, under the test that measured it."""
    shown: dict[str, list[str]] = {}
    for outcome in ("passed", "failed"):
        for report in terminalreporter.stats.get(outcome, []):
            figures = [str(v) for k, v in getattr(report, "user_properties", ()) if k == FIGURE]
            texts = shown.setdefault(report.nodeid, []) if figures else []
            texts += [text for text in figures if text not in texts]
    if not shown:
        return
    terminalreporter.section("measured figures")
    for nodeid, texts in shown.items():
        terminalreporter.write_line(f"{nodeid}:")
        for text in texts:
            for line in text.strip("\n").splitlines():
                terminalreporter.write_line(f"    {line}")
