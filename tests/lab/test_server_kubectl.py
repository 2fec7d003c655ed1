"""kubectl against the lab: in-process servers, and ``python -m migrate.lab serve``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.conftest import Lab, LabFactory

KUBECTL = shutil.which("kubectl")
FIXTURES = Path(__file__).resolve().parent / "fixtures"
REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run kubectl against a kubeconfig, with its caches in a folder of the test's own."""
    assert KUBECTL is not None
    cache = kubeconfig.parent / "kube-cache"
    result = subprocess.run(
        [KUBECTL, "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache),
         "--request-timeout", "20s", *args],
        input=stdin, capture_output=True, text=True, timeout=60,
        env={**os.environ, "HOME": str(kubeconfig.parent)},
    )
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
    return result


@pytest.fixture
def basic(lab_factory: LabFactory) -> Lab:
    """A lab loaded from tests/lab/fixtures/basic."""
    return lab_factory(snapshot=[FIXTURES / "basic"])


SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: api
  namespace: default
spec:
  type: LoadBalancer
  ports:
  - name: http
    port: {port}
"""

CILIUM_POOL = """
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata:
  name: blue
spec:
  allowFirstLastIPs: {allow}
  blocks:
  - cidr: 198.51.100.0/28
"""


def test_get_services_across_namespaces_shows_external_ips(basic: Lab) -> None:
    out = kubectl(basic.kubeconfig, "get", "svc", "-A").stdout
    lines = [line.split() for line in out.splitlines()]
    assert lines[0][:6] == ["NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)"]
    rows = {(cols[0], cols[1]): cols for cols in lines[1:]}
    assert rows[("default", "web")][4] == "192.0.2.1"
    assert rows[("kube-system", "dns")][4] == "<none>"


def test_get_custom_resources_by_plural_and_short_name(basic: Lab, shared_dir: Path) -> None:
    # The printer columns shown come from the real CRDs, in the shared folder.
    pools = kubectl(basic.kubeconfig, "get", "ipaddresspools", "-A").stdout
    assert "192.0.2.0/28" in pools and "metallb-system" in pools
    kubectl(basic.kubeconfig, "apply", "-f", "-", stdin=CILIUM_POOL.format(allow='"No"'))
    for name in ("ippools", "ciliumloadbalancerippools", "ciliumloadbalancerippools.cilium.io"):
        assert "blue" in kubectl(basic.kubeconfig, "get", name).stdout


def test_custom_resource_columns_follow_the_crd_printer_columns(
    basic: Lab, shared_dir: Path
) -> None:
    kubectl(basic.kubeconfig, "apply", "-f", "-", stdin=CILIUM_POOL.format(allow='"No"'))
    pool = basic.store.get("cilium.io", "CiliumLoadBalancerIPPool", "blue")
    pool["status"] = {"conditions": [
        {"type": "cilium.io/IPsAvailable", "status": "True", "message": "14",
         "reason": "Allocated", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "cilium.io/PoolConflict", "status": "False", "message": "",
         "reason": "NoConflict", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    basic.store.update(pool, subresource="status", manager="cilium-operator")
    lines = kubectl(basic.kubeconfig, "get", "ippools").stdout.splitlines()
    header = lines[0].split()
    row = dict(zip(["NAME", "DISABLED", "CONFLICTING", "IPS"], lines[1].split(), strict=False))
    assert header[:3] == ["NAME", "DISABLED", "CONFLICTING"]
    assert row == {"NAME": "blue", "DISABLED": "false", "CONFLICTING": "False", "IPS": "14"}


def test_apply_creates_then_configures(basic: Lab) -> None:
    first = kubectl(basic.kubeconfig, "apply", "-f", "-", stdin=SERVICE.format(port=80))
    assert "service/api created" in first.stdout
    again = kubectl(basic.kubeconfig, "apply", "-f", "-", stdin=SERVICE.format(port=80))
    assert "service/api unchanged" in again.stdout
    changed = kubectl(basic.kubeconfig, "apply", "-f", "-", stdin=SERVICE.format(port=8443))
    assert "service/api configured" in changed.stdout
    ports = basic.store.get("", "Service", "api", "default")["spec"]["ports"]
    assert [p["port"] for p in ports] == [8443]


def test_server_side_apply(basic: Lab) -> None:
    out = kubectl(basic.kubeconfig, "apply", "--server-side", "--field-manager", "migrate",
                  "-f", "-", stdin=CILIUM_POOL.format(allow='"Yes"'))
    assert "serverside-applied" in out.stdout
    pool = basic.store.get("cilium.io", "CiliumLoadBalancerIPPool", "blue")
    assert {"manager": "migrate", "operation": "Apply"}.items() <= pool["metadata"][
        "managedFields"][-1].items()


def test_patch_each_way(basic: Lab) -> None:
    kubectl(basic.kubeconfig, "patch", "svc", "web", "-p",
            '{"spec":{"ports":[{"port":80,"targetPort":9090}]}}')
    port = basic.store.get("", "Service", "web", "default")["spec"]["ports"][0]
    assert port == {**port, "name": "http", "port": 80, "targetPort": 9090}
    kubectl(basic.kubeconfig, "patch", "ipaddresspool", "-n", "metallb-system", "default",
            "--type", "merge", "-p", '{"spec":{"autoAssign":false}}')
    kubectl(basic.kubeconfig, "patch", "ipaddresspool", "-n", "metallb-system", "default",
            "--type", "json", "-p", '[{"op":"add","path":"/spec/addresses/-",'
            '"value":"192.0.2.64/28"}]')
    pool = basic.store.get("metallb.io", "IPAddressPool", "default", "metallb-system")
    assert pool["spec"]["autoAssign"] is False
    assert pool["spec"]["addresses"] == ["192.0.2.0/28", "192.0.2.64/28"]
    refused = kubectl(basic.kubeconfig, "patch", "ipaddresspool", "-n", "metallb-system",
                      "default", "--type", "strategic", "-p", '{"spec":{"autoAssign":true}}',
                      check=False)
    assert refused.returncode != 0
    assert "strategic-merge-patch" in refused.stderr


def test_schema_invalid_resource_is_refused(basic: Lab) -> None:
    refused = kubectl(basic.kubeconfig, "apply", "-f", "-",
                      stdin=CILIUM_POOL.format(allow='"Maybe"'), check=False)
    assert refused.returncode != 0
    assert 'spec.allowFirstLastIPs: Unsupported value: "Maybe"' in refused.stderr
    assert basic.store.try_get("cilium.io", "CiliumLoadBalancerIPPool", "blue") is None


def test_unknown_field_is_refused_by_default_and_warned_about_on_request(basic: Lab) -> None:
    typo = CILIUM_POOL.format(allow='"No"') + "  serviceSelectr: {}\n"
    refused = kubectl(basic.kubeconfig, "apply", "-f", "-", stdin=typo, check=False)
    assert refused.returncode != 0
    assert 'unknown field "spec.serviceSelectr"' in refused.stderr
    warned = kubectl(basic.kubeconfig, "apply", "--validate=warn", "-f", "-", stdin=typo)
    assert 'Warning: unknown field "spec.serviceSelectr"' in warned.stderr
    assert "serviceSelectr" not in basic.store.get("cilium.io", "CiliumLoadBalancerIPPool",
                                                   "blue")["spec"]


def test_stale_replace_is_a_conflict(basic: Lab, tmp_path: Path) -> None:
    stale = kubectl(basic.kubeconfig, "get", "svc", "web", "-o", "yaml").stdout
    kubectl(basic.kubeconfig, "label", "svc", "web", "touched=yes")
    path = tmp_path / "stale.yaml"
    path.write_text(stale)
    refused = kubectl(basic.kubeconfig, "replace", "-f", str(path), check=False)
    assert refused.returncode != 0
    assert "the object has been modified" in refused.stderr


def test_scale_and_label_selector(basic: Lab) -> None:
    kubectl(basic.kubeconfig, "scale", "deployment", "controller", "-n", "metallb-system",
            "--replicas=0")
    deployment = basic.store.get("apps", "Deployment", "controller", "metallb-system")
    assert deployment["spec"]["replicas"] == 0
    names = kubectl(basic.kubeconfig, "get", "svc", "-A", "-l", "app=web", "-o", "name").stdout
    assert names.split() == ["service/web"]


def test_delete_and_dry_run(basic: Lab) -> None:
    kubectl(basic.kubeconfig, "delete", "svc", "web", "--dry-run=server")
    assert basic.store.try_get("", "Service", "web", "default") is not None
    kubectl(basic.kubeconfig, "delete", "svc", "web")
    assert basic.store.try_get("", "Service", "web", "default") is None


def test_serve_subprocess_writes_a_kubeconfig_kubectl_uses(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "lab.kubeconfig"
    process = subprocess.Popen(
        [sys.executable, "-m", "migrate.lab", "serve", "--snapshot", str(FIXTURES / "basic"),
         "--port", "0", "--kubeconfig-out", str(kubeconfig)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while not kubeconfig.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"serve did not start: {process.communicate()}")
            time.sleep(0.05)
        out = kubectl(kubeconfig, "get", "svc", "-A", "-o", "name").stdout
        assert set(out.split()) == {"service/web", "service/dns"}
        assert "127.0.0.1" in kubeconfig.read_text()
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    assert process.returncode == 0
