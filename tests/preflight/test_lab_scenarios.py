"""Every preflight scenario, served by the lab and read live, gives the same checks as from files.

Scenarios holding objects the lab cannot serve (kinds without a CRD, such as Flux's) are
skipped with the reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.kube import Kube
from migrate.lab.server import LabServer
from migrate.lab.store import Clock, Store
from migrate.preflight import run_preflight
from migrate.sources.live import read_live
from tests.preflight.scenarios import documents, scenario_names, snapshot, write


def _checks(report: object) -> list[tuple[str, str]]:
    return [(c.name, str(c.severity)) for c in report.checks]  # type: ignore[attr-defined]


@pytest.mark.parametrize("scenario", ["base", *scenario_names()])
def test_live_preflight_matches_files(scenario: str, tmp_path: Path) -> None:
    docs = documents() if scenario == "base" else documents(scenario)
    folder = write(docs, tmp_path / "cluster")
    store, skipped = Store.from_snapshot([folder], Clock.real())
    if skipped:
        pytest.skip(f"the lab cannot serve every object of {scenario}: {skipped[0]}")
    server = LabServer(store).start()
    kube = Kube.from_kubeconfig(str(server.write_kubeconfig(tmp_path / "kubeconfig")))
    try:
        live = run_preflight(read_live(kube))
    finally:
        kube.close()
        server.stop()
    from_files = run_preflight(snapshot(docs))
    assert _checks(live) == _checks(from_files)
    assert live.blocking == from_files.blocking
