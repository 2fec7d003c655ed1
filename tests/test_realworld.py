"""Files real users wrote (../shared/realworld) are translated or refused clearly, never crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED
from tests.helpers import run_cli

FILES = sorted((SHARED / "realworld").glob("*.yaml")) if (SHARED / "realworld").is_dir() else []


@pytest.mark.skipif(not FILES, reason=f"{SHARED / 'realworld'} is absent")
@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_realworld_file_is_translated_or_refused_clearly(path: Path) -> None:
    result = run_cli("convert", "-f", str(path))
    assert "Traceback" not in result.stderr
    assert "internal error" not in result.stderr
    if result.exit_code == 1:
        assert result.stderr.startswith("Error: ")
        assert str(path) in result.stderr, "the message must name the file"
        assert result.stdout == ""
    else:
        assert result.exit_code in (0, 3)
        assert "pool(s)" in result.stderr


@pytest.mark.skipif(not FILES, reason=f"{SHARED / 'realworld'} is absent")
def test_realworld_folder_as_a_whole() -> None:
    """Read together, the folder fails on its one template, naming it."""
    result = run_cli("convert", "-f", str(SHARED / "realworld"))
    assert result.exit_code == 1
    assert "018.yaml" in result.stderr and "template" in result.stderr
