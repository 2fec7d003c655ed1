"""Checks of Cilium: installed, version, cilium-config, rate limit, devices, node labels,
IPv6 [C1][C2][C5]."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

from migrate.model.selectors import combine, matches
from migrate.preflight.context import ERROR, INFO, OK, WARNING, Context, helm_result
from migrate.preflight.inventory import (
    Version,
    cilium_node_labels,
    describe,
    go_duration_seconds,
    l2_pool_names,
    version_text,
)
from migrate.preflight.report import CheckResult, CheckSeverity
from migrate.preflight.snippets import commands_snippet
from migrate.translate.translator import EXCLUDE_LB_LABEL

# [C1.4]: before 1.18.2 an operator restart could re-address Services.
RESHUFFLE_FIXED: Version = (1, 18, 2)
# [C2]: agent API-client defaults, lease renew deadline default.
DEFAULT_QPS = 10
DEFAULT_BURST = 20
DEFAULT_RENEW_DEADLINE = 5.0
RATE_HEADROOM = 1.5  # recommended QPS = Services ÷ renew deadline × this (limit is shared)
# Talos' local API-server proxy, which does not depend on Cilium [talos-cilium-l2.md].
TALOS_API_SERVER = {"k8sServiceHost": "localhost", "k8sServicePort": 7445}


def check_cilium_installed(ctx: Context) -> CheckResult:
    """Cilium's agent DaemonSet and operator Deployment are there [C5]."""
    agent, operator = ctx.cilium.agent, ctx.cilium.operator
    if agent is not None and operator is not None:
        return CheckResult("cilium-installed", OK, f"agent {describe(agent)}, operator"
                           f" {describe(operator)}.", obj=describe(agent))
    missing = []
    if agent is None:
        missing.append("no Cilium agent DaemonSet (named cilium or labelled k8s-app=cilium)")
    if operator is None:
        missing.append("no Cilium operator Deployment (cilium-operator, label"
                       " io.cilium/app=operator); LB-IPAM runs in the operator")
    text = "; ".join(missing)
    return CheckResult(
        "cilium-installed", ERROR, text[0].upper() + text[1:] + ".",
        "Install Cilium as the cluster's CNI (with the Helm values the other checks ask for),"
        " and include its DaemonSet, operator Deployment and cilium-config in the input.",
        obj=describe(agent) if agent else f"DaemonSet {ctx.cilium.namespace}/cilium",
    )


def check_cilium_version(ctx: Context) -> CheckResult:
    """Cilium's version decides the pool API, NDP, and the restart-reshuffle bug [C1][C1.4][C2]."""
    obj = describe(ctx.cilium.agent) if ctx.cilium.agent else None
    detected = ctx.cilium.version
    if ctx.version is None:
        what = (f"the agent image {ctx.cilium.image} has no version tag" if ctx.cilium.image
                else "no Cilium agent in the input")
        return CheckResult(
            "cilium-version", WARNING, f"Cannot tell Cilium's version: {what}.",
            "Pass --cilium-version X.Y.Z (the version the agent runs); IPv6 and version"
            " checks are skipped until then.", obj=obj,
        )
    shown = version_text(ctx.version) if ctx.version_exact else f"{ctx.version[0]}.{ctx.version[1]}"
    source = (f"--cilium-version {ctx.requested}" if ctx.requested
              else ctx.cilium.version_source or "")
    problems: list[tuple[CheckSeverity, str, str]] = []
    if ctx.requested and detected is not None:
        same = detected[:2] == ctx.version[:2] and (
            not ctx.version_exact or detected == ctx.version
        )
        if not same:
            problems.append((
                WARNING,
                f"The agent runs {version_text(detected)} ({ctx.cilium.version_source}), not"
                f" {ctx.requested}.",
                f"Upgrade Cilium to {ctx.requested} before migrating, or drop --cilium-version.",
            ))
    if ctx.row is None:
        problems.append((
            ERROR,
            f"Cilium {shown} is too old: LB-IPAM ranges and allowFirstLastIPs need 1.15 or"
            " newer.",
            f"Upgrade Cilium to {version_text(RESHUFFLE_FIXED)} or newer.",
        ))
        facts = ""
    else:
        facts = (
            f" Pools are written as {ctx.row.pool_api_version}; L2 announcements "
            + ("answer NDP (IPv6)." if ctx.row.l2_ndp else "are IPv4 only (NDP needs 1.19).")
        )
        unsure = not ctx.version_exact and ctx.version[:2] == RESHUFFLE_FIXED[:2]
        if ctx.version < RESHUFFLE_FIXED or unsure:
            problems.append((
                WARNING,
                f"Before {version_text(RESHUFFLE_FIXED)} an operator restart can re-address"
                " Services of a pool that has unsatisfied Services (cilium/cilium#41147); the"
                " ipam-handover"
                " stage restarts the operator" + (" (check the patch release)." if unsure
                                                  else "."),
                f"Upgrade Cilium to {version_text(RESHUFFLE_FIXED)} or newer first.",
            ))
    found = f"Cilium {shown} ({source}).{facts}"
    if not problems:
        return CheckResult("cilium-version", OK, found, obj=obj)
    severity = min((p[0] for p in problems), key=lambda s: s.rank)
    return CheckResult(
        "cilium-version", severity, " ".join([found, *(p[1] for p in problems)]),
        " ".join(p[2] for p in problems), obj=obj,
    )


