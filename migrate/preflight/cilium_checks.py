"""Checks of Cilium: installed, version, cilium-config, rate limit, devices, node labels,
IPv6 [C1][C2][C5]."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

from migrate.guards import GUARDS
from migrate.model.addresses import AddressRange, IPAddress
from migrate.model.metallb import L2Advertisement
from migrate.model.selectors import combine, matches
from migrate.preflight.context import ERROR, INFO, OK, WARNING, Context, helm_result
from migrate.preflight.inventory import (
    CILIUM_CLASSES,
    Version,
    advertisement_nodes,
    advertisement_pools,
    cilium_node_labels,
    describe,
    go_duration_seconds,
    l2_pool_names,
    node_addresses,
    node_interfaces,
    pool_holding,
    version_text,
)
from migrate.preflight.report import CheckResult, CheckSeverity
from migrate.preflight.snippets import commands_snippet
from migrate.translate.translator import EXCLUDE_LB_LABEL

# [C1.4]: before 1.18.2 an operator restart could re-address Services (known-bugs.yaml,
# cilium-43131); the version to upgrade to when Cilium is too old.
RESHUFFLE_FIXED: Version = (1, 18, 2)
# client-go's leaderelection.JitterFactor: Cilium requires renew deadline > this × retry [C2].
JITTER_FACTOR = 1.2
RATE_HEADROOM = 1.5  # recommended QPS = busiest agent's lease requests/s × this (shared limit)
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
    """Cilium's version decides the pool API and NDP [C1][C2]; its known bugs are the
    ``known-bugs`` check's."""
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


@dataclass(frozen=True)
class LeaseTimings:
    """The L2 announcer's lease timings as the agent uses them (after its sanity rules)."""

    duration: float
    renew_deadline: float
    retry_period: float
    notes: tuple[str, ...]


class Settings(Protocol):
    """Where cilium-config's values come from (a preflight context, or the live ConfigMap)."""

    def setting(self, key: str) -> str | None: ...


def lease_timings(ctx: Settings) -> LeaseTimings:
    """cilium-config's lease duration, renew deadline and retry period, corrected the way the
    agent's ``leaseTimings()`` does (pkg/l2announcer/l2announcer.go): duration at least 1s,
    renew deadline below the duration (else half of it), retry period below the renew deadline
    ÷ 1.2 (client-go's JitterFactor; else half the renew deadline)."""
    duration = go_duration_seconds(ctx.setting("l2-announcements-lease-duration")) or 15.0
    renew = go_duration_seconds(ctx.setting("l2-announcements-renew-deadline")) or 5.0
    retry = go_duration_seconds(ctx.setting("l2-announcements-retry-period")) or 2.0
    notes = []
    if duration < 1:
        duration = 1.0
        notes.append("the lease duration is raised to 1s")
    if duration <= renew:
        notes.append(f"the renew deadline {renew:g}s is not below the lease duration"
                     f" {duration:g}s, so the agent uses {duration / 2:g}s")
        renew = duration / 2
    if renew <= JITTER_FACTOR * retry:
        notes.append(f"the renew deadline {renew:g}s is not above 1.2 × the retry period"
                     f" {retry:g}s, so the agent retries every {renew / 2:g}s")
        retry = renew / 2
    return LeaseTimings(duration, renew, retry, tuple(notes))


def _default_rate_limit(ctx: Context) -> tuple[float, float, str]:
    """The agent's API client limits when cilium-config sets none: 10/20 built in from 1.17
    (cilium/cilium#33821), client-go's 5/10 before (the chart wrote 10/20 itself on
    Kubernetes 1.27+, cilium/cilium#29445)."""
    newer = ctx.at_least((1, 17))
    if newer:
        return 10, 20, "the agent's default from Cilium 1.17"
    if newer is False:
        return 5, 10, "client-go's default, which the agent uses before 1.17"
    return 5, 10, "the lowest default of the supported releases (Cilium's version is unknown)"


