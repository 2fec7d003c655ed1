"""The real cluster is only read: a rehearsal of a live cluster (a lab here) sends it GETs and
nothing else, never for a Secret; the snapshot it saves replays the same rehearsal and loads
into ``python -m migrate.lab serve``."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import yaml

from migrate.kube import Kube
from migrate.lab.wire import python_env, stop_process
from migrate.rehearse.records import Request
from tests.engine.conftest import ClusterFactory, cluster_factory
from tests.helpers import run_cli

__all__ = ["cluster_factory"]


def _requests_by_resource(requests: list[tuple[str, str]]) -> Counter[tuple[str, str]]:
    return Counter((method, Request(method, path).resource) for method, path in requests)


def test_a_rehearsal_only_reads_the_cluster_and_never_a_secret(
        cluster_factory: ClusterFactory, tmp_path: Path) -> None:
    cluster = cluster_factory("several-pools-shared")
    cluster.settle(0.2)
    served_before = cluster.server.request_count
    snapshot = tmp_path / "snapshot"
    result = run_cli("rehearse", "--kubeconfig", str(cluster.kubeconfig), "--chaos", "2",
                     "--save-snapshot", str(snapshot), "-o", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"]["status"] == "safe"
    assert report["source"] == "cluster" and report["fidelity"] == []
    requests = list(cluster.server.requests)[served_before - cluster.server.request_count:]
    by_resource = _requests_by_resource(requests)
    assert requests and {method for method, _ in requests} == {"GET"}, by_resource
    assert not any(resource == "secrets" for _, resource in by_resource), by_resource
    # What plan reads: Services, Nodes, MetalLB's and Cilium's objects.
    for resource in ("services", "nodes", "ipaddresspools", "l2advertisements", "deployments"):
        assert ("GET", resource) in by_resource, by_resource
    # Nothing was written: no status write, no field of ours, no state, no lock.
    assert cluster.store.status_writes == []
    managers = {entry.get("manager") for obj in cluster.store.list("", "Service")
                for entry in obj["metadata"].get("managedFields") or []}
    assert "lbmigrate" not in managers
    assert cluster.store.try_get("", "ConfigMap", "lbmigrate-state", "kube-system") is None
    assert cluster.store.try_get("coordination.k8s.io", "Lease", "lbmigrate-lock",
                                 "kube-system") is None

    # The saved snapshot replays the same rehearsal (same seed, same report but its source).
    assert (snapshot / "README.txt").exists()
    again = run_cli("rehearse", "--from", str(snapshot), "--chaos", "2", "-o", "json")
    assert again.exit_code == 0, again.stderr
    replay = json.loads(again.stdout)
    for key in ("stages", "cutover", "verdict", "planFingerprint", "findings"):
        assert replay[key] == report[key], key
    assert [r["seed"] for r in replay["chaos"]["results"]] == [
        r["seed"] for r in report["chaos"]["results"]]


def test_the_saved_snapshot_serves_in_the_lab(tmp_path: Path) -> None:
    from tests.engine.conftest import CLUSTERS

    snapshot = tmp_path / "snapshot"
    result = run_cli("rehearse", "--from", str(CLUSTERS / "guide-single-pool"),
                     "--save-snapshot", str(snapshot), "-o", "json")
    assert result.exit_code == 0, result.stderr
    saved = sorted(p.name for p in snapshot.glob("*.yaml"))
    assert "core-service.yaml" in saved and "metallb.io-ipaddresspool.yaml" in saved
    for path in snapshot.glob("*.yaml"):
        for document in yaml.safe_load_all(path.read_text()):
            assert "resourceVersion" not in document["metadata"], path
    kubeconfig = tmp_path / "kubeconfig"
    server = subprocess.Popen(
        [sys.executable, "-m", "migrate.lab", "serve", "--snapshot", str(snapshot),
         "--kubeconfig-out", str(kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=python_env())
    try:
        deadline = time.monotonic() + 30
        while not kubeconfig.exists():
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "the lab did not start"
            time.sleep(0.1)
        kube = Kube.from_kubeconfig(str(kubeconfig))
        services = {s["metadata"]["name"]: s for s in kube.list("v1", "Service")
                    if (s.get("spec") or {}).get("type") == "LoadBalancer"}
        assert sorted(services) == ["api", "grafana", "web"]
        assert services["web"]["status"]["loadBalancer"]["ingress"] == [
            {"ip": "192.168.105.128"}]
        kube.close()
    finally:
        stop_process(server)


def test_the_snapshot_folder_must_be_empty(tmp_path: Path) -> None:
    from tests.engine.conftest import CLUSTERS

    (tmp_path / "other.yaml").write_text("kind: ConfigMap\n")
    result = run_cli("rehearse", "--from", str(CLUSTERS / "bgp-kinds"), "--save-snapshot",
                     str(tmp_path))
    assert result.exit_code == 1
    assert "empty" in result.stderr and "--save-snapshot" in result.stderr


def test_bgp_passwords_stay_out_of_the_snapshot(tmp_path: Path) -> None:
    from migrate.sources.snapshot import read_snapshot
    from tests.engine.conftest import CLUSTERS

    snapshot = read_snapshot([CLUSTERS / "bgp-kinds"])
    peer = next(d.body for d in snapshot.documents if d.body.get("kind") == "BGPPeer")
    peer.setdefault("spec", {})["password"] = "s3cret"
    from migrate.rehearse.source import save_snapshot

    save_snapshot(snapshot, tmp_path / "saved")
    text = "".join(p.read_text() for p in (tmp_path / "saved").glob("*.yaml"))
    assert "s3cret" not in text and "redacted-by-migrate" in text


@pytest.mark.parametrize("option", ["--time-scale=0", "--chaos=-1"])
def test_bad_options_are_usage_errors(option: str) -> None:
    result = run_cli("rehearse", "--from", "testdata/clusters/bgp-kinds", option)
    assert result.exit_code == 2