def check_kube_proxy_replacement(ctx: Context) -> CheckResult:
    """``kube-proxy-replacement`` must be on: L2 announcements need it [C2][C5]."""
    value = ctx.setting("kube-proxy-replacement")
    shown = f"is {value!r}" if value is not None else "is not set (default false)"
    found = f"kube-proxy-replacement {shown}{ctx.config_note}."
    field = "data.kube-proxy-replacement"
    if value in ("true", "strict"):  # "strict" is the full mode before 1.16 [C2]
        return CheckResult("kube-proxy-replacement", OK, found, obj=ctx.cilium.config_obj,
                           field=field)
    values: dict[str, Any] = {
        "kubeProxyReplacement": True if ctx.at_least((1, 16)) is not False else "strict"
    }
    if ctx.talos_nodes:
        values.update(TALOS_API_SERVER)  # Talos' local API-server proxy [talos-cilium-l2.md]
    return helm_result(
        "kube-proxy-replacement", ERROR, found,
        "L2 announcements need kube-proxy replacement (a prerequisite in Cilium's L2"
        " announcements guide): set kubeProxyReplacement (Helm"
        " values below), restart Cilium, then remove kube-proxy.", values, ctx, field,
    )


def check_l2_announcements(ctx: Context) -> CheckResult:
    """``enable-l2-announcements`` must be true (agent and operator) [C1.1][C2]."""
    value = ctx.setting("enable-l2-announcements")
    shown = f"is {value!r}" if value is not None else "is not set (default false)"
    found = f"enable-l2-announcements {shown}{ctx.config_note}."
    field = "data.enable-l2-announcements"
    if value == "true":
        return CheckResult("l2-announcements", OK, found, obj=ctx.cilium.config_obj, field=field)
    return helm_result(
        "l2-announcements", ERROR, found,
        "Enable L2 announcements (Helm values below) and restart agent and operator: without"
        " it no node answers ARP for the Service IPs once MetalLB stops.",
        {"l2announcements": {"enabled": True}}, ctx, field,
    )


def check_lb_ipam(ctx: Context) -> CheckResult:
    """``enable-lb-ipam`` must not be false [C1.1]."""
    value = ctx.setting("enable-lb-ipam")
    shown = f"is {value!r}" if value is not None else "is not set (default true)"
    found = f"enable-lb-ipam {shown}{ctx.config_note}."
    field = "data.enable-lb-ipam"
    if value != "false":
        return CheckResult("lb-ipam", OK, found, obj=ctx.cilium.config_obj, field=field)
    return helm_result(
        "lb-ipam", ERROR, found,
        "Turn LB-IPAM on (Helm values below) and restart the operator: it is what keeps the"
        " Services' IPs once MetalLB's controller stops.",
        {"enableLBIPAM": True}, ctx, field,
    )


