"""What every preflight check reads, gathered once from a ClusterSnapshot."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from migrate.errors import InputError
from migrate.model.kube import Node, Service
from migrate.preflight.inventory import (
    CiliumInstall,
    MetalLBInstall,
    Version,
    announced_services,
    find_cilium,
    find_kube_proxy,
    find_metallb,
    metallb_serves,
    parse_version,
)
from migrate.preflight.report import CheckResult, CheckSeverity
from migrate.preflight.snippets import dump_yaml
from migrate.sources.snapshot import ClusterSnapshot
from migrate.translate.mappings import CiliumVersion, cilium_version

TALOS_OS_IMAGE = "Talos"  # Node status.nodeInfo.osImage of Talos nodes, e.g. "Talos (v1.9.1)"
ERROR, WARNING, INFO, OK = (
    CheckSeverity.ERROR, CheckSeverity.WARNING, CheckSeverity.INFO, CheckSeverity.OK
)


@dataclass(frozen=True)
class Context:
    """Everything the checks share, read once from the snapshot."""

    snapshot: ClusterSnapshot
    cilium: CiliumInstall
    metallb: MetalLBInstall
    version: Version | None
    version_exact: bool
    requested: str | None
    row: CiliumVersion | None
    kube_proxy: list[str]
    talos_nodes: list[Node]
    served: list[Service]
    announced: list[Service]

    def setting(self, key: str) -> str | None:
        return self.cilium.setting(key)

    @property
    def config_note(self) -> str:
        if self.cilium.config is None:
            return f" ({self.cilium.config_obj} is not in the input: Cilium's defaults assumed)"
        return ""

    def at_least(self, minor: tuple[int, int]) -> bool | None:
        """Whether the Cilium version is at least that minor (None when unknown)."""
        return None if self.version is None else self.version[:2] >= minor


def service_names(services: list[Service], limit: int = 8) -> str:
    """``ns/name`` of the Services, sorted, at most ``limit`` of them."""
    keys = sorted(service.key for service in services)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def helm_result(
    name: str, severity: CheckSeverity, found: str, remedy: str, values: dict[str, Any],
    ctx: Context, field: str,
) -> CheckResult:
    """A failed cilium-config check whose fix is Helm values."""
    return CheckResult(
        name, severity, found, remedy, snippet=dump_yaml(values), helm_values=values,
        obj=ctx.cilium.config_obj, field=field,
    )


def _effective_version(
    detected: Version | None, requested: str | None
) -> tuple[Version | None, bool, CiliumVersion | None]:
    """The version the checks assume, whether its patch level is known, and its table row."""
    if requested:
        cilium_version(requested)  # raises InputError for text that is not X.Y[.Z]
        version = parse_version(requested)
        exact = requested.strip().lstrip("v").count(".") >= 2
        if not exact and version and detected and detected[:2] == version[:2]:
            version, exact = detected, True  # same minor as the agent runs: its patch level
    else:
        version, exact = detected, detected is not None
    if version is None:
        return None, False, None
    try:
        row = cilium_version(f"{version[0]}.{version[1]}")
    except InputError:
        row = None  # older than the oldest supported release: check_cilium_version says so
    return version, exact, row


def build_context(snapshot: ClusterSnapshot, cilium_version_text: str | None) -> Context:
    """Read what every check needs from the snapshot, once."""
    cilium = find_cilium(snapshot)
    metallb = find_metallb(snapshot)
    version, exact, row = _effective_version(cilium.version, cilium_version_text)
    return Context(
        snapshot=snapshot,
        cilium=cilium,
        metallb=metallb,
        version=version,
        version_exact=exact,
        requested=cilium_version_text,
        row=row,
        kube_proxy=find_kube_proxy(snapshot),
        talos_nodes=sorted(
            (n for n in snapshot.nodes if (n.os_image or "").startswith(TALOS_OS_IMAGE)),
            key=lambda n: n.name,
        ),
        served=[s for s in snapshot.services if metallb_serves(s, metallb.lb_class)],
        announced=announced_services(snapshot, metallb.lb_class),
    )