def _lease_candidates(ctx: Context) -> dict[str, list[str] | None]:
    """Announced Service → the nodes whose agents run its lease election (None: unknown)."""
    snapshot = ctx.snapshot
    by_pool: dict[str, set[str]] = defaultdict(set)
    for ad in snapshot.l2_advertisements:
        nodes = {node.name for node in advertisement_nodes(snapshot, ad)}
        for pool in advertisement_pools(snapshot, ad):
            by_pool[pool] |= nodes
    out: dict[str, list[str] | None] = {}
    for service in ctx.announced:
        if not snapshot.nodes:
            out[service.key] = None
            continue
        pools = {pool_holding(snapshot, ip) for ip in service.current_ips()}
        nodes = set().union(*(by_pool.get(str(p), set()) for p in pools if p))
        if service.load_balancer_class == CILIUM_CLASSES[0]:
            nodes = {node.name for node in snapshot.nodes}  # its policies are not ours
        out[service.key] = sorted(nodes)
    return out


def check_client_rate_limit(ctx: Context) -> CheckResult:
    """The agents' API client must carry their lease elections (real-clusters.md §2, [C2]).

    client-go's leader election, one per announced Service, calls the API server once per
    retry period on every eligible agent: the holder renews (one update), every other agent
    tries to acquire (one get) (k8s.io/client-go/tools/leaderelection, ``acquire`` /
    ``renew``). So the cluster sees about (eligible agents × Services) ÷ retry period requests,
    Services ÷ retry period of them renewals, and one agent up to its Services ÷ retry period,
    against its own ``k8s-client-qps``; the renew deadline does not enter the rate.
    """
    timings = lease_timings(ctx)
    retry = timings.retry_period if GUARDS.lease_load else timings.renew_deadline
    candidates = _lease_candidates(ctx)
    default_qps, default_burst, default_why = _default_rate_limit(ctx)
    qps = _number(ctx.setting("k8s-client-qps"), default_qps)
    burst = _number(ctx.setting("k8s-client-burst"), default_burst)
    limit_why = ("" if ctx.setting("k8s-client-qps") is not None
                 else f" ({default_why}{ctx.config_note})")
    elected = {key: nodes for key, nodes in candidates.items() if nodes is None or nodes}
    count = len(elected)
    per_node: dict[str, int] = defaultdict(int)
    for nodes in elected.values():
        for node in nodes or ():
            per_node[node] += 1
    if per_node:
        busiest_node, busiest = max(sorted(per_node.items()), key=lambda item: item[1])
        agents = len(per_node)
        who = f"the busiest agent ({busiest_node}, {busiest} election(s))"
    else:
        busiest_node, busiest, agents = "", count, 0
        who = "an agent that runs every election (the Nodes are not in the input)"
    elections = sum(len(nodes) if nodes else 1 for nodes in elected.values())
    acquisitions = (elections - count) / retry
    renewals = count / retry
    needed = busiest / retry
    timing = f"retry period {retry:g}s"
    if timings.notes:
        timing += f" ({'; '.join(timings.notes)})"
    found = (
        f"{count} Service(s) to announce, {agents or 'unknown'} eligible agent(s), {timing}:"
        f" about {acquisitions:.1f} lease acquisition attempts/s (eligible agents other than"
        f" the holder × Services ÷ retry period) and {renewals:.1f} renewals/s (Services ÷"
        f" retry period) reach the API server; {who} makes {needed:.1f} lease requests/s"
        f" against k8s-client-qps {qps:g} / burst {burst:g}{limit_why}."
    )
    if busiest > burst and qps > 0:
        found += (f" At the cutover it asks for its {busiest} leases at once: the last waits"
                  f" about {(busiest - burst) / qps:.1f}s for the client before the API server"
                  " sees it.")
    field = "data.k8s-client-qps"
    if qps < needed:
        severity = ERROR
    elif qps < needed * RATE_HEADROOM or burst < qps:
        severity = WARNING
    else:
        return CheckResult("client-rate-limit", OK, found, obj=ctx.cilium.config_obj,
                           field=field)
    recommended_qps = max(int(default_qps), math.ceil(needed * RATE_HEADROOM))
    recommended_burst = max(int(default_burst), 2 * recommended_qps)
    return helm_result(
        "client-rate-limit", severity, found,
        f"Raise the agents' client rate limit to qps {recommended_qps} / burst"
        f" {recommended_burst} (Helm values below: {RATE_HEADROOM:g} × the busiest agent's"
        " lease requests, since the limit is shared with the agent's other API calls), or"
        " lengthen l2announcements.leaseRetryPeriod (fewer requests, slower takeover). Too low"
        " a limit delays renewals past the renew deadline: leases are lost and the announcing"
        " node flaps.",
        {"k8sClientRateLimit": {"qps": recommended_qps, "burst": recommended_burst}}, ctx, field,
    )