def check_default_lb_service_ipam(ctx: Context) -> CheckResult:
    """``default-lb-service-ipam`` must be ``lbipam`` so class-less Services are handled [C1.1]."""
    value = ctx.setting("default-lb-service-ipam")
    field = "data.default-lb-service-ipam"
    if ctx.at_least((1, 17)) is False:
        return CheckResult(
            "default-lb-service-ipam", OK,
            "Before Cilium 1.17 LB-IPAM handles every Service without a loadBalancerClass.",
            obj=ctx.cilium.config_obj, field=field,
        )
    shown = f"is {value!r}" if value is not None else "is not set (default lbipam)"
    found = f"default-lb-service-ipam {shown}{ctx.config_note}."
    if value in (None, "lbipam"):
        return CheckResult("default-lb-service-ipam", OK, found, obj=ctx.cilium.config_obj,
                           field=field)
    return helm_result(
        "default-lb-service-ipam", ERROR, found,
        "Set defaultLBServiceIPAM to lbipam (Helm values below): otherwise LB-IPAM ignores the"
        " Services without a loadBalancerClass, which are the ones MetalLB serves.",
        {"defaultLBServiceIPAM": "lbipam"}, ctx, field,
    )


def check_client_rate_limit(ctx: Context) -> CheckResult:
    """The agent's API rate limit must carry one lease renewal per Service [C2]."""
    count = len(ctx.announced)
    renew_text = ctx.setting("l2-announcements-renew-deadline")
    renew = go_duration_seconds(renew_text) or DEFAULT_RENEW_DEADLINE
    qps = _number(ctx.setting("k8s-client-qps"), DEFAULT_QPS)
    burst = _number(ctx.setting("k8s-client-burst"), DEFAULT_BURST)
    needed = count / renew
    recommended_qps = max(DEFAULT_QPS, math.ceil(needed * RATE_HEADROOM))
    recommended_burst = max(DEFAULT_BURST, 2 * recommended_qps)
    found = (
        f"{count} Service(s) to announce, renew deadline {renew:g}s: about {needed:.1f} lease"
        f" renewals per second against k8s-client-qps {qps:g} / burst {burst:g}{ctx.config_note}."
    )
    field = "data.k8s-client-qps"
    if qps < needed:
        severity = ERROR
    elif qps < needed * RATE_HEADROOM or burst < qps:
        severity = WARNING
    else:
        return CheckResult("client-rate-limit", OK, found, obj=ctx.cilium.config_obj,
                           field=field)
    return helm_result(
        "client-rate-limit", severity, found,
        f"Raise the agent's client rate limit to qps {recommended_qps} / burst"
        f" {recommended_burst} (Services ÷ renew deadline × {RATE_HEADROOM:g}, shared with the"
        " agent's other API calls; Helm values below). Too low a limit loses leases and makes"
        " the announcing node flap.",
        {"k8sClientRateLimit": {"qps": recommended_qps, "burst": recommended_burst}}, ctx, field,
    )


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


def _device_matches(interface: str, device: str) -> bool:
    # Cilium's devices option takes exact names and prefixes ending in "+" (e.g. "eth+").
    return interface.startswith(device[:-1]) if device.endswith("+") else interface == device


def check_l2_devices(ctx: Context) -> CheckResult:
    """Every interface MetalLB announces on must be one of Cilium's devices [C2]."""
    named: dict[str, list[str]] = defaultdict(list)
    for ad in ctx.snapshot.l2_advertisements:
        for interface in ad.interfaces:
            named[interface].append(str(ad.ref))
    field = "data.devices"
    if not named:
        return CheckResult(
            "l2-devices", OK, "No L2Advertisement limits interfaces: Cilium will announce on"
            " all of its devices.", obj=ctx.cilium.config_obj, field=field,
        )
    interfaces = sorted(named)
    devices_text = ctx.setting("devices")
    if not devices_text:
        return CheckResult(
            "l2-devices", WARNING,
            f"MetalLB announces on {', '.join(interfaces)}; Cilium auto-detects its devices"
            f" (devices is not set{ctx.config_note}), and an interface without an IP address is"
            " not selected (cilium/cilium#31691).",
            "Check that each interface is among the agent's devices (command below); if one is"
            " not, set devices to the full list of interfaces Cilium must use.",
            snippet=commands_snippet([
                f"kubectl -n {ctx.cilium.namespace} exec ds/cilium -- cilium-dbg shell --"
                " db/show devices",
            ]),
            obj=ctx.cilium.config_obj, field=field,
        )
    devices = devices_text.replace(",", " ").split()
    missing = [i for i in interfaces if not any(_device_matches(i, d) for d in devices)]
    found = f"Cilium's devices: {' '.join(devices)}; MetalLB announces on {', '.join(interfaces)}."
    if not missing:
        return CheckResult("l2-devices", OK, found, obj=ctx.cilium.config_obj, field=field)
    where = "; ".join(f"{i} (named by {', '.join(sorted(named[i]))})" for i in missing)
    return helm_result(
        "l2-devices", ERROR, f"{found} Not among Cilium's devices: {where}.",
        "Cilium only announces on its own devices: add the missing interfaces to devices"
        " (Helm values below) and restart the agents.",
        {"devices": [*devices, *missing]}, ctx, field,
    )


