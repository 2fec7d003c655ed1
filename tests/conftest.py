"""Shared fixtures: paths to the project's test data and to the shared reference material."""

from __future__ import annotations

import os
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
