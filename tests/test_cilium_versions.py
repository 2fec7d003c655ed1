"""Which Cilium release the objects are written for: --cilium-version up to 1.20, and by default
the release the cluster's Cilium agent runs (its image tag), else 1.20, the newest known."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrate.plan.api import cilium_version_of, make_plan
from migrate.sources.snapshot import read_snapshot
from migrate.translate.mappings import cilium_version, known_versions, newest_known
from tests.conftest import TESTDATA
from tests.helpers import run_cli

CLUSTER = TESTDATA / "clusters" / "guide-single-pool"
"""A snapshot whose agent DaemonSet and pods run quay.io/cilium/cilium:v1.18.4."""
MANIFESTS = TESTDATA / "convert" / "single-pool" / "input.yaml"
"""Plain MetalLB manifests: no Cilium agent."""


def convert(*args: str) -> dict[str, Any]:
    result = run_cli("convert", *args, "-o", "json")
    assert result.exit_code == 0, result.stderr
    return dict(json.loads(result.stdout))


def api_versions(payload: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for item in payload["items"]:
        out.setdefault(item["kind"], set()).add(item["apiVersion"])
    return out


def retagged(tmp_path: Path, tag: str, *, daemonset: bool = True) -> Path:
    """The CLUSTER snapshot with the agent's image tag changed (and its DaemonSet dropped)."""
    folder = tmp_path / f"cluster-{tag}"
    shutil.copytree(CLUSTER, folder)
    path = folder / "cilium.yaml"
    docs = list(yaml.safe_load_all(path.read_text().replace("cilium:v1.18.4", f"cilium:{tag}")))
    if not daemonset:
        docs = [d for d in docs if d and d.get("kind") != "DaemonSet"]
    path.write_text(yaml.safe_dump_all(docs))
    return folder


def test_1_20_is_known_with_v2_pools_and_v2alpha1_policies() -> None:
    assert known_versions()[-1] == newest_known() == "1.20"
    row = cilium_version("1.20.2")
    assert (row.minor, row.pool_api_version, row.policy_api_version) == (
        "1.20", "cilium.io/v2", "cilium.io/v2alpha1")
    payload = convert("-f", str(MANIFESTS), "--cilium-version", "1.20")
    assert payload["ciliumVersion"] == "1.20"
    assert api_versions(payload) == {"CiliumLoadBalancerIPPool": {"cilium.io/v2"},
                                     "CiliumL2AnnouncementPolicy": {"cilium.io/v2alpha1"},
                                     "Service": {"v1"}}


@pytest.mark.parametrize("command", [
    ("convert", "-f", str(MANIFESTS)), ("plan", "--from", str(CLUSTER))])
def test_a_version_newer_than_1_20_is_refused(command: tuple[str, ...]) -> None:
    result = run_cli(*command, "--cilium-version", "1.21")
    assert result.exit_code == 1 and result.stdout == ""
    assert result.stderr.startswith("Error: field --cilium-version: Cilium 1.21 is newer than"
                                    " the newest release migrate knows (1.20)")


def test_convert_without_an_agent_writes_for_the_newest_known() -> None:
    assert convert("-f", str(MANIFESTS))["ciliumVersion"] == "1.20"


def test_the_default_follows_the_agent_image_of_a_snapshot(tmp_path: Path) -> None:
    assert convert("-f", str(CLUSTER))["ciliumVersion"] == "1.18"
    old = convert("-f", str(retagged(tmp_path, "v1.16.3")))
    assert old["ciliumVersion"] == "1.16"
    assert api_versions(old)["CiliumLoadBalancerIPPool"] == {"cilium.io/v2alpha1"}
    assert make_plan(read_snapshot([CLUSTER])).cilium_version == "1.18"
    assert convert("-f", str(CLUSTER), "--cilium-version", "1.20")["ciliumVersion"] == "1.20"


def test_without_a_daemonset_the_oldest_agent_pod_decides(tmp_path: Path) -> None:
    folder = retagged(tmp_path, "v1.20.2", daemonset=False)
    path = folder / "cilium.yaml"
    docs = list(yaml.safe_load_all(path.read_text()))
    pods = [d for d in docs if d.get("kind") == "Pod"]
    assert len(pods) >= 2
    pods[0]["spec"]["containers"][0]["image"] = "quay.io/cilium/cilium:v1.19.8@sha256:" + "0" * 64
    path.write_text(yaml.safe_dump_all(docs))
    assert cilium_version_of(read_snapshot([folder])) == "1.19"


def test_an_agent_newer_than_1_20_gets_1_20_with_a_warning(tmp_path: Path) -> None:
    plan = make_plan(read_snapshot([retagged(tmp_path, "v1.21.0")]), preflight=False)
    assert plan.cilium_version == "1.20"
    warning = next(f for f in plan.findings if f.code == "cilium-version-newer")
    assert warning.severity.value == "WARNING" and warning.obj == "Cilium 1.21"
    assert "written as for 1.20" in warning.message


def test_help_names_the_range_and_the_default() -> None:
    for command in ("convert", "plan"):
        text = " ".join(run_cli(command, "--help").stdout.split())
        assert "1.15 to 1.20" in text and "1.20, the newest known" in text