def check_node_labels(ctx: Context) -> CheckResult:
    """L2 policies select CiliumNode labels, MetalLB selected Node labels [C2][M3]."""
    ads = ctx.snapshot.l2_advertisements
    if not ads:
        return CheckResult("node-labels", OK, "No L2Advertisement: no node selector to compare.")
    nodes = ctx.snapshot.nodes
    cilium_nodes = cilium_node_labels(ctx.snapshot)
    if not nodes:
        return CheckResult(
            "node-labels", WARNING,
            "No Node objects in the input: cannot tell which nodes will announce.",
            "Include the Nodes and CiliumNodes (kubectl get nodes,ciliumnodes -o yaml).",
        )
    if not cilium_nodes:
        return CheckResult(
            "node-labels", WARNING,
            "No CiliumNode objects in the input: Cilium matches L2 policy node selectors"
            " against CiliumNode labels, not Node labels, so the announcing nodes cannot"
            " be compared.",
            "Include the CiliumNodes (kubectl get ciliumnodes -o yaml).",
        )
    # The translator's policies: each MetalLB node selector AND "not excluded" [M8][M10].
    selectors = [
        (ad, combine(selector, {"matchExpressions": [
            {"key": EXCLUDE_LB_LABEL, "operator": "DoesNotExist"}]}))
        for ad in ads for selector in (ad.node_selectors or ({},))
    ]
    keys = sorted({
        key for _, sel in selectors
        for key in [*(sel.get("matchLabels") or {}), *(e["key"] for e in
                                                      sel.get("matchExpressions") or [])]
    })
    differences: list[str] = []
    without: list[str] = []
    fixes: list[str] = []
    for node in sorted(nodes, key=lambda n: n.name):
        labels = cilium_nodes.get(node.name)
        if labels is None:
            without.append(node.name)
            continue
        changed = [
            str(ad.ref) for ad, sel in selectors
            if matches(sel, node.labels) != matches(sel, labels)
        ]
        if not changed:
            continue
        wins = [ad for ad, sel in selectors if matches(sel, labels)]
        differences.append(
            f"{node.name} ({'would announce' if wins else 'would not announce'} for"
            f" {', '.join(sorted(set(changed)))} unlike under MetalLB)"
        )
        sets = [f"{k}={node.labels[k]}" for k in keys
                if k in node.labels and labels.get(k) != node.labels[k]]
        drops = [f"{k}-" for k in keys if k not in node.labels and k in labels]
        fixes.append(f"kubectl label ciliumnode {node.name} --overwrite {' '.join(sets + drops)}")
    if differences:
        return CheckResult(
            "node-labels", ERROR,
            "CiliumNode labels select other nodes than Node labels: " + "; ".join(differences)
            + ".",
            "Give the CiliumNodes the Node labels the selectors use (commands below), or change"
            " the selectors; otherwise Cilium announces from other nodes than MetalLB did.",
            snippet=commands_snippet(fixes), obj=f"CiliumNode {differences[0].split(' ')[0]}",
            field="metadata.labels",
        )
    if without:
        return CheckResult(
            "node-labels", WARNING,
            f"No CiliumNode for {', '.join(without)}: no Cilium agent runs there, so that node"
            " will not announce.",
            "Check the Cilium agent on those nodes (kubectl get ciliumnodes), or include their"
            " CiliumNodes in the input.",
        )
    return CheckResult(
        "node-labels", OK,
        f"CiliumNode and Node labels select the same nodes for {len(selectors)} node"
        " selector(s).",
    )


