"""The readiness checks of stage 0 (design §2), as pure functions over a ClusterSnapshot.

Each check returns one CheckResult: a severity (ERROR blocks the migration), what was found,
and the remedy — with the exact Helm values, machine-config patch or commands to apply where
the tool cannot make the change itself. The checks live in cilium_checks, metallb_checks and
cluster_checks; this module runs them in a fixed order and gathers the snippets.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migrate.preflight.bgp_checks import CHECKS as BGP_CHECKS
from migrate.preflight.cilium_checks import (
    check_cilium_installed,
    check_cilium_version,
    check_client_rate_limit,
    check_default_lb_service_ipam,
    check_ipv6,
    check_kube_proxy_replacement,
    check_l2_announcements,
    check_l2_devices,
    check_lb_ipam,
    check_node_labels,
    check_shared_ip_protocols,
)
from migrate.preflight.cluster_checks import (
    check_external_traffic_policy,
    check_gitops,
    check_kube_proxy,
    check_talos,
    owned_by_gitops,
)
from migrate.preflight.context import Context, build_context
from migrate.preflight.inventory import annotations_of, version_text
from migrate.preflight.known_bugs import check_known_bugs
from migrate.preflight.metallb_checks import (
    check_foreign_lb_class,
    check_metallb,
    check_metallb_frr,
    check_metallb_lb_class,
    check_metallb_webhook,
)
from migrate.preflight.report import CheckResult, PreflightReport
from migrate.preflight.snippets import deep_merge, helm_values_snippet
from migrate.sources.snapshot import ClusterSnapshot

CHECKS: tuple[Callable[[Context], CheckResult], ...] = (
    check_cilium_installed,
    check_cilium_version,
    check_kube_proxy_replacement,
    check_l2_announcements,
    check_lb_ipam,
    check_default_lb_service_ipam,
    check_kube_proxy,
    check_client_rate_limit,
    check_l2_devices,
    check_node_labels,
    check_ipv6,
    check_external_traffic_policy,
    check_shared_ip_protocols,
    check_metallb,
    check_metallb_lb_class,
    check_metallb_frr,
    *BGP_CHECKS,
    check_metallb_webhook,
    check_foreign_lb_class,
    check_known_bugs,
    check_gitops,
    check_talos,
)


def _snippet_blocks(ctx: Context, checks: list[CheckResult]) -> list[tuple[str, str]]:
    """The snippets to print: one merged Cilium Helm values file, then the others in order."""
    blocks: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    for check in checks:
        if not check.ok and check.helm_values:
            values = deep_merge(values, check.helm_values)
    if values:
        annotations = annotations_of(ctx.cilium.agent) if ctx.cilium.agent else {}
        release = annotations.get("meta.helm.sh/release-name", "cilium")
        namespace = annotations.get("meta.helm.sh/release-namespace", ctx.cilium.namespace)
        blocks.append(("Cilium Helm values", helm_values_snippet(
            values, release=release, namespace=namespace,
            gitops=any("Cilium" in what for what in owned_by_gitops(ctx).values()),
        )))
    # Talos' patch comes right after the Helm values: kube-proxy goes before it is deleted.
    for check in sorted(checks, key=lambda c: c.name != "talos"):
        if not check.ok and check.snippet and not check.helm_values:
            blocks.append((check.name, check.snippet))
    return blocks


def run_preflight(
    snapshot: ClusterSnapshot, *, cilium_version: str | None = None
) -> PreflightReport:
    """Run every readiness check of stage 0 on a snapshot (pure; raises InputError only for a
    malformed ``cilium_version``)."""
    ctx = build_context(snapshot, cilium_version)
    checks = [check(ctx) for check in CHECKS]
    shown = None
    if ctx.version is not None:
        shown = version_text(ctx.version) if ctx.version_exact else (
            f"{ctx.version[0]}.{ctx.version[1]}"
        )
    return PreflightReport(checks, shown, _snippet_blocks(ctx, checks))

