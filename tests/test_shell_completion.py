"""Shell completion, as the README sets it up: the ``migrate`` executable hands the completion
variable to click, and bash completes commands, options and stage names with it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def _environment(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), **extra}


def _migrate(tmp_path: Path) -> Path:
    """A ``migrate`` on PATH that runs this checkout, as the installed console script does."""
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "migrate"
    script.write_text(f'#!/bin/sh\nexec {sys.executable} -m migrate "$@"\n')
    script.chmod(0o755)
    return folder


def _readme_line(shell: str) -> str:
    """The README's set-up line for ``shell`` (its comment dropped)."""
    readme = (REPO / "README.md").read_text()
    lines = [line.split("#", 1)[0].strip() for line in readme.splitlines()
             if f"_MIGRATE_COMPLETE={shell}_source migrate" in line]
    assert len(lines) == 1, lines
    return lines[0]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_the_executable_prints_the_completion_script(shell: str) -> None:
    done = subprocess.run([sys.executable, "-m", "migrate"], capture_output=True, text=True,
                          env=_environment(_MIGRATE_COMPLETE=f"{shell}_source"), timeout=60)
    assert done.returncode == 0, done.stderr
    assert "_MIGRATE_COMPLETE=" in done.stdout and "migrate" in done.stdout
    assert "Usage:" not in done.stdout
    assert f"_MIGRATE_COMPLETE={shell}_source migrate" in _readme_line(shell)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
@pytest.mark.parametrize("words, expected", [
    ("migrate pl", {"plan"}),
    ("migrate apply --st", {"--stage", "--state-namespace"}),
    ("migrate apply --stage ipam", {"ipam-handover"}),
    ("migrate rollback --to l2-", {"l2-canary", "l2-cutover"}),
    ("migrate verify --arp --interface eth0 --ip 192.0.2.1 --node-", {"--node-mac"}),
])
def test_bash_completes_with_the_readme_line(tmp_path: Path, words: str,
                                             expected: set[str]) -> None:
    path = f"{_migrate(tmp_path)}:{os.environ.get('PATH', '')}"
    script = (f"{_readme_line('bash')}\n"
              f'COMP_WORDS=({words}); COMP_CWORD={len(words.split()) - 1}\n'
              '_migrate_completion migrate\nprintf "%s\\n" "${COMPREPLY[@]}"\n')
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", script], capture_output=True,
                          text=True, env=_environment(PATH=path), timeout=60)
    assert done.returncode == 0, done.stderr
    assert set(done.stdout.split()) == expected
