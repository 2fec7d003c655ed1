"""``--report FILE.html`` opened in a real browser: headless Chromium renders the page; its
DOM holds the stage table and one SVG timeline per IP, and a screenshot of it is not blank.
Skips where Chromium is not installed (``.ci/run`` installs the Debian package)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.rehearse.conftest import CLUSTERS
from tests.rehearse.png import colours

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Chromium with a profile of its own, on a file:// URL only."""
    assert CHROMIUM is not None
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


class Dom(HTMLParser):
    """What the test looks for in the rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.stage_rows: list[dict[str, str]] = []
        self.timelines: list[str] = []
        self.external: list[str] = []
        self.verdict = ""
        self._in_verdict = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {k: v or "" for k, v in attrs}
        self.stack.append(attributes.get("id", ""))
        if tag == "tr" and "stages" in self.stack and "data-stage" in attributes:
            self.stage_rows.append(attributes)
        if tag == "svg" and "timeline" in attributes.get("class", ""):
            self.timelines.append(attributes.get("data-ip", ""))
        for key in ("src", "href"):
            if attributes.get(key):
                self.external.append(attributes[key])
        self._in_verdict = attributes.get("id") == "verdict" or self._in_verdict

    def handle_endtag(self, tag: str) -> None:
        if self.stack:
            popped = self.stack.pop()
            if popped == "verdict":
                self._in_verdict = False

    def handle_data(self, data: str) -> None:
        if self._in_verdict:
            self.verdict += data


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_the_html_report_renders_in_chromium(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    result = run_cli("rehearse", "--from", str(CLUSTERS / "several-pools-shared"), "--chaos",
                     "2", "--report", str(page), "-o", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    html = page.read_text()
    assert not re.search(r"(src|href)=|@import|url\((?!#)", html), "no external asset"

    dumped = chromium(tmp_path, "--dump-dom", page.as_uri())
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = Dom()
    dom.feed(dumped.stdout)
    assert [(r["data-phase"], r["data-stage"]) for r in dom.stage_rows] == [
        (row["phase"], row["stage"]) for row in report["stages"]]
    assert dom.timelines == [item["ip"] for item in report["cutover"]]
    assert len(dom.timelines) == 4 and len(set(dom.timelines)) == 4
    assert dom.external == []
    assert "safe to run" in dom.verdict

    shot = tmp_path / "shot.png"
    taken = chromium(tmp_path, f"--screenshot={shot}", "--window-size=800,900",
                     "--hide-scrollbars", page.as_uri())
    assert taken.returncode == 0 and shot.exists(), taken.stderr[-2000:]
    distinct, share = colours(shot)
    assert distinct > 20, "a blank page has a handful of colours at most"
    assert share > 0.03, f"only {share:.1%} of the page is not white"
