"""Preflight is stage 0 of the plan: its findings are the plan's, and an ERROR blocks apply."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from migrate.apply.executor import apply_stage
from migrate.errors import BlockedError
from migrate.kube import Kube
from migrate.lab.server import LabServer
from migrate.lab.store import Clock, Store
from migrate.plan.api import make_plan
from migrate.preflight import run_preflight
from migrate.sources.live import read_live
from tests.conftest import TESTDATA
from tests.engine.conftest import fast_options


def test_kube_proxy_replacement_off_blocks_the_plan(tmp_path: Path) -> None:
    folder = tmp_path / "cluster"
    shutil.copytree(TESTDATA / "clusters" / "guide-single-pool", folder)
    cilium = folder / "cilium.yaml"
    cilium.write_text(cilium.read_text().replace('kube-proxy-replacement: "true"',
                                                 'kube-proxy-replacement: "false"'))
    store, _ = Store.from_snapshot([folder], Clock.real())
    server = LabServer(store).start()
    kube = Kube.from_kubeconfig(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    try:
        snapshot = read_live(kube)
        plan = make_plan(snapshot)
        preflight = run_preflight(snapshot)
        assert preflight.blocking
        codes = {f.code for f in plan.findings}
        assert {f"preflight:{f.code.removeprefix('preflight:')}"
                for f in preflight.findings()} <= codes
        assert plan.blocked
        assert any("kube-proxy-replacement" in check for check in plan.stages[0].checks_before)
        with pytest.raises(BlockedError, match="ERROR findings"):
            apply_stage(kube, plan, "pin", options=fast_options())
        assert "lbipam.cilium.io/ips" not in (
            store.get("", "Service", "web", "shop")["metadata"].get("annotations") or {})
    finally:
        kube.close()
        server.stop()
