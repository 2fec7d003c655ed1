"""Snippets preflight prints for what the tool cannot change itself: Cilium Helm values and the
Talos machine-config patch, each ready to paste, with the command that applies it.

Every YAML snippet parses as YAML (instructions are comments).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any

import yaml

HELM_VALUES_FILE = "cilium-values.yaml"
TALOS_PATCH_FILE = "talos-no-kube-proxy.yaml"

# The machine-config patch that removes kube-proxy on Talos and leaves the CNI to Cilium
# (reference/talos-cilium-l2.md "Talos").
TALOS_PATCH: dict[str, Any] = {
    "cluster": {"proxy": {"disabled": True}, "network": {"cni": {"name": "none"}}},
}


def deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in (nested mappings merged, anything else replaced)."""
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        current = out.get(key)
        if isinstance(current, dict) and isinstance(value, Mapping):
            out[key] = deep_merge(current, value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def dump_yaml(data: Mapping[str, Any]) -> str:
    """Block-style YAML, keys in the order given."""
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False)


def _comment(lines: Iterable[str]) -> str:
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)


def helm_values_snippet(
    values: Mapping[str, Any], *, release: str = "cilium", namespace: str = "kube-system",
    gitops: bool = False,
) -> str:
    """The Cilium Helm values to merge, with the commands that roll them out [C2][C5]."""
    header = [
        f"{HELM_VALUES_FILE}: merge into the values of the Cilium release, then:",
        f"  helm upgrade {release} cilium/cilium -n {namespace} --reuse-values"
        f" -f {HELM_VALUES_FILE}",
        f"  kubectl -n {namespace} rollout restart daemonset/cilium deployment/cilium-operator",
        "(agent and operator read cilium-config only when they start)",
    ]
    if gitops:
        header.append("Cilium is deployed by GitOps: put these values in Git instead.")
    if "kubeProxyReplacement" in values and "k8sServiceHost" not in values:
        header += [
            "Without kube-proxy Cilium must reach the API server directly: also set",
            "k8sServiceHost and k8sServicePort to the API server's address and port.",
        ]
    return _comment(header) + dump_yaml(values)


def talos_patch_snippet(node_addresses: Iterable[str]) -> str:
    """The Talos machine-config patch that disables kube-proxy, with the talosctl command."""
    nodes = ",".join(node_addresses) or "NODE_IP,..."
    header = [
        f"{TALOS_PATCH_FILE}: disables Talos' kube-proxy and leaves the CNI to Cilium. Apply it:",
        f"  talosctl patch machineconfig --nodes {nodes} --patch @{TALOS_PATCH_FILE}",
        "or merge it into the machine configs you keep and run, per node:",
        "  talosctl apply-config --nodes NODE_IP --file controlplane.yaml  (worker.yaml)",
        "then reboot the nodes; afterwards only Cilium pods run, no kube-proxy.",
    ]
    return _comment(header) + dump_yaml(TALOS_PATCH)


def commands_snippet(lines: Iterable[str]) -> str:
    """Shell commands, one a line."""
    return "".join(f"{line}\n" for line in lines)
