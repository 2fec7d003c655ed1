"""Every MetalLB x Cilium pair of tests/engine/version_matrix.py either migrates end to end on
the asynchronous lab (virtual time), keeping every IP at every status write with never two
announcers, or ``plan`` blocks it with an ERROR finding that says why; the README lists the
pairs that block."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from migrate.apply.executor import apply_stage
from migrate.plan.api import make_plan
from migrate.plan.views import ingress_ips
from migrate.sources.live import read_live
from migrate.sources.snapshot import read_snapshot
from tests.conftest import REPO
from tests.engine.conftest import ClusterFactory
from tests.engine.version_matrix import (
    Pair,
    build_cluster,
    pairs,
    readme_section,
    readme_table,
    release,
)

PAIRS = list(pairs())
MIGRATING = [p for p in PAIRS if not p.expected_blocks()]
BLOCKED = [p for p in PAIRS if p.expected_blocks()]


def _prefix(metallb: str) -> str:
    """The annotation prefix MetalLB's controller reads (controller/service.go, PR #2495)."""
    return "metallb.io/" if release(metallb) >= (0, 14, 9) else "metallb.universe.tf/"


@pytest.mark.parametrize("pair", BLOCKED, ids=lambda p: p.id)
def test_plan_blocks_the_pair_and_says_why(tmp_path: Path, pair: Pair) -> None:
    plan = make_plan(read_snapshot([build_cluster(pair, tmp_path)]))
    errors = [f for f in plan.findings if f.severity.value == "ERROR"]
    assert plan.blocked
    assert tuple(f.code for f in errors) == pair.expected_blocks()
    (race,) = errors
    assert f"Cilium {pair.cilium}" in race.message
    assert "shop/new-app (pending (no IP))" in race.message
    assert "cilium/cilium#43131" in race.message


@pytest.mark.parametrize("pair", MIGRATING, ids=lambda p: p.id)
def test_the_pair_migrates_keeping_every_ip(tmp_path: Path, pair: Pair,
                                            virtual_cluster_factory: ClusterFactory) -> None:
    cluster = virtual_cluster_factory(build_cluster(pair, tmp_path), seed=PAIRS.index(pair))
    plan = make_plan(read_live(cluster.kube))
    assert not plan.blocked, [f.message for f in plan.findings if f.severity.value == "ERROR"]
    # Before 0.14.0 a rollback's controller restart can hand a pinned IP to a pending Service:
    # the plan warns, naming it (the migration itself never restarts MetalLB's controller).
    restart = [f for f in plan.findings if f.code == "freeze-metallb-rollback"
               and f.severity.value == "WARNING"]
    assert bool(restart) == (pair.pending and release(pair.metallb) < (0, 14, 0))
    assert all("shop/new-app" in f.message for f in restart)
    for stage in plan.stages:
        result = apply_stage(cluster.kube, plan, stage.name, options=cluster.options())
        assert result.outcome == "applied", stage.name
        cluster.assert_ips_kept(plan.expected_ips)
        if stage.name == "pin":
            # MetalLB's own pin is under the prefix its controller reads.
            web = cluster.kube.get("v1", "Service", "web", "shop")["metadata"]["annotations"]
            assert web[_prefix(pair.metallb) + "loadBalancerIPs"] == "192.168.105.128"
    cluster.settle(30)
    cluster.assert_ips_kept(plan.expected_ips)
    assert cluster.controllers.record.overlaps(same_node_counts=True) == []
    announced = cluster.controllers.announcements()
    for ips in plan.expected_ips.values():
        for ip in ips:
            assert announced[ip].cilium_nodes and not announced[ip].metallb_nodes, ip
    if pair.pending:
        # MetalLB left it pending; LB-IPAM gives it a free address of the pool, as the plan
        # said (ip-unknown: "Cilium will allocate a new address").
        pending = cluster.kube.get("v1", "Service", "new-app", "shop")
        (given,) = ingress_ips(pending)
        assert given.startswith("192.168.105.")
        assert given not in {ip for ips in plan.expected_ips.values() for ip in ips}
        assert any(f.code == "ip-unknown" and f.obj == "Service shop/new-app"
                   for f in plan.findings)


def test_the_readme_lists_the_pairs_that_block(tmp_path: Path) -> None:
    """The README's table is what plan says for every pair (its ERROR findings), which is what
    the matrix expects; MIGRATE_UPDATE_GOLDEN=1 rewrites it."""
    said = {}
    for pair in PAIRS:
        plan = make_plan(read_snapshot([build_cluster(pair, tmp_path)]))
        said[pair] = [f.code for f in plan.findings if f.severity.value == "ERROR"]
    assert readme_table(said) == readme_table()
    path = REPO / "README.md"
    readme = path.read_text()
    current = readme_section(readme)
    assert current, "README.md has no version-matrix table"
    if os.environ.get("MIGRATE_UPDATE_GOLDEN"):
        path.write_text(readme.replace(current, readme_table(said)))
        return
    assert current == readme_table(said)
