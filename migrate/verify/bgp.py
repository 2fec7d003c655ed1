"""``migrate verify --bgp``: what the API says about the BGP hand-over (reference/cilium.md §3,
reference/metallb.md §5).

Per node of the hand-over, by the value of its hand-over label:

- ``cilium`` (handed over): its CiliumBGPNodeConfig status, written by its agent
  (``pkg/bgpv1/manager/reconcilerv2/crd_status.go``), shows every peer the plan expects
  ``peeringState: established`` with at least the routes the plan expects advertised per
  family, and MetalLB writes no ServiceBGPStatus for the node;
- absent (still MetalLB's): Cilium's operator made no CiliumBGPNodeConfig for it (Cilium would
  try to peer from the address MetalLB's session holds);
- ``none``: between the two speakers (a hand-over stopped part-way): a failure.

Once ``bgp-handover`` is applied, every Service of the BGP pools must be advertised by Cilium
from at least one of the nodes the plan names for it, and no ServiceBGPStatus may be left
(MetalLB 0.15+ writes one per advertised Service and node; older releases write none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from migrate.apply.bgp_handover import node_config_peers, peer_problems
from migrate.verify.api import Check, _list_or_empty

if TYPE_CHECKING:
    from migrate.kube import Kube
    from migrate.plan.model import Plan

Obj = dict[str, Any]


def _advertising(node_config: Mapping[str, Any] | None) -> set[str]:
    """The address families a node's Cilium advertises some route of, on Established peers."""
    families = set()
    for status in node_config_peers(node_config).values():
        if status.get("peeringState") != "established":
            continue
        for count in status.get("routeCount") or []:
            if isinstance(count, dict) and int(count.get("advertised") or 0) > 0:
                families.add(str(count.get("afi")))
    return families


def verify_bgp(kube: Kube, plan: Plan, applied: Sequence[str]) -> list[Check]:
    """The BGP checks for the stage the migration is at (module docstring)."""
    context = plan.context.get("bgp")
    if not isinstance(context, dict):
        return [Check("bgp-plan", "plan", False, "the plan hands no BGP over (MetalLB does not"
                      " announce over BGP, or the plan leaves it to MetalLB: see its findings)")]
    label = str(context["label"])
    cilium, parked = str(context.get("cilium") or "cilium"), str(context.get("parked") or "none")
    api_version = str(context.get("apiVersion") or "cilium.io/v2")
    routes: Mapping[str, Mapping[str, Mapping[str, int]]] = context.get("routes") or {}
    node_configs = {str((o.get("metadata") or {}).get("name")): o
                    for o in _list_or_empty(kube, api_version, "CiliumBGPNodeConfig")}
    statuses: dict[str, list[str]] = {}
    for obj in _list_or_empty(kube, "metallb.io/v1beta1", "ServiceBGPStatus",
                              plan.metallb_namespace):
        status = obj.get("status") or {}
        labels = (obj.get("metadata") or {}).get("labels") or {}
        node = str(status.get("node") or labels.get("metallb.io/node") or "")
        service = f"{status.get('serviceNamespace') or labels.get('metallb.io/service-namespace')}"\
            f"/{status.get('serviceName') or labels.get('metallb.io/service-name')}"
        statuses.setdefault(node, []).append(service)
    checks: list[Check] = []
    handed: dict[str, set[str]] = {}
    for batch in context.get("batches") or []:
        for node in batch:
            body = kube.try_get("v1", "Node", node)
            if body is None:
                checks.append(Check("bgp-node", f"Node {node}", False, "the Node is gone"))
                continue
            value = ((body.get("metadata") or {}).get("labels") or {}).get(label)
            node_config = node_configs.get(node)
            if value == cilium:
                problems = peer_problems(node, node_config, routes.get(node) or {})
                left = statuses.get(node) or []
                if left:
                    problems.append(f"MetalLB still advertises {', '.join(sorted(left)[:3])}"
                                    " from it (ServiceBGPStatus)")
                checks.append(Check("bgp-cilium-sessions", f"Node {node}", not problems,
                                    "; ".join(problems) if problems else
                                    "Cilium's sessions are Established and advertise the"
                                    " expected routes"))
                handed[node] = _advertising(node_config)
            elif value == parked:
                checks.append(Check("bgp-cilium-sessions", f"Node {node}", False,
                                    f"labelled {label}={parked}: neither MetalLB nor Cilium"
                                    " peers from it (a hand-over stopped part-way: apply"
                                    " bgp-handover again, or roll it back)"))
            else:
                peering = bool(node_config_peers(node_config))
                checks.append(Check(
                    "bgp-one-speaker", f"Node {node}", not peering,
                    "Cilium has a BGP configuration for this node, which MetalLB still peers"
                    " from: the router keeps one session per address" if peering else
                    "MetalLB's: Cilium does not peer from it"))
    if "bgp-handover" in applied:
        services: Mapping[str, Mapping[str, Any]] = context.get("services") or {}
        for key, entry in sorted(services.items()):
            families = {"ipv6" if ":" in p else "ipv4" for p in entry.get("prefixes") or ()}
            nodes = [n for n in entry.get("nodes") or () if families & handed.get(n, set())]
            checks.append(Check(
                "bgp-advertised", f"Service {key}", bool(nodes) or not entry.get("nodes"),
                f"advertised by Cilium from {', '.join(nodes)}" if nodes else
                "no node the plan names for it advertises it through Cilium"
                if entry.get("nodes") else "no node advertises it (none did under MetalLB)"))
        left = sorted({s for services_of in statuses.values() for s in services_of})
        checks.append(Check(
            "bgp-metallb-released", f"ServiceBGPStatus {plan.metallb_namespace}/*", not left,
            f"MetalLB still advertises {', '.join(left[:5])}" if left else
            "MetalLB advertises nothing over BGP"))
    return checks
