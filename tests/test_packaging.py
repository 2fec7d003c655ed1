"""A regular (non-editable) install carries what the tool reads at run time."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_the_mapping_tables(tmp_path: Path) -> None:
    pytest.importorskip("wheel", reason="building a wheel needs the wheel package")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(REPO)],
        capture_output=True, text=True, check=False, timeout=300,
        cwd=tmp_path,
    )
    assert build.returncode == 0, build.stderr[-2000:]
    (wheel,) = tmp_path.glob("migrate-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    tables = sorted(p.name for p in (REPO / "mappings").glob("*.yaml"))
    assert tables, "the repository has mapping tables"
    for table in tables:
        assert f"migrate/mappings/{table}" in names
    assert "migrate/py.typed" in names
