"""The plan built from files: which pins are written, and the plan file round trip."""

from __future__ import annotations

from pathlib import Path

from migrate.plan.api import load_plan, make_plan, save_plan
from migrate.sources.snapshot import read_snapshot
from tests.conftest import TESTDATA

POOLS = """
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: a, namespace: metallb-system}
spec: {addresses: [10.1.0.0/28]}
---
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: b, namespace: metallb-system}
spec: {addresses: [10.2.0.0/28]}
---
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: all, namespace: metallb-system}
"""


def _service(name: str, ip: str, annotations: str = "{}", spec_ip: str = "") -> str:
    extra = f"\n  loadBalancerIP: {spec_ip}" if spec_ip else ""
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: apps, annotations: {annotations}}}
spec:
  type: LoadBalancer
  ports: [{{port: 80}}]{extra}
status: {{loadBalancer: {{ingress: [{{ip: {ip}}}]}}}}
"""


def _pin_annotations(tmp_path: Path, text: str) -> dict[str, dict[str, str]]:
    (tmp_path / "c.yaml").write_text(text)
    plan = make_plan(read_snapshot([tmp_path / "c.yaml"]), preflight=False)
    return {a.target.name: a.patch["metadata"].get("annotations", {})
            for a in plan.stage("pin").actions if a.patch}


def test_metallb_is_pinned_only_where_that_is_safe(tmp_path: Path) -> None:
    pins = _pin_annotations(tmp_path, POOLS
                            + _service("plain", "10.1.0.1")
                            + _service("asks-same", "10.1.0.2", "{metallb.io/address-pool: a}")
                            + _service("asks-other", "10.1.0.3", "{metallb.io/address-pool: b}")
                            + _service("requests", "10.1.0.4",
                                       "{metallb.universe.tf/loadBalancerIPs: 10.1.0.4}")
                            + _service("spec-ip", "10.1.0.5", spec_ip="10.1.0.5"))
    assert pins["plain"]["metallb.io/loadBalancerIPs"] == "10.1.0.1"
    assert pins["asks-same"]["metallb.io/loadBalancerIPs"] == "10.1.0.2"
    # a requested IP that disagrees with the address-pool annotation fails MetalLB's allocation
    assert "metallb.io/loadBalancerIPs" not in pins["asks-other"]
    assert "metallb.io/loadBalancerIPs" not in pins["requests"]
    assert "metallb.io/loadBalancerIPs" not in pins["spec-ip"]
    assert all(p["lbipam.cilium.io/ips"] for p in pins.values())


def test_plan_file_round_trip_yaml_and_json(tmp_path: Path) -> None:
    plan = make_plan(read_snapshot([TESTDATA / "clusters" / "several-pools-shared"]))
    for name in ("plan.yaml", "plan.json"):
        save_plan(plan, tmp_path / name)
        loaded = load_plan(tmp_path / name)
        assert loaded.digest() == plan.digest()
        assert [a.after for s in loaded.stages for a in s.actions] == [
            a.after for s in plan.stages for a in s.actions]


def test_an_existing_overlapping_cilium_pool_blocks_the_plan(tmp_path: Path) -> None:
    import shutil

    folder = tmp_path / "cluster"
    shutil.copytree(TESTDATA / "clusters" / "guide-single-pool", folder)
    (folder / "old-pool.yaml").write_text(
        "apiVersion: cilium.io/v2\nkind: CiliumLoadBalancerIPPool\n"
        "metadata: {name: earlier-test}\n"
        "spec: {blocks: [{start: 192.168.105.150, stop: 192.168.105.160}]}\n")
    plan = make_plan(read_snapshot([folder]))
    assert plan.blocked
    overlap = next(f for f in plan.findings if f.code == "cilium-pool-overlap")
    assert "earlier-test" in overlap.obj and "192.168.105.150" in overlap.message