def _number(text: str | None, default: float) -> float:
    try:
        return float(text) if text else default
    except ValueError:
        return default


def _device_matches(interface: str, device: str) -> bool:
    # Cilium's devices option takes exact names and prefixes ending in "+" (e.g. "eth+")
    # (pkg/datapath/tables/device.go, deviceFilter.match).
    return interface.startswith(device[:-1]) if device.endswith("+") else interface == device


def _is_device(interface: str, devices: list[str]) -> bool:
    return any(_device_matches(interface, device) for device in devices)


DEVICES_COMMAND = (
    "for pod in $(kubectl -n {namespace} get pods -l k8s-app=cilium -o name); do"
    " echo \"== $pod\"; kubectl -n {namespace} exec $pod -c cilium-agent --"
    " cilium-dbg shell -- db/show devices; done"
)
# Without a prefix length, a node address within this many leading bits of a pool's first
# address is taken to share its subnet (a /24 for IPv4, a /64 for IPv6).
NEAR_BITS = {4: 24, 6: 64}


@dataclass
class _DeviceFindings:
    """What check_l2_devices found, part by part."""

    errors: list[str]
    unknowns: list[str]
    notes: list[str]
    missing: list[str]


def _common_bits(a: IPAddress, b: IPAddress) -> int:
    width = 32 if a.version == 4 else 128
    return width - (int(a) ^ int(b)).bit_length()


def _pool_carriers(ctx: Context, devices: list[str], ads: list[L2Advertisement],
                   found: _DeviceFindings) -> None:
    """For every pool that an advertisement without ``interfaces`` announces (MetalLB answered
    on every interface), which device carries its subnet on each node that announces it, and
    whether Cilium's restricted devices include it."""
    snapshot = ctx.snapshot
    nodes_of: dict[str, set[str]] = defaultdict(set)
    for ad in ads:
        nodes = {node.name for node in advertisement_nodes(snapshot, ad)}
        for name in advertisement_pools(snapshot, ad):
            nodes_of[name] |= nodes
    interfaces = node_interfaces(snapshot)
    addresses = node_addresses(snapshot)
    shown = " ".join(devices)
    for pool_name in sorted(nodes_of):
        pool = snapshot.pool(pool_name)
        if pool is None:
            continue
        ranges = [a.range for a in pool.addresses]
        label = f"pool {pool_name} ({', '.join(a.text for a in pool.addresses)})"
        reachable: list[str] = []
        blocked: list[str] = []
        unsure: list[str] = []
        for node in sorted(nodes_of[pool_name]) or ["(no Node in the input)"]:
            if node in interfaces:
                carriers = [
                    (iface.name, address) for iface in interfaces[node]
                    for address in iface.addresses
                    if any(address.version == r.version and r.overlaps(AddressRange(
                        address.network[0], address.network[-1])) for r in ranges)
                ]
                names = sorted({name for name, _ in carriers})
                cilium = [name for name in names if _is_device(name, devices)]
                if cilium:
                    reachable.append(f"{node} ({', '.join(cilium)})")
                elif names:
                    subnet = ", ".join(sorted({str(a.network) for _, a in carriers}))
                    blocked.append(f"on {node} its subnet {subnet} is on {', '.join(names)}")
                    found.missing.extend(name for name in names if name not in found.missing)
                else:
                    unsure.append(f"{node}: no interface of the node has an address in its"
                                  " subnet")
                continue
            near = sorted({
                f"{kind} {address}" for kind, address in addresses.get(node, [])
                for r in ranges if address.version == r.version
                and _common_bits(address, r.first) >= NEAR_BITS[r.version]
            })
            if near:
                unsure.append(f"{node}: it seems to share the subnet of its {', '.join(near)},"
                              " so the device that holds that address carries it and must be"
                              f" one of {shown}")
            else:
                unsure.append(f"{node}: it is near none of its addresses, so an interface the"
                              " input does not show carries it")
        if blocked:
            found.errors.append(
                f"{label}: {'; '.join(blocked)}, not among Cilium's devices ({shown}): the node"
                " would take the lease and answer on no interface of that subnet.")
        if unsure:
            found.unknowns.append(f"{label}: cannot tell which device carries it on "
                                  + "; ".join(unsure) + ".")
        if reachable and not blocked and not unsure:
            found.notes.append(f"{label} is reached through {', '.join(reachable)}.")


