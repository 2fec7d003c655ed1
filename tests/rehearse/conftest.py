"""Helpers of the rehearsal tests: bundled clusters, altered copies of them, and a reporter
that keeps the progress."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from migrate.apply.waits import SilentReporter
from tests.engine.conftest import CLUSTERS, SCENARIOS

__all__ = ["CLUSTERS", "SCENARIOS", "Progress", "altered"]


class Progress(SilentReporter):
    """The engine's reporter for tests, keeping every message and every wait's progress."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[str] = []
        self.progress_seen: list[tuple[str, int, int]] = []

    def event(self, message: str) -> None:
        self.events.append(message)

    def progress(self, description: str, done: int, total: int) -> None:
        self.progress_seen.append((description, done, total))


Altered = Callable[[str, Callable[[Path], None]], Path]


@pytest.fixture
def altered(tmp_path: Path) -> Altered:
    """``altered(scenario, change)``: a copy of a bundled cluster, changed by ``change(folder)``."""

    def make(scenario: str, change: Callable[[Path], None]) -> Path:
        folder = tmp_path / f"{scenario}-altered"
        shutil.copytree(CLUSTERS / scenario, folder)
        change(folder)
        return folder

    return make
