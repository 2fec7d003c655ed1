"""Figures the tests measure (a cutover's silence, a degraded moment on the router) reach the
end of the run, also from pytest-xdist's workers, where a test's own prints are lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def test_a_figure_measured_in_a_worker_is_printed_at_the_end_of_the_run(
        tmp_path: Path) -> None:
    (tmp_path / "test_measured.py").write_text(
        "def test_measures(figure):\n"
        "    figure('l2-cutover: 198.18.1.1 silent for 0.250s\\nand a second line')\n"
        "    figure('failover: 16.4 s')\n"
        "\n"
        "def test_measures_nothing():\n"
        "    pass\n")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(REPO / "pyproject.toml"), "-n", "2",
         "-p", "tests.conftest", "-p", "no:cacheprovider", str(tmp_path / "test_measured.py")],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True,
        timeout=120, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 workers" in done.stdout
    section = done.stdout.split("measured figures", 1)[1].splitlines()
    assert section[1].endswith("::test_measures:")
    assert section[2:5] == ["    l2-cutover: 198.18.1.1 silent for 0.250s",
                            "    and a second line", "    failover: 16.4 s"]
    assert "test_measures_nothing" not in done.stdout.split("measured figures", 1)[1]
