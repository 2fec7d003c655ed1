"""``migrate verify``: API checks, ARP on the wire, and a forced failover.

``run_verify`` combines the parts the command asks for into one ``VerifyResult`` (JSON via
``to_json``, tables via ``migrate.render.verify_tables``): ``api.verify_api`` (the cluster
against the plan), ``arp.verify_arp`` held to the announcers the API names
(``announcers.match_announcers``, I2) and ``failover.run_failover``. Imports are lazy so that
``python -m migrate.verify.arp`` and the CLI start fast.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from migrate.kube import Kube
    from migrate.plan.model import Plan
    from migrate.verify.announcers import AnnouncerMatch
    from migrate.verify.api import ApiReport
    from migrate.verify.failover import FailoverReport

__all__ = ["VerifyResult", "run_verify"]


class VerifyResult:
    """Everything one ``migrate verify`` run found; ``problems`` empty means all good.

    (A plain class, not a dataclass: importing ``dataclasses`` would slow down the start of
    ``python -m migrate.verify.arp``, which imports this package.)
    """

    def __init__(self, interface: str | None = None) -> None:
        self.interface = interface
        self.api: ApiReport | None = None
        self.arp: list[AnnouncerMatch] | None = None
        self.failover: FailoverReport | None = None
        self.not_probed: list[str] = []
        """Plan IPs left out of the ARP probe (IPv6: ARP is IPv4 only)."""
        self.problems: list[str] = []

    @property
    def ok(self) -> bool:
        """True when nothing failed."""
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        """``{"arp": [...], "api": [...], "failover": {...}}``, each part only when it ran."""
        document: dict[str, Any] = {}
        if self.arp is not None:
            document["arp"] = [row.to_json() if self.api is not None else row.entry.to_json()
                               for row in self.arp]
        if self.api is not None:
            document["api"] = self.api.to_json()["api"]
        if self.failover is not None:
            document["failover"] = self.failover.to_json()
        return document


def run_verify(
    kube: Kube | None,
    plan: Plan | None,
    *,
    interface: str | None = None,
    ip_specs: Sequence[str] = (),
    node_macs: Mapping[str, str] | None = None,
    failover: str | None = None,
    timeout: float = 60.0,
    cilium_namespace: str | None = None,
    state_namespace: str = "kube-system",
    on_event: Callable[[str], None] | None = None,
    bgp: bool = False,
) -> VerifyResult:
    """Run the API checks (with ``plan``; with ``bgp`` the BGP hand-over's too), the ARP probe
    (with ``interface``: ``ip_specs`` or else the plan's IPv4 addresses) and the failover of
    ``failover`` (``ns/name``; skipped when something already failed). ``kube`` is needed for
    the plan and the failover."""
    result = VerifyResult(interface=interface)
    if plan is not None:
        from migrate.verify.api import verify_api

        if kube is None:
            raise ValueError("the API checks need a cluster")
        result.api = verify_api(kube, plan, state_namespace=state_namespace)
        if bgp:
            from dataclasses import replace

            from migrate.verify.bgp import verify_bgp

            result.api = replace(result.api, checks=result.api.checks + tuple(
                verify_bgp(kube, plan, result.api.applied)))
        if not result.api.ok:
            result.problems.append(f"{len(result.api.failures)} of {len(result.api.checks)}"
                                   " API checks failed")
    node_ips: Mapping[str, Any] = {}
    if kube is not None and interface:
        from migrate.verify.api import node_internal_ips

        node_ips = node_internal_ips(kube)
    if interface and (ip_specs or plan is not None):
        _probe(result, plan, interface, ip_specs, node_macs, node_ips)
    if failover:
        if kube is None:
            raise ValueError("the failover needs a cluster")
        if result.problems:
            result.problems.append("failover not attempted: fix the failures above first")
            return result
        from migrate.verify.failover import run_failover

        namespace = cilium_namespace or (plan.cilium_namespace if plan else "kube-system")
        result.failover = run_failover(
            kube, failover, cilium_namespace=namespace, interface=interface, timeout=timeout,
            node_macs=node_macs, node_ips=node_ips, on_event=on_event)
        if not result.failover.ok:
            result.problems.append(f"failover of {failover}: "
                                   + "; ".join(result.failover.problems))
    return result


def _probe(result: VerifyResult, plan: Plan | None, interface: str, ip_specs: Sequence[str],
           node_macs: Mapping[str, str] | None, node_ips: Mapping[str, Any]) -> None:
    from migrate.verify.announcers import ipv4_targets, match_announcers
    from migrate.verify.arp import verify_arp

    targets: list[Any] = list(ip_specs)
    if not targets and plan is not None:
        targets, result.not_probed = ipv4_targets(
            ip for ips in plan.expected_ips.values() for ip in ips)
    if not targets:
        result.arp = []
        return
    report = verify_arp(interface, targets, node_macs=node_macs, node_ips=node_ips)
    result.arp = match_announcers(report, result.api)
    failed = sum(1 for row in result.arp if not row.ok)
    if failed:
        suffix = ", the expected node's" if result.api is not None else ""
        result.problems.append(f"{failed} of {len(result.arp)} IPs are not answered by exactly"
                               f" one MAC{suffix}")