def check_ipv6(ctx: Context) -> CheckResult:
    """IPv6 over L2 needs NDP, which Cilium answers only from 1.19 [C2]."""
    l2_pools = l2_pool_names(ctx.snapshot)
    v6_pools = [p for p in ctx.snapshot.pools if any(a.range.version == 6 for a in p.addresses)]
    if not v6_pools:
        return CheckResult("ipv6", OK, "No IPv6 or dual-stack pool.")
    dual = {p.name for p in v6_pools if any(a.range.version == 4 for a in p.addresses)}
    names = ", ".join(f"{p.name} (dual-stack)" if p.name in dual else p.name for p in v6_pools)
    announced = [p for p in v6_pools if p.name in l2_pools]
    found = f"IPv6 addresses in pool(s) {names}"
    if not announced:
        return CheckResult("ipv6", INFO, f"{found}, none announced over L2.",
                           obj=str(v6_pools[0].ref))
    obj = str(announced[0].ref)
    if ctx.row is None:
        return CheckResult(
            "ipv6", WARNING, f"{found}, announced over L2; Cilium's version is unknown.",
            "IPv6 L2 announcements need Cilium 1.19 or newer (NDP): check the version.",
            obj=obj, field="spec.addresses",
        )
    if not ctx.row.l2_ndp:
        return CheckResult(
            "ipv6", ERROR,
            f"{found}, announced over L2, but Cilium {ctx.row.minor} answers no NDP: those"
            " IPv6 addresses would go silent.",
            "Upgrade Cilium to 1.19 or newer before migrating.", obj=obj, field="spec.addresses",
        )
    return CheckResult(
        "ipv6", INFO, f"{found}, announced over L2; Cilium {ctx.row.minor} answers NDP.",
        obj=obj,
    )




def _shared_port_clashes(ctx: Context) -> list[str]:
    """Sharers of one IP that use one port number under different protocols (TCP/53 + UDP/53)."""
    by_ip: dict[str, list[Any]] = defaultdict(list)
    for service in ctx.served:
        for ip in service.ingress_ips:
            by_ip[ip].append(service)
    clashes = []
    for ip, services in sorted(by_ip.items()):
        if len(services) < 2:
            continue
        protocols: dict[int, set[str]] = defaultdict(set)
        for service in services:
            for protocol, number in service.ports:
                protocols[number].add(protocol)
        for number, seen in sorted(protocols.items()):
            if len(seen) > 1:
                names = ", ".join(sorted(s.key for s in services))
                clashes.append(f"{ip} ({names}: port {number} on {'/'.join(sorted(seen))})")
    return clashes


def check_shared_ip_protocols(ctx: Context) -> CheckResult:
    """Sharers of an IP may use one port number on TCP and UDP only if LB-IPAM tells the
    protocols apart: Cilium 1.17+ with protocol differentiation (``bpf-lb-proto-diff``, on by
    default, always on from 1.19) [C1.2]. Otherwise LB-IPAM gives one sharer another IP."""
    name = "shared-ip-protocols"
    clashes = _shared_port_clashes(ctx)
    if not clashes:
        return CheckResult(name, OK, "No shared IP uses one port number on two protocols.")
    setting = ctx.setting("bpf-lb-proto-diff")
    newer = ctx.at_least((1, 17))
    listed = "; ".join(clashes[:5])
    field = "data.bpf-lb-proto-diff"
    if newer is None:
        return CheckResult(
            name, WARNING, f"Shared IPs use one port number on two protocols: {listed}; the"
            " Cilium version is unknown.", "Make sure Cilium is 1.17 or newer with"
            " loadBalancer.protocolDifferentiation.enabled (the default).",
            obj=ctx.cilium.config_obj, field=field)
    if newer and setting != "false":
        return CheckResult(
            name, OK, f"Shared IPs use one port number on two protocols ({listed}); Cilium"
            " tells the protocols apart.", obj=ctx.cilium.config_obj, field=field)
    if not newer:
        return CheckResult(
            name, ERROR, f"Shared IPs use one port number on two protocols: {listed}. Cilium"
            f" {version_text(ctx.version) if ctx.version else ''} tells ports apart by number"
            " only, so LB-IPAM would give one of the sharers another IP.",
            "Upgrade Cilium to 1.17 or newer before migrating.", obj=ctx.cilium.config_obj,
            field=field)
    return helm_result(
        name, ERROR, f"Shared IPs use one port number on two protocols: {listed}, and"
        " bpf-lb-proto-diff is 'false': LB-IPAM would give one of the sharers another IP.",
        "Turn protocol differentiation back on (Helm values below) and restart"
        " Cilium.", {"loadBalancer": {"protocolDifferentiation": {"enabled": True}}}, ctx, field,
    )
