"""`migrate preflight` as a user runs it: exit codes, the table, the snippets, JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrate.lab.server import LabServer
from migrate.lab.store import Clock, Store
from tests.helpers import run_cli
from tests.preflight import scenarios


def test_clean_cluster_exits_zero() -> None:
    result = run_cli("preflight", "--from", str(scenarios.BASE))
    assert result.exit_code == 0, result.stderr
    assert "kube-proxy-replacement" in result.stdout
    assert "0 error(s)" in result.stdout
    assert "blocked" not in result.stdout


def test_an_error_blocks_with_exit_3_and_prints_the_values(tmp_path: Path) -> None:
    folder = scenarios.write(scenarios.documents("kpr-off"), tmp_path / "cluster")
    result = run_cli("preflight", "--from", str(folder))
    assert result.exit_code == 3
    assert "1 error(s)" in result.stdout and "blocked" in result.stdout
    assert "preflight" in result.stderr
    table, _, snippets = result.stdout.partition("# ----- Cilium Helm values -----\n")
    assert "ERROR" in table and "kube-proxy-replacement is 'false'" in table
    assert yaml.safe_load(snippets) == {"kubeProxyReplacement": True}


def test_warnings_alone_do_not_block(tmp_path: Path) -> None:
    folder = scenarios.write(scenarios.documents("etp-local"), tmp_path / "cluster")
    result = run_cli("preflight", "--from", str(folder))
    assert result.exit_code == 0
    assert "WARNING" in result.stdout
    assert "kubectl -n web patch service site --type merge" in result.stdout


def test_json_output_shape(tmp_path: Path) -> None:
    folder = scenarios.write(scenarios.documents("device-missing"), tmp_path / "cluster")
    result = run_cli("preflight", "--from", str(folder), "-o", "json")
    assert result.exit_code == 3
    payload = json.loads(result.stdout)
    assert set(payload) == {"checks", "blocking"}
    assert payload["blocking"] is True
    by_name = {check["name"]: check for check in payload["checks"]}
    assert set(by_name["l2-devices"]) >= {"name", "severity", "found", "remedy", "snippet"}
    assert by_name["l2-devices"]["severity"] == "ERROR"
    assert yaml.safe_load(by_name["l2-devices"]["snippet"]) == {"devices": ["eth0", "ens20"]}
    assert by_name["metallb"]["severity"] == "OK" and by_name["metallb"]["snippet"] is None


def test_cilium_version_option_changes_the_verdict(tmp_path: Path) -> None:
    folder = scenarios.write(scenarios.documents("ipv6-pool"), tmp_path / "cluster")
    assert run_cli("preflight", "--from", str(folder)).exit_code == 3
    result = run_cli("preflight", "--from", str(folder), "--cilium-version", "1.19", "-o", "json")
    assert result.exit_code == 0
    checks = {c["name"]: c["severity"] for c in json.loads(result.stdout)["checks"]}
    assert checks["ipv6"] == "INFO"


def test_bad_cilium_version_is_an_input_error() -> None:
    result = run_cli("preflight", "--from", str(scenarios.BASE), "--cilium-version", "latest")
    assert result.exit_code == 1
    assert "--cilium-version" in result.stderr


def test_unreadable_kubeconfig_is_an_error(tmp_path: Path) -> None:
    result = run_cli("preflight", "--kubeconfig", str(tmp_path / "absent.yaml"))
    assert result.exit_code == 1
    assert "absent.yaml: cannot read the kubeconfig: No such file" in result.stderr


@pytest.fixture
def live_cluster(tmp_path: Path) -> Iterator[Callable[[list[dict[str, Any]]], Path]]:
    """Serve documents from the lab API server on 127.0.0.1; yields a kubeconfig maker."""
    servers: list[LabServer] = []

    def serve(docs: list[dict[str, Any]]) -> Path:
        folder = scenarios.write(docs, tmp_path / f"cluster-{len(servers)}")
        store, _ = Store.from_snapshot([folder], Clock.real())
        server = LabServer(store).start()
        servers.append(server)
        return Path(server.write_kubeconfig(tmp_path / f"kubeconfig-{len(servers)}.yaml"))

    try:
        yield serve
    finally:
        for server in servers:
            server.stop()


def test_reads_a_live_cluster(live_cluster: Callable[[list[dict[str, Any]]], Path]) -> None:
    kubeconfig = live_cluster(scenarios.documents("kpr-off"))
    result = run_cli("preflight", "--kubeconfig", str(kubeconfig), "-o", "json")
    assert result.exit_code == 3, result.stderr
    checks = {c["name"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["kube-proxy-replacement"]["severity"] == "ERROR"
    assert checks["cilium-installed"]["severity"] == "OK"
    assert checks["metallb"]["found"].startswith("MetalLB 0.15.2")
    assert checks["client-rate-limit"]["found"].startswith("2 Service(s) to announce")


def test_talos_machine_config_in_the_folder_is_read(tmp_path: Path) -> None:
    machine = {"version": "v1alpha1", "machine": {"type": "worker"},
               "cluster": {"proxy": {"disabled": True}, "network": {"cni": {"name": "none"}}}}
    folder = scenarios.write([*scenarios.documents("talos"), machine], tmp_path / "cluster")
    result = run_cli("preflight", "--from", str(folder), "-o", "json")
    assert result.exit_code == 0
    talos = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "talos")
    assert talos["severity"] == "OK"
