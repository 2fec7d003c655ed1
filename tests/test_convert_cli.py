"""`migrate convert` as a user runs it: outputs, streams, formats, folders and exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import TESTDATA
from tests.helpers import run_cli

CASE = TESTDATA / "convert"


def test_yaml_output_is_cilium_objects_then_services() -> None:
    result = run_cli("convert", "-f", str(CASE / "single-pool" / "input.yaml"))
    assert result.exit_code == 0
    kinds = [doc["kind"] for doc in yaml.safe_load_all(result.stdout)]
    assert kinds == ["CiliumLoadBalancerIPPool", "CiliumL2AnnouncementPolicy", "Service",
                     "Service"]
    assert "pool(s)" in result.stderr  # the summary goes to stderr, not into the manifests


def test_service_output_drops_server_fields_and_keeps_the_rest() -> None:
    result = run_cli("convert", "-f", str(CASE / "kubectl-dump" / "input.yaml"))
    service = next(d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "Service")
    metadata = service["metadata"]
    for field in ("resourceVersion", "uid", "creationTimestamp", "managedFields"):
        assert field not in metadata
    assert "status" not in service
    assert "kubectl.kubernetes.io/last-applied-configuration" not in metadata["annotations"]
    assert metadata["annotations"]["lbipam.cilium.io/ips"] == "10.10.10.1"
    assert service["spec"]["selector"] == {"app.kubernetes.io/name": "traefik"}


def test_json_output_has_items_pins_and_findings() -> None:
    result = run_cli("convert", "-f", str(CASE / "service-allocation" / "input.yaml"), "-o",
                     "json")
    payload = json.loads(result.stdout)
    assert payload["ciliumVersion"] == "1.20"
    assert {item["kind"] for item in payload["items"]} >= {"CiliumLoadBalancerIPPool"}
    assert {pin["service"] for pin in payload["pins"]} == {
        "team-a/app", "web/site", "backend/cache", "identity/ldap"}
    severities = {f["severity"] for f in payload["findings"]}
    assert severities == {"WARNING"}
    first = payload["findings"][0]
    assert set(first) >= {"severity", "code", "object", "field", "message"}


def test_findings_table_goes_to_stderr() -> None:
    result = run_cli("convert", "-f", str(CASE / "pool-not-advertised" / "input.yaml"))
    assert "pool-not-announced" not in result.stdout
    assert "IPAddressPool metallb-system/silent" in result.stderr
    assert "IPAddressPool" not in result.stderr.split("Findings")[0]


def test_error_finding_exits_3_but_still_prints_the_translation() -> None:
    result = run_cli("convert", "-f", str(CASE / "lb-class" / "input.yaml"))
    assert result.exit_code == 3
    assert "CiliumLoadBalancerIPPool" in result.stdout
    assert "ERROR" in result.stderr


def test_cilium_version_picks_pool_api_version() -> None:
    case = str(CASE / "single-pool" / "input.yaml")
    newest = yaml.safe_load_all(run_cli("convert", "-f", case).stdout)
    old = yaml.safe_load_all(run_cli("convert", "-f", case, "--cilium-version", "1.17").stdout)
    assert next(iter(newest))["apiVersion"] == "cilium.io/v2"
    assert next(iter(old))["apiVersion"] == "cilium.io/v2alpha1"
    legacy = run_cli("convert", "-f", case, "--cilium-version", "v1.15.6").stdout
    assert "io.cilium/lb-ipam-ips" in legacy


def test_folders_are_read_recursively(tmp_path: Path) -> None:
    nested = tmp_path / "clusters" / "home" / "metallb"
    nested.mkdir(parents=True)
    shutil.copy(CASE / "ranges" / "input.yaml", nested / "metallb.yml")
    (tmp_path / "README.md").write_text("not yaml")
    result = run_cli("convert", "-f", str(tmp_path))
    assert result.exit_code == 0
    assert "name: lan" in result.stdout


def test_standard_input_and_console_script(tmp_path: Path) -> None:
    text = (CASE / "ranges" / "input.yaml").read_text()
    process = subprocess.run(
        [sys.executable, "-m", "migrate.cli", "convert", "-f", "-"],
        input=text, capture_output=True, text=True, check=False,
    )
    assert process.returncode == 0, process.stderr
    assert "CiliumLoadBalancerIPPool" in process.stdout


def test_mapping_tables_are_read_at_run_time(tmp_path: Path) -> None:
    """Changing mappings/annotations.yaml changes the label the output uses, with no code change."""
    source = Path(__file__).resolve().parents[1] / "mappings"
    copy = tmp_path / "mappings"
    shutil.copytree(source, copy)
    table = copy / "annotations.yaml"
    table.write_text(table.read_text().replace("pool_label: lbmigrate.io/pool",
                                               "pool_label: example.com/lb-pool"))
    process = subprocess.run(
        [sys.executable, "-m", "migrate.cli", "convert", "-f",
         str(CASE / "autoassign-false" / "input.yaml")],
        capture_output=True, text=True, check=False,
        env={"MIGRATE_MAPPINGS": str(copy), "PATH": "/usr/bin:/bin"},
    )
    assert process.returncode == 0, process.stderr
    assert "example.com/lb-pool" in process.stdout
    assert "lbmigrate.io/pool" not in process.stdout
