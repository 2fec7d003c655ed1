"""The progress of apply and rollback: rich's display on a terminal, plain lines elsewhere,
nothing with --quiet; driven through the engine's ``wait_until`` as a stage drives it.

The snapshots are ``testdata/progress/*.txt`` (MIGRATE_UPDATE_GOLDEN=1 rewrites them; review
the diff by eye). The terminal one lists the frames the line went through, one per line.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator

import pytest
from rich.console import Console

from migrate.apply.waits import WaitOptions, wait_until
from migrate.errors import ClusterError
from migrate.render import ProgressReporter
from tests.conftest import TESTDATA

SNAPSHOTS = TESTDATA / "progress"
UPDATE = os.environ.get("MIGRATE_UPDATE_GOLDEN") == "1"
CONTROLLER = "Deployment metallb-system/controller has 0 pod(s)"
LEASES = "every announced Service has a lease held by an eligible node"
IPAM = "LB-IPAM has taken over every pinned IP (pool IPsUsed), no Service IP changed"


class FakeTime:
    """A clock that moves only when the engine sleeps between two looks."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _looks(*counts: tuple[int, int]) -> Iterator[tuple[bool, str, int, int]]:
    for done, total in counts:
        yield done == total, f"{done}/{total}", done, total
    while True:  # never there: the wait times out
        yield False, "still waiting", counts[-1][0], counts[-1][1]


def _stage(reporter: ProgressReporter, clock: FakeTime) -> None:
    """What a stage reports: a step, two waits that succeed, a wait that times out."""
    options = WaitOptions(poll=0.5, clock=clock, sleep=clock.sleep)
    reporter.event("scale Deployment metallb-system/controller: stop MetalLB's controller")
    controller = _looks((0, 1), (0, 1), (0, 1), (1, 1))
    wait_until(lambda: next(controller), CONTROLLER, 60, options, reporter)
    reporter.event("create CiliumLoadBalancerIPPool blue: a pool of 3 IPs")
    leases = _looks((0, 3), (1, 3), (1, 3), (3, 3))
    wait_until(lambda: next(leases), LEASES, 60, options, reporter)
    stuck = _looks((1, 2))
    with pytest.raises(ClusterError, match="timed out after 2s"):
        wait_until(lambda: next(stuck), IPAM, 2, options, reporter)


def _console(*, terminal: bool, **kwargs: object) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    console = Console(file=out, force_terminal=terminal, width=120, record=True,
                      color_system="standard" if terminal else None, **kwargs)  # type: ignore[arg-type]
    return console, out


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _frames(raw: str) -> list[str]:
    """Each state a terminal line went through: a progress line is redrawn after \\r and
    erase-line; consecutive equal frames once."""
    frames: list[str] = []
    for line in raw.split("\n"):
        for frame in re.split(r"\r(?:\x1b\[2K)?", line):
            text = ANSI.sub("", frame).rstrip()
            if text and (not frames or frames[-1] != text):
                frames.append(text)
    return frames


def _matches_snapshot(name: str, text: str) -> None:
    path = SNAPSHOTS / name
    if UPDATE:
        path.write_text(text)
    assert text == path.read_text()


def test_on_a_terminal_each_wait_is_a_progress_display() -> None:
    console, out = _console(terminal=True)
    clock = FakeTime()
    with ProgressReporter(console, clock=clock, auto_refresh=False) as reporter:
        assert reporter.live
        _stage(reporter, clock)
    raw = out.getvalue()
    frames = _frames(raw)
    _matches_snapshot("terminal.txt", "\n".join(frames) + "\n")
    # what is awaited, done/total and the elapsed time; a tick or a cross at the end
    assert any(f.startswith("✓ " + CONTROLLER) and f.endswith("1/1 0:01") for f in frames)
    assert [f.split()[-2] for f in frames if LEASES in f][-3:] == ["1/3", "3/3", "3/3"]
    assert frames[-1].startswith("✗ " + IPAM) and frames[-1].endswith("1/2 0:02")
    assert "\x1b[32m✓" in raw and "\x1b[1;31m✗" in raw  # green tick, red cross
    assert console.export_text().count("✓") >= 2  # what rich recorded shows the same


def test_no_color_keeps_the_display_without_colours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    console, out = _console(terminal=True)
    clock = FakeTime()
    with ProgressReporter(console, clock=clock, auto_refresh=False) as reporter:
        _stage(reporter, clock)
    raw = out.getvalue()
    frames = _frames(raw)
    assert any(f.startswith("✓ " + CONTROLLER) and f.endswith("1/1 0:01") for f in frames)
    assert not re.search(r"\x1b\[(?:[0-9;]*;)?(?:3[0-7]|9[0-7])m", raw)  # no colour at all


def test_elsewhere_each_wait_is_plain_lines() -> None:
    console, out = _console(terminal=False)
    clock = FakeTime()
    with ProgressReporter(console, clock=clock) as reporter:
        assert not reporter.live
        _stage(reporter, clock)
    text = out.getvalue()
    _matches_snapshot("plain.txt", text)
    assert "\x1b" not in text and "\r" not in text
    assert f"  wait: {LEASES}: 3/3, done in 1.5s\n" in text
    assert f"  wait: {IPAM}: 1/2, gave up after 2.0s\n" in text


def test_a_dumb_terminal_gets_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "dumb")
    console, _ = _console(terminal=True)
    assert not ProgressReporter(console).live


def test_quiet_shows_nothing() -> None:
    console, out = _console(terminal=True)
    clock = FakeTime()
    with ProgressReporter(console, quiet=True, clock=clock, auto_refresh=False) as reporter:
        _stage(reporter, clock)
    assert out.getvalue() == ""


def test_a_wait_cut_short_leaves_the_terminal_usable() -> None:
    """An error inside a wait (not a timeout): the display stops, the cursor comes back."""
    console, out = _console(terminal=True)
    clock = FakeTime()

    looks = iter([(False, "waiting", 0, 3)])

    def broken() -> tuple[bool, str, int, int]:
        for look in looks:
            return look
        raise ClusterError("the API server went away")

    with pytest.raises(ClusterError), ProgressReporter(console, clock=clock,
                                                        auto_refresh=False) as reporter:
        wait_until(broken, LEASES, 60, WaitOptions(clock=clock, sleep=clock.sleep), reporter)
    raw = out.getvalue()
    assert "\x1b[?25l" in raw and raw.endswith("\x1b[?25h")  # cursor hidden, then shown again
    assert _frames(raw)[-1].startswith("✗ " + LEASES)
