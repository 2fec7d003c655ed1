"""``python -m migrate.lab serve --time-scale 0.05 --seed N``: the asynchronous lab in its own
process, fast: a Deployment scaled to 0 reports no replica at once while its pod terminates,
and the pod is gone within its grace period × the scale."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from migrate.kube import Kube, RetryPolicy
from tests.conftest import TESTDATA
from tests.wire import stop_process

GUIDE = TESTDATA / "clusters" / "guide-single-pool"


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Kube, str]]:
    kubeconfig = tmp_path / "kubeconfig"
    process = subprocess.Popen(
        [sys.executable, "-m", "migrate.lab", "serve", "--snapshot", str(GUIDE), "--port", "0",
         "--kubeconfig-out", str(kubeconfig), "--time-scale", "0.05", "--seed", "7"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        kube = Kube.from_kubeconfig(str(kubeconfig), retry=RetryPolicy(attempts=4,
                                                                       base_delay=0.01))
        yield kube, line
        kube.close()
    finally:
        stop_process(process)


def controller_pods(kube: Kube) -> list[dict[str, object]]:
    return kube.list("v1", "Pod", namespace="metallb-system",
                     label_selector="component=controller")


def test_serve_scaled_time_terminates_a_pod_within_its_scaled_grace_period(
        served: tuple[Kube, str]) -> None:
    kube, line = served
    assert "realistic timing, time scale 0.05, seed 7" in line
    (_pod,) = controller_pods(kube)
    kube.patch("apps/v1", "Deployment", "controller", {"spec": {"replicas": 0}},
               namespace="metallb-system")
    deadline = time.monotonic() + 10
    seen_terminating = False
    while time.monotonic() < deadline:
        status = kube.get("apps/v1", "Deployment", "controller", "metallb-system").get(
            "status") or {}
        left = controller_pods(kube)
        if left and left[0]["metadata"].get("deletionTimestamp"):  # type: ignore[index]
            seen_terminating = True
            assert not status.get("replicas")  # already not counted
        if not left:
            break
        time.sleep(0.02)
    assert seen_terminating
    assert controller_pods(kube) == []  # 30 s grace × 0.05 = at most 1.5 s
    started = time.monotonic()
    kube.patch("apps/v1", "Deployment", "controller", {"spec": {"replicas": 1}},
               namespace="metallb-system")
    while time.monotonic() - started < 10:
        status = kube.get("apps/v1", "Deployment", "controller", "metallb-system").get(
            "status") or {}
        if status.get("readyReplicas") == 1:
            break
        time.sleep(0.02)
    assert status.get("readyReplicas") == 1
    assert time.monotonic() - started < 2.0  # a 2 to 8 s start, scaled: under 0.4 s
