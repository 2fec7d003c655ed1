"""Helpers for tests: run the CLI in-process and load Cilium CRD schemas."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from migrate.cli import main


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str


def run_cli(*args: str) -> CliResult:
    """Run ``migrate`` in-process with separate stdout and stderr."""
    result = CliRunner().invoke(main, list(args), prog_name="migrate", catch_exceptions=False)
    return CliResult(result.exit_code, result.stdout, result.stderr)


def crd_schemas(crd_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """openAPIV3Schema per (apiVersion, kind) from every CRD file in a folder."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(crd_dir.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc.get("kind") != "CustomResourceDefinition":
                continue
            group = doc["spec"]["group"]
            kind = doc["spec"]["names"]["kind"]
            for version in doc["spec"]["versions"]:
                schemas[(f"{group}/{version['name']}", kind)] = version["schema"][
                    "openAPIV3Schema"
                ]
    return schemas
