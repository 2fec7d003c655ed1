"""The README's two set-up commands, as written, on a clean clone, with a virtual environment
made by the interpreter's own ``python3 -m venv``: what a new user does first.

The commands come from the README through ``.ci/readme_setup.py``, which ``.ci/run`` also
runs them from. The second one ends in the whole test suite; here pytest only collects it
(``PYTEST_ADDOPTS=--collect-only``), which proves the test tools are installed and every test
module imports, without running this test again inside itself. The clone is of the commit
checked out (uncommitted changes are not in it). Downloads packages: ``-m "not network"``
skips it offline.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.network


def _readme_setup() -> ModuleType:
    spec = importlib.util.spec_from_file_location("readme_setup", REPO / ".ci" / "readme_setup.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_ci_script_runs_the_readme_commands() -> None:
    listed = subprocess.run([sys.executable, str(REPO / ".ci" / "readme_setup.py")],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert listed == _readme_setup().setup_commands((REPO / "README.md").read_text())
    assert listed[0].startswith("python3 -m venv .venv && ")
    ci = (REPO / ".ci" / "run").read_text()
    assert "python3 .ci/readme_setup.py" in ci and 'bash -euo pipefail -c "$command"' in ci
    assert "pip install" not in ci  # every install is the README's


def _clean_clone(tmp_path: Path) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs git and a git checkout")
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True,
                          text=True, check=True).stdout.strip()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "--quiet", head], check=True)
    return clone


def _base_python() -> Path:
    """The folder of this interpreter's base Python (not a virtual environment's), where the
    shell finds ``python3``; skips when it has no ``python3``."""
    folder = Path(getattr(sys, "_base_executable", sys.executable)).parent
    if not (folder / "python3").exists():
        pytest.skip(f"no python3 beside this interpreter's base ({folder})")
    return folder


def _environment() -> dict[str, str]:
    """The user's shell: ``python3`` is this interpreter's base Python, and nothing points
    into this checkout."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "PYTEST_ADDOPTS")}
    env["PATH"] = f"{_base_python()}{os.pathsep}{env.get('PATH', '')}"
    return env


def test_the_readme_set_up_works_on_a_clean_clone(tmp_path: Path) -> None:
    clone = _clean_clone(tmp_path)
    first, second = _readme_setup().setup_commands((clone / "README.md").read_text())
    env = _environment()

    def run(command: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=clone,
                              env={**env, **extra}, capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=900, check=False)

    installed = run(first)
    assert installed.returncode == 0, installed.stderr[-3000:]
    assert "Stage 1: pin" in installed.stdout and "Plan: " in installed.stdout
    venv = (clone / ".venv" / "pyvenv.cfg").read_text()
    assert f"home = {_base_python()}\n" in venv  # made by the interpreter's own venv

    # the console script hands shell completion to click, as the README's lines use it
    completion = subprocess.run([str(clone / ".venv" / "bin" / "migrate")], env={
        **env, "_MIGRATE_COMPLETE": "bash_source"}, capture_output=True, text=True,
        timeout=60, check=False)
    assert completion.returncode == 0 and "_migrate_completion()" in completion.stdout

    tested = run(second, PYTEST_ADDOPTS="--collect-only -q -p no:cacheprovider")
    assert tested.returncode == 0, (tested.stdout[-3000:], tested.stderr[-3000:])
    assert "tests collected" in tested.stdout
    assert "test_the_readme_set_up_works_on_a_clean_clone" in tested.stdout
