"""``--wire``: the twin's nodes answer ARP in network namespaces as its models say, a prober
watches every IP through the whole rehearsal (root; namespaces of our own, deleted by name)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable

import pytest

from migrate.lab.wire import why_no_wire
from migrate.rehearse.wire import wire_prefix
from tests.helpers import run_cli
from tests.rehearse.conftest import CLUSTERS

pytestmark = pytest.mark.wire


def _our_namespaces() -> list[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return [line.split()[0] for line in listed.splitlines()
            if line.split() and line.split()[0].startswith(wire_prefix())]


@pytest.mark.skipif(why_no_wire() is not None, reason=str(why_no_wire()))
def test_the_wire_follows_the_twin_and_sees_one_announcer(
        figure: Callable[[str], None]) -> None:
    result = run_cli("rehearse", "--from", str(CLUSTERS / "guide-single-pool"), "--wire",
                     "--time-scale", "0.1", "-o", "json")
    assert result.exit_code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"]["status"] == "safe"
    assert report["time"] == "real (time scale 0.1)"
    wire = report["wire"]
    assert wire["rounds"] > 20
    assert {ip: data["doubledRounds"] for ip, data in wire["ips"].items()} == {
        "192.168.105.128": 0, "192.168.105.130": 0, "192.168.105.150": 0}
    for item in report["cutover"]:
        seen = item["wire"]["answers"]
        before, after = item["answers"][0], item["answers"][-1]
        # The wire shows what the models say: MetalLB's node first, the lease holder last.
        assert seen[0]["nodes"] == before["metallb"], item
        assert seen[-1]["nodes"] == after["cilium"], item
        figure(f"{item['ip']}: silent {item['wire']['cutoverSilence']}s on the wire at cutover"
              f" (models: {item['silence']}s)")
    assert next(r for r in report["stages"] if r["phase"] == "wire")["invariants"]["I2"] == "ok"
    assert _our_namespaces() == [], "every namespace of the rehearsal is gone"


def test_without_root_the_wire_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    import migrate.lab.wire as wire

    monkeypatch.setattr(wire, "why_no_wire", lambda: "the test wire needs root")
    result = run_cli("rehearse", "--from", str(CLUSTERS / "bgp-kinds"), "--wire",
                     "--time-scale", "0.1")
    assert result.exit_code == 1
    assert "--wire: the test wire needs root" in result.stderr