def check_l2_devices(ctx: Context) -> CheckResult:
    """Cilium answers ARP only on its devices [C2]: every interface MetalLB announces on (an
    L2Advertisement's ``interfaces``), and, when cilium-config restricts ``devices``, the device
    that carries each pool MetalLB announced on every interface, must be among them."""
    ads = ctx.snapshot.l2_advertisements
    field = "data.devices"
    devices_text = ctx.setting("devices")
    devices = devices_text.replace(",", " ").split() if devices_text else []
    named: dict[str, list[str]] = defaultdict(list)
    for ad in ads:
        for interface in ad.interfaces:
            named[interface].append(str(ad.ref))
    everywhere = [ad for ad in ads if not ad.interfaces]
    found = _DeviceFindings([], [], [], [])
    auto = False
    if named:
        interfaces = sorted(named)
        if not devices:
            auto = True
            found.unknowns.append(
                f"MetalLB announces on {', '.join(interfaces)}; Cilium auto-detects its devices"
                f" (devices is not set{ctx.config_note}), and an interface without an IP"
                " address is not selected.")
        else:
            missing = [i for i in interfaces if not _is_device(i, devices)]
            found.notes.append(f"Cilium's devices: {' '.join(devices)}; MetalLB announces on"
                               f" {', '.join(interfaces)}.")
            if missing:
                where = "; ".join(f"{i} (named by {', '.join(sorted(named[i]))})"
                                  for i in missing)
                found.errors.append(f"Not among Cilium's devices: {where}.")
                found.missing.extend(missing)
    if everywhere and devices and GUARDS.pool_devices:
        _pool_carriers(ctx, devices, everywhere, found)
        if not named:
            found.notes.insert(0, f"Cilium's devices are restricted to {' '.join(devices)};"
                                  " MetalLB answers on every interface.")
    elif everywhere and not named:
        found.notes.append("No L2Advertisement limits interfaces: Cilium will announce on all"
                           " of its devices.")
    if not ads:
        found.notes.append("No L2Advertisement.")
    text = " ".join([*found.notes, *found.errors, *found.unknowns])
    if found.errors:
        return helm_result(
            "l2-devices", ERROR, text,
            "Cilium only announces on its own devices: add the missing interfaces to devices"
            " (Helm values below) and restart the agents."
            + (" Then check the other pools on each node: cilium-dbg shell -- db/show devices"
               " in every Cilium agent pod." if found.unknowns else ""),
            {"devices": [*devices, *found.missing]}, ctx, field,
        )
    if found.unknowns:
        remedy = ("Check that each interface is among the agent's devices (command below); if"
                  " one is not, set devices to the full list of interfaces Cilium must use."
                  if auto else
                  "Check on each node that the device carrying the pool's subnet is among"
                  " Cilium's devices (command below, one table per agent); if it is not, add it"
                  " to devices.")
        return CheckResult(
            "l2-devices", WARNING, text, remedy,
            snippet=commands_snippet([DEVICES_COMMAND.format(namespace=ctx.cilium.namespace)]),
            obj=ctx.cilium.config_obj, field=field,
        )
    return CheckResult("l2-devices", OK, text, obj=ctx.cilium.config_obj, field=field)


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
    default, always on from 1.19). Otherwise LB-IPAM gives one sharer another IP."""
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
