"""Checks of the cluster around the migration: kube-proxy, externalTrafficPolicy, GitOps
owners, Talos."""

from __future__ import annotations

from collections import defaultdict

from migrate.preflight import gitops
from migrate.preflight.context import ERROR, INFO, OK, WARNING, Context, service_names
from migrate.preflight.inventory import Body, talos_machine_configs
from migrate.preflight.report import CheckResult
from migrate.preflight.snippets import commands_snippet, talos_patch_snippet


def check_kube_proxy(ctx: Context) -> CheckResult:
    """No kube-proxy may run beside Cilium's L2 announcements [C5][talos-cilium-l2.md]."""
    if not ctx.kube_proxy:
        return CheckResult(
            "kube-proxy", OK,
            "No kube-proxy DaemonSet or pod in the input (k3s and RKE2 can embed kube-proxy in"
            " the node agent: make sure it is disabled there).",
        )
    daemonsets = [d for d in ctx.kube_proxy if d.startswith("DaemonSet ")]
    lines = []
    for found in daemonsets:
        namespace, name = found.split(" ", 1)[1].split("/", 1)
        lines.append(f"kubectl -n {namespace} delete daemonset {name}")
    lines.append("# then on every node, to drop the rules kube-proxy left:")
    lines.append("#   iptables-save | grep -v KUBE | iptables-restore")
    remedy = (
        "Once Cilium runs with kube-proxy replacement (check kube-proxy-replacement), remove"
        " kube-proxy with the commands below."
    )
    if ctx.talos_nodes:
        remedy += " On Talos, disable it in the machine config first (check talos)."
    elif not daemonsets:
        remedy = (
            "kube-proxy runs as static or embedded pods: disable it where the distribution"
            " configures it (k3s: --disable-kube-proxy; RKE2: disable-kube-proxy: true;"
            " kubeadm: the kube-proxy addon), after Cilium runs with kube-proxy replacement."
        )
    return CheckResult(
        "kube-proxy", ERROR, f"kube-proxy still runs: {', '.join(ctx.kube_proxy)}.", remedy,
        snippet=commands_snippet(lines) if daemonsets else None, obj=ctx.kube_proxy[0],
    )


def check_external_traffic_policy(ctx: Context) -> CheckResult:
    """``externalTrafficPolicy: Local`` is not honoured by Cilium's L2 announcements [C2]."""
    local = [s for s in ctx.served if s.external_traffic_policy == "Local"]
    if not local:
        return CheckResult("external-traffic-policy", OK,
                           "No Service MetalLB serves uses externalTrafficPolicy Local.")
    return CheckResult(
        "external-traffic-policy", WARNING,
        f"{len(local)} Service(s) use externalTrafficPolicy Local: {service_names(local)}."
        " Cilium may announce them from a node without a local endpoint, which drops the"
        " traffic (cilium/cilium#27800).",
        "Switch them to Cluster (commands below), or make sure a backend runs on every node"
        " the L2 policy selects.",
        snippet=commands_snippet(
            f"kubectl -n {s.namespace} patch service {s.name} --type merge -p"
            " '{\"spec\":{\"externalTrafficPolicy\":\"Cluster\"}}'"
            for s in sorted(local, key=lambda s: s.key)
        ),
        obj=str(local[0].ref), field="spec.externalTrafficPolicy",
    )


def _gitops_targets(ctx: Context) -> list[tuple[str, Body]]:
    """(what, object) pairs a reconciler must not own during the migration."""
    targets: list[tuple[str, Body]] = []
    for workload in (ctx.metallb.controller, ctx.metallb.speaker):
        if workload is not None:
            targets.append(("MetalLB", workload))
    for doc in ctx.snapshot.documents:
        if str(doc.body.get("apiVersion", "")).startswith("metallb.io/"):
            targets.append(("MetalLB", doc.body))
    targets += [("Services", service.body) for service in ctx.served]
    for body in (ctx.cilium.agent, ctx.cilium.operator, ctx.cilium.config_body):
        if body is not None:
            targets.append(("Cilium", body))
    return targets


