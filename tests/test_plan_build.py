"""The plan built from files: which pins are written, and the plan file round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrate.model.findings import Finding, Severity
from migrate.model.kube import METALLB_PREFIXES
from migrate.plan.api import load_plan, make_plan, save_plan
from migrate.plan.model import Plan
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


def _controller(version: str | None) -> str:
    image = f"quay.io/metallb/controller:v{version}" if version else (
        "quay.io/metallb/controller@sha256:0123abcd")
    return f"""---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: controller
  namespace: metallb-system
  labels: {{app: metallb, component: controller}}
spec:
  replicas: 1
  template: {{spec: {{containers: [{{name: controller, image: "{image}"}}]}}}}
"""


def _plan(tmp_path: Path, text: str) -> Plan:
    (tmp_path / "c.yaml").write_text(text)
    return make_plan(read_snapshot([tmp_path / "c.yaml"]), preflight=False)


def _pin_annotations(tmp_path: Path, text: str) -> dict[str, dict[str, str]]:
    plan = _plan(tmp_path, text)
    return {a.target.name: a.patch["metadata"].get("annotations", {})
            for a in plan.stage("pin").actions if a.patch}


def _metallb_pins(tmp_path: Path, text: str) -> dict[str, dict[str, str]]:
    """Per Service, the MetalLB annotations the pin stage writes."""
    return {name: {k: v for k, v in annotations.items() if k.startswith(METALLB_PREFIXES)}
            for name, annotations in _pin_annotations(tmp_path, text).items()}


def test_metallb_is_pinned_only_where_that_is_safe(tmp_path: Path) -> None:
    pins = _pin_annotations(tmp_path, POOLS + _controller("0.15.2")
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
    # 0.15 reads the legacy prefix when the new one is absent: the Service is pinned already
    assert "metallb.io/loadBalancerIPs" not in pins["requests"]
    assert "metallb.io/loadBalancerIPs" not in pins["spec-ip"]
    assert all(p["lbipam.cilium.io/ips"] for p in pins.values())
    assert not any("metallb.universe.tf/loadBalancerIPs" in p for p in pins.values())


@pytest.mark.parametrize(("version", "keys"), [
    ("0.14.8", ["metallb.universe.tf/loadBalancerIPs"]),
    ("0.13.12", ["metallb.universe.tf/loadBalancerIPs"]),
    ("0.14.9", ["metallb.io/loadBalancerIPs"]),
    ("0.16.1", ["metallb.io/loadBalancerIPs"]),
    (None, ["metallb.io/loadBalancerIPs", "metallb.universe.tf/loadBalancerIPs"]),
])
def test_the_pin_uses_the_prefix_the_controller_reads(tmp_path: Path, version: str | None,
                                                      keys: list[str]) -> None:
    text = POOLS + _controller(version) + _service("plain", "10.1.0.1")
    assert sorted(_metallb_pins(tmp_path, text)["plain"]) == keys
    why = _plan(tmp_path, text).stage("pin").why
    assert " and ".join(keys) in why
    assert (f"which MetalLB {version} reads" if version else "version is unknown") in why


def test_before_0_14_9_new_prefix_annotations_are_not_requests(tmp_path: Path) -> None:
    # v0.14.8's controller reads only metallb.universe.tf/: a metallb.io/ request or pool is
    # ignored there, so the Service is pinned under the prefix it reads.
    pins = _metallb_pins(tmp_path, POOLS + _controller("0.14.8")
                         + _service("new-request", "10.1.0.1",
                                    "{metallb.io/loadBalancerIPs: 10.1.0.1}")
                         + _service("new-pool", "10.1.0.2", "{metallb.io/address-pool: b}")
                         + _service("old-pool", "10.1.0.3",
                                    "{metallb.universe.tf/address-pool: b}"))
    assert pins["new-request"] == {"metallb.universe.tf/loadBalancerIPs": "10.1.0.1"}
    assert pins["new-pool"] == {"metallb.universe.tf/loadBalancerIPs": "10.1.0.2"}
    assert "old-pool" not in pins or pins["old-pool"] == {}


def test_unknown_version_repeats_a_request_under_the_other_prefix(tmp_path: Path) -> None:
    pins = _metallb_pins(tmp_path, POOLS + _controller(None)
                         + _service("same", "10.1.0.1", "{metallb.io/loadBalancerIPs: 10.1.0.1}")
                         + _service("other", "10.1.0.2",
                                    "{metallb.io/loadBalancerIPs: 10.1.0.9}"))
    assert pins["same"] == {"metallb.universe.tf/loadBalancerIPs": "10.1.0.1"}
    assert "other" not in pins or pins["other"] == {}  # a request for other IPs is left alone


def _restart_finding(tmp_path: Path, version: str | None, extra: str = "") -> Finding | None:
    plan = _plan(tmp_path, POOLS + _controller(version) + _service("plain", "10.1.0.1") + extra)
    return next((f for f in plan.findings if f.code == "freeze-metallb-rollback"), None)


PENDING = """---
apiVersion: v1
kind: Service
metadata: {name: waiting, namespace: apps}
spec: {type: LoadBalancer, ports: [{port: 80}]}
"""


def test_before_0_14_a_rollback_with_pending_services_is_a_warning(tmp_path: Path) -> None:
    finding = _restart_finding(tmp_path, "0.13.12", PENDING)
    assert finding is not None and finding.severity is Severity.WARNING
    assert finding.obj == "Deployment metallb-system/controller"
    assert "Rolling back freeze-metallb starts the controller of MetalLB 0.13.12" in (
        finding.message)
    assert "Services pending now: apps/waiting." in finding.message
    assert "metallb/metallb#2443, fixed in 0.14.0" in finding.message
    assert "upgrade MetalLB to 0.14.0" in finding.message
    quiet = _restart_finding(tmp_path, "0.13.12")
    assert quiet is not None and quiet.severity is Severity.INFO
    assert "No Service is pending now" in quiet.message


def test_from_0_14_the_restart_keeps_assigned_services_first(tmp_path: Path) -> None:
    assert _restart_finding(tmp_path, "0.14.0", PENDING) is None
    unknown = _restart_finding(tmp_path, None, PENDING)
    assert unknown is not None and unknown.severity is Severity.INFO
    assert "its version is unknown, so this may not apply" in unknown.message


def test_before_0_12_metallb_cannot_be_pinned(tmp_path: Path) -> None:
    plan = _plan(tmp_path, POOLS + _controller("0.11.0") + _service("plain", "10.1.0.1"))
    finding = next(f for f in plan.findings if f.code == "metallb-pin-unsupported")
    assert finding.severity is Severity.WARNING and "from 0.12.0" in finding.message


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
