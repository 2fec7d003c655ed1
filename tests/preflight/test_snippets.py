"""The snippets preflight prints parse as YAML and, applied, make their checks pass: Cilium Helm
values mapped onto cilium-config as the chart renders them (reference/cilium.md §2 "Helm values
→ cilium-config keys"), and the Talos patch deep-merged into a machine config."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from migrate.preflight import run_preflight
from migrate.preflight.report import PreflightReport
from tests.preflight import scenarios

# Helm value path -> cilium-config key, per reference/cilium.md §2.
HELM_TO_CONFIG = {
    ("kubeProxyReplacement",): "kube-proxy-replacement",
    ("l2announcements", "enabled"): "enable-l2-announcements",
    ("l2announcements", "leaseRenewDeadline"): "l2-announcements-renew-deadline",
    ("k8sClientRateLimit", "qps"): "k8s-client-qps",
    ("k8sClientRateLimit", "burst"): "k8s-client-burst",
    ("devices",): "devices",
    ("defaultLBServiceIPAM",): "default-lb-service-ipam",
    ("enableLBIPAM",): "enable-lb-ipam",
    ("loadBalancer", "protocolDifferentiation", "enabled"): "bpf-lb-proto-diff",
}


def _config_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return " ".join(str(v) for v in value)  # the chart joins devices with spaces
    return str(value)


def apply_helm_values(docs: list[dict[str, Any]], values: dict[str, Any]) -> None:
    """Write Helm values into the documents' cilium-config as the chart would render them."""
    data = scenarios.cilium_config(docs)
    for path, key in HELM_TO_CONFIG.items():
        node: Any = values
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            data[key] = _config_value(node)


def helm_block(report: PreflightReport) -> dict[str, Any]:
    """The merged Cilium Helm values the report prints, parsed."""
    blocks = dict(report.snippet_blocks)
    values = yaml.safe_load(blocks["Cilium Helm values"])
    assert isinstance(values, dict)
    return values


HELM_CASES = {
    "kpr-off": "kube-proxy-replacement",
    "l2-off": "l2-announcements",
    "lbipam-off": "lb-ipam",
    "default-ipam-nodeipam": "default-lb-service-ipam",
    "rate-limit-low": "client-rate-limit",
    "device-missing": "l2-devices",
    "device-subnet-missing": "l2-devices",
    "shared-ip-proto-diff-off": "shared-ip-protocols",
}


@pytest.mark.parametrize("scenario", sorted(HELM_CASES))
def test_helm_values_make_the_check_pass(scenario: str) -> None:
    docs = scenarios.documents(scenario)
    report = run_preflight(scenarios.snapshot(docs))
    name = HELM_CASES[scenario]
    assert not report.check(name).ok
    check_snippet = report.check(name).snippet
    assert check_snippet is not None
    assert yaml.safe_load(check_snippet) == report.check(name).helm_values
    apply_helm_values(docs, helm_block(report))
    after = run_preflight(scenarios.snapshot(docs))
    assert after.check(name).ok, after.check(name).found
    assert not after.blocking
    assert scenarios.tripped(after) == {}


def test_one_values_file_fixes_every_config_check_at_once() -> None:
    docs = scenarios.documents("shared-ip-proto-diff-off")
    data = scenarios.cilium_config(docs)
    data.clear()
    data.update({"kube-proxy-replacement": "false", "enable-lb-ipam": "false",
                 "default-lb-service-ipam": "none", "devices": "eth0",
                 "k8s-client-qps": "0.1", "k8s-client-burst": "1",
                 "bpf-lb-proto-diff": "false"})
    report = run_preflight(scenarios.snapshot(docs))
    failing = {c.name for c in report.checks if not c.ok} - {"known-bugs"}  # not config
    assert failing == set(HELM_CASES.values())
    assert [title for title, _ in report.snippet_blocks] == ["Cilium Helm values"]
    text = dict(report.snippet_blocks)["Cilium Helm values"]
    assert "helm upgrade cilium cilium/cilium -n kube-system --reuse-values" in text
    apply_helm_values(docs, helm_block(report))
    after = run_preflight(scenarios.snapshot(docs))
    assert [c.name for c in after.checks if not c.ok] == ["known-bugs"]


