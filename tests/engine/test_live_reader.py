"""The live reader sees what the file reader sees, with LISTs only (no GET per Service)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from migrate.kube import Kube
from migrate.lab.server import LabServer
from migrate.lab.store import Clock, Store
from migrate.sources.live import read_live
from migrate.sources.snapshot import ClusterSnapshot, read_snapshot
from tests.conftest import TESTDATA

SCENARIOS = sorted(
    [p for p in (TESTDATA / "clusters").iterdir() if p.is_dir()]
    + [p / "input.yaml" for p in (TESTDATA / "convert").iterdir()
       if (p / "input.yaml").exists() and not p.name.startswith("invalid-")]
)


def summary(snapshot: ClusterSnapshot) -> dict[str, Any]:
    """What the migration reads from a snapshot, without where it came from."""
    return {
        "namespace": snapshot.metallb_namespace,
        "pools": sorted(
            (p.name, tuple(a.text for a in p.addresses), p.auto_assign, p.avoid_buggy_ips,
             repr(p.service_allocation)) for p in snapshot.pools),
        "l2": sorted((a.name, a.pool_names, repr(a.pool_selectors), repr(a.node_selectors),
                      a.interfaces, repr(a.service_selectors))
                     for a in snapshot.l2_advertisements),
        "bgp": sorted((a.ref.name, a.pool_names) for a in snapshot.bgp_advertisements),
        "peers": sorted(p.ref.name for p in snapshot.bgp_peers),
        "services": sorted(
            (s.key, s.type, s.load_balancer_class, s.load_balancer_ip, s.ingress_ips,
             tuple(sorted(s.annotations.items())), tuple(sorted(s.labels.items())))
            for s in snapshot.services),
        "nodes": sorted((n.name, tuple(sorted(n.labels.items()))) for n in snapshot.nodes),
    }


def _served(path: Path, tmp_path: Path) -> tuple[Kube, LabServer]:
    store, skipped = Store.from_snapshot([path], Clock.real())
    if skipped:
        pytest.skip(f"the lab cannot hold every document of {path.name}: {skipped[0]}")
    server = LabServer(store).start()
    kubeconfig = server.write_kubeconfig(tmp_path / "kubeconfig")
    return Kube.from_kubeconfig(str(kubeconfig)), server


@pytest.mark.parametrize("path", SCENARIOS, ids=[f"{p.parent.name}/{p.name}" for p in SCENARIOS])
def test_live_snapshot_equals_file_snapshot(path: Path, tmp_path: Path) -> None:
    from_files = read_snapshot([path])
    kube, server = _served(path, tmp_path)
    try:
        live = read_live(kube)
    finally:
        kube.close()
        server.stop()
    expected, actual = summary(from_files), summary(live)
    # Objects without a namespace in the files land in "default" on a server.
    assert actual == expected


def _cluster_with_services(folder: Path, count: int) -> Path:
    import shutil

    import yaml

    shutil.copytree(TESTDATA / "clusters" / "guide-single-pool", folder)
    services = [{"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": f"extra-{i}", "namespace": "shop"},
                 "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
                 "status": {"loadBalancer": {"ingress": [
                     {"ip": f"192.168.105.{140 + i % 10}"}]}}} for i in range(count)]
    (folder / "extra.yaml").write_text(yaml.safe_dump_all(services))
    return folder


def test_requests_do_not_grow_with_services_beyond_pagination(tmp_path: Path) -> None:
    counts = {}
    for count in (10, 250):
        folder = _cluster_with_services(tmp_path / f"c{count}", count)
        kube, server = _served(folder, tmp_path / f"k{count}")
        kube.page_size = 100
        try:
            snapshot = read_live(kube)
            assert len([s for s in snapshot.services if s.name.startswith("extra-")]) == count
            counts[count] = kube.requests
            gets = [p for m, p in server.requests if m == "GET" and "/services/" in p]
            assert gets == [], "Services are listed, never read one by one"
        finally:
            kube.close()
            server.stop()
    # 14 Services fit in one page of 100, 254 need three: two more requests, no more.
    assert counts[250] - counts[10] == 2