def owned_by_gitops(ctx: Context) -> dict[gitops.Owner, set[str]]:
    """Each GitOps owner, and what of MetalLB / the Services / Cilium it reconciles."""
    owned: dict[gitops.Owner, set[str]] = defaultdict(set)
    for what, body in _gitops_targets(ctx):
        for owner in gitops.owners_of(ctx.snapshot, body):
            owned[owner].add(what)
    for chart, what in (("cilium", "Cilium"), ("metallb", "MetalLB")):
        for owner in gitops.release_owners(ctx.snapshot, chart):
            owned[owner].add(what)
    return owned


def check_gitops(ctx: Context) -> CheckResult:
    """A GitOps reconciler would put back what the migration changes (design §2)."""
    owned = owned_by_gitops(ctx)
    if not owned:
        return CheckResult(
            "gitops", OK, "No Flux or Argo CD mark on MetalLB, the LoadBalancer Services or"
            " Cilium.",
        )
    states = {owner: gitops.owner_state(ctx.snapshot, owner) for owner in owned}
    parts = [
        f"{owner} ({states[owner]}) reconciles {', '.join(sorted(owned[owner]))}"
        for owner in sorted(owned)
    ]
    found = "; ".join(parts) + "."
    pending = [owner for owner in sorted(owned) if states[owner] != "paused"]
    if not pending:
        return CheckResult("gitops", OK, found + " Every one is suspended.")
    active = any(states[owner] == "active" for owner in pending)
    lines = [owner.suspend_command() for owner in pending]
    lines.append("# after the migration, once Git holds the new state:")
    lines += [f"#   {owner.resume_command()}" for owner in pending]
    return CheckResult(
        "gitops", ERROR if active else WARNING,
        found + ("" if active else " Whether they are suspended is unknown (their objects are"
                 " not in the input)."),
        "Suspend reconciliation for the whole migration (commands below). Before resuming,"
        " change Git to match: MetalLB and its objects removed, the Cilium pools and policies"
        " and the Services' pins added; otherwise the reconciler puts MetalLB back.",
        snippet=commands_snippet(lines), obj=str(pending[0]),
    )


def _talos_config_ok(body: Body) -> bool:
    cluster = body.get("cluster") or {}
    proxy = cluster.get("proxy") or {}
    network = cluster.get("network") or {}
    cni = network.get("cni") or {} if isinstance(network, dict) else {}
    return (
        isinstance(proxy, dict) and proxy.get("disabled") is True
        and isinstance(cni, dict) and cni.get("name") == "none"
    )


def check_talos(ctx: Context) -> CheckResult:
    """On Talos, kube-proxy and the CNI live in the machine config [talos-cilium-l2.md]."""
    nodes = ctx.talos_nodes
    if not nodes:
        return CheckResult("talos", OK, "No Talos nodes.")
    addresses = [node.internal_ips[0] if node.internal_ips else node.name for node in nodes]
    image = nodes[0].os_image or "Talos"
    found = f"{len(nodes)} Talos node(s) ({image})"
    snippet = talos_patch_snippet(addresses)
    remedy = (
        "Apply the machine-config patch below (cluster.proxy.disabled: true,"
        " cluster.network.cni.name: none) and reboot the nodes, with Cilium already running"
        " with kube-proxy replacement."
    )
    configs = talos_machine_configs(ctx.snapshot)
    if configs:
        wrong = [origin for origin, body in configs if not _talos_config_ok(body)]
        if not wrong:
            return CheckResult("talos", OK, f"{found}; the machine config disables kube-proxy"
                               " and leaves the CNI to Cilium.")
        return CheckResult(
            "talos", ERROR,
            f"{found}; machine config {', '.join(wrong)} keeps kube-proxy or Talos' own CNI"
            " (cluster.proxy.disabled is not true or cluster.network.cni.name is not none).",
            remedy, snippet=snippet, obj=f"machine config {wrong[0]}", field="cluster.proxy",
        )
    if ctx.kube_proxy:
        return CheckResult(
            "talos", WARNING,
            f"{found}, and kube-proxy still runs: Talos deploys it from its machine config.",
            remedy, snippet=snippet, obj=f"Node {nodes[0].name}",
        )
    return CheckResult(
        "talos", INFO,
        f"{found}; no kube-proxy seen, machine config not in the input.",
        "Make sure the machine config carries the patch below (cluster.proxy.disabled: true,"
        " cluster.network.cni.name: none), so that Talos does not bring kube-proxy back.",
        snippet=snippet, obj=f"Node {nodes[0].name}",
    )