def test_values_file_names_the_helm_release_the_agent_belongs_to() -> None:
    docs = scenarios.documents("l2-off")
    agent = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "cilium")
    agent["metadata"]["annotations"] = {"meta.helm.sh/release-name": "cni",
                                        "meta.helm.sh/release-namespace": "networking"}
    text = dict(run_preflight(scenarios.snapshot(docs)).snippet_blocks)["Cilium Helm values"]
    assert "helm upgrade cni cilium/cilium -n networking" in text


def test_rate_limit_values_carry_many_services() -> None:
    docs = scenarios.documents()
    pool = next(d for d in docs if d["kind"] == "IPAddressPool")
    pool["spec"]["addresses"] = ["10.20.0.0/23"]
    docs += [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": "x"},
         "spec": {"type": "LoadBalancer"},
         "status": {"loadBalancer": {"ingress": [{"ip": f"10.20.{i // 250}.{i % 250 + 1}"}]}}}
        for i in range(300)
    ]
    report = run_preflight(scenarios.snapshot(docs))
    assert report.check("client-rate-limit").severity.value == "ERROR"
    apply_helm_values(docs, helm_block(report))
    assert run_preflight(scenarios.snapshot(docs)).check("client-rate-limit").ok


# -- Talos -------------------------------------------------------------------------------------
MACHINE_CONFIG: dict[str, Any] = {
    "version": "v1alpha1",
    "machine": {"type": "controlplane", "install": {"disk": "/dev/sda"}},
    "cluster": {
        "clusterName": "home",
        "controlPlane": {"endpoint": "https://192.168.10.10:6443"},
        "network": {"dnsDomain": "cluster.local", "cni": {"name": "flannel"}},
    },
}


def deep_merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge-like patch as talosctl applies it to mappings."""
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(out.get(key), dict) and isinstance(value, dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def test_talos_patch_makes_the_machine_config_pass() -> None:
    docs = [*scenarios.documents("talos"), copy.deepcopy(MACHINE_CONFIG)]
    report = run_preflight(scenarios.snapshot(docs))
    talos = report.check("talos")
    assert talos.severity.value == "ERROR"
    assert report.blocking
    assert talos.snippet is not None
    assert "talosctl patch machineconfig --nodes 192.168.10.11,192.168.10.21" in talos.snippet
    patch = yaml.safe_load(talos.snippet)
    assert patch == {"cluster": {"proxy": {"disabled": True},
                                 "network": {"cni": {"name": "none"}}}}
    patched = deep_merge(MACHINE_CONFIG, patch)
    assert patched["cluster"]["network"]["dnsDomain"] == "cluster.local"  # the rest is kept
    after = run_preflight(scenarios.snapshot([*scenarios.documents("talos"), patched]))
    assert after.check("talos").ok
    assert not after.blocking


def test_talos_snippet_is_printed_below_the_table() -> None:
    report = run_preflight(scenarios.snapshot(scenarios.documents("talos")))
    titles = [title for title, _ in report.snippet_blocks]
    assert titles == ["talos"]
    assert yaml.safe_load(report.snippet_blocks[0][1])["cluster"]["proxy"]["disabled"] is True



def test_values_for_a_gitops_managed_cilium_say_to_commit_them() -> None:
    report = run_preflight(scenarios.snapshot(scenarios.documents("kpr-off", "gitops-argo")))
    assert "put these values in Git" in dict(report.snippet_blocks)["Cilium Helm values"]
    report = run_preflight(scenarios.snapshot(scenarios.documents("kpr-off", "gitops-flux")))
    assert "put these values in Git" not in dict(report.snippet_blocks)["Cilium Helm values"]
