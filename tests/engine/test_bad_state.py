"""migrate's state and backups in the cluster, edited or cut short: apply, rollback, status and
verify refuse with one line naming the ConfigMap and the field, and write nothing."""

from __future__ import annotations

import base64
import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from migrate.apply.executor import apply_stage
from migrate.apply.state import BACKUP_KEY, STATE_KEY, STATE_NAME
from migrate.plan.api import make_plan, save_plan
from migrate.sources.live import read_live
from tests.engine.conftest import Cluster, ClusterFactory, fast_options
from tests.engine.test_plan_fuzz import WriteCounter
from tests.helpers import run_cli

Edit = Callable[[dict[str, Any]], None]
STATE = f"cluster: ConfigMap kube-system/{STATE_NAME} field data[{STATE_KEY}]"
BACKUP = f"cluster: ConfigMap kube-system/lbmigrate-backup-pin-0 field binaryData[{BACKUP_KEY}]"


def _edit(cluster: Cluster, name: str, change: Edit) -> None:
    body = cluster.store.get("", "ConfigMap", name, "kube-system")
    change(body)
    body["metadata"].pop("resourceVersion")
    cluster.store.update(body)


def _state(change: Callable[[dict[str, Any]], Any]) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        data = json.loads(body["data"][STATE_KEY])
        body["data"][STATE_KEY] = json.dumps(change(data))
    return edit


def _backup(blob: bytes) -> Edit:
    def edit(body: dict[str, Any]) -> None:
        body["binaryData"][BACKUP_KEY] = base64.b64encode(blob).decode()
    return edit


def _truncate_state(body: dict[str, Any]) -> None:
    text = body["data"][STATE_KEY]
    body["data"][STATE_KEY] = text[:len(text) // 2]


def _truncate_backup(body: dict[str, Any]) -> None:
    text = body["binaryData"][BACKUP_KEY]
    body["binaryData"][BACKUP_KEY] = text[:len(text) // 2 - 1]


CASES: dict[str, tuple[str, Edit, str]] = {
    "state cut short": (STATE_NAME, _truncate_state, f"{STATE}: is not valid JSON"),
    "state stages not a list": (
        STATE_NAME, _state(lambda d: {**d, "stages": 5}),
        f"{STATE}.stages: expected a list, got 5"),
    "state stage status unknown": (
        STATE_NAME, _state(lambda d: {**d, "stages": [{**d["stages"][0], "status": "done"}]}),
        f'{STATE}.stages[0].status: expected one of in-progress, applied, rolling-back, got'
        ' "done"'),
    "backup cut short": ("lbmigrate-backup-pin-0", _truncate_backup, f"{BACKUP}: is not base64"),
    "backup not gzip": ("lbmigrate-backup-pin-0", _backup(b"\x00 not gzip at all"),
                        f"{BACKUP}: does not decompress to the JSON apply wrote"),
    "backup objects not a list": (
        "lbmigrate-backup-pin-0", _backup(gzip.compress(b'{"objects": {"a": 1}}')),
        f"{BACKUP}.objects: expected a list, got a mapping"),
}


@pytest.fixture
def applied(cluster_factory: ClusterFactory, tmp_path: Path) -> tuple[Cluster, Path]:
    """A lab cluster with stage pin applied, and the plan file."""
    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    assert apply_stage(cluster.kube, plan, "pin", options=fast_options()).outcome == "applied"
    path = tmp_path / "plan.yaml"
    save_plan(plan, path)
    return cluster, path


@pytest.mark.parametrize("case", sorted(CASES))
def test_an_edited_state_or_backup_is_refused_naming_it_before_any_write(
    case: str, applied: tuple[Cluster, Path],
) -> None:
    """rollback (with the plan file or the recorded plan) for every case; apply, status and
    verify too when the state itself is broken (they do not read backups)."""
    cluster, plan = applied
    name, change, expected = CASES[case]
    _edit(cluster, name, change)
    counter = WriteCounter(cluster)
    commands: list[tuple[str, ...]] = [("rollback", "--plan", str(plan), "--yes"),
                                       ("rollback", "--yes")]
    if name == STATE_NAME:
        commands += [("apply", "--plan", str(plan), "--stage", "freeze-metallb", "--yes"),
                     ("status",), ("verify", "--plan", str(plan))]
    for args in commands:
        result = run_cli(*args, "--kubeconfig", str(cluster.kubeconfig))
        assert result.exit_code == 1, result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert errors[0].startswith(f"Error: {expected}"), result.stderr
        assert "internal error" not in result.stderr
    assert counter.writes == []


def test_an_edited_recorded_plan_stops_rollback_before_any_write(
    applied: tuple[Cluster, Path],
) -> None:
    cluster, _ = applied

    def edit(body: dict[str, Any]) -> None:
        plan = json.loads(gzip.decompress(base64.b64decode(body["binaryData"][BACKUP_KEY])))
        plan["stages"][1]["actions"] = []
        body["binaryData"][BACKUP_KEY] = base64.b64encode(
            gzip.compress(json.dumps(plan).encode())).decode()

    _edit(cluster, "lbmigrate-backup-plan-0", edit)
    counter = WriteCounter(cluster)
    result = run_cli("rollback", "--yes", "--kubeconfig", str(cluster.kubeconfig))
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: cluster: the plan recorded in ConfigMap kube-system/lbmigrate-backup-plan-0"
        " field digest: the plan was changed or cut short after migrate plan wrote it (its"
        " content does not match its digest): make a new plan with migrate plan --out\n")
    assert counter.writes == []
