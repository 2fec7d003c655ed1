"""Checks of BGP: Cilium's BGP control plane, the routers MetalLB peers with, graceful restart
and BFD [M4][C3].

``migrate plan`` hands BGP over node by node (stages ``bgp-prepare`` and ``bgp-handover``), so
what would make that hand-over fail is an ERROR: Cilium's BGP control plane off, a router given
two AS numbers or two sessions from one node. What is only lost (BFD's fast failure detection)
is a WARNING.
"""

from __future__ import annotations

from collections import defaultdict

from migrate.model import bgp as views
from migrate.preflight.context import ERROR, INFO, OK, WARNING, Context, helm_result
from migrate.preflight.inventory import describe
from migrate.preflight.report import CheckResult
from migrate.translate.bgp import BGPTranslation, bgp_version
from migrate.translate.mappings import cilium_version
from migrate.translate.translator import translate

BLOCKING = ERROR
"""The outcome of a BGP check that would make the hand-over fail (the plan has BGP stages)."""
FRR_RESTART_TIME = 120  # seconds: FRR's default, which MetalLB leaves in place [M4]


def _peers(ctx: Context) -> list[views.PeerView]:
    return sorted((views.peer_view(p) for p in ctx.snapshot.bgp_peers), key=lambda p: p.name)


def _translation(ctx: Context) -> BGPTranslation | None:
    """The BGP translation for the target release (before 1.16, as 1.16+ lays it out)."""
    minor = ctx.row.minor if ctx.row else None
    if minor and bgp_version(cilium_version(minor)).api_version is None:
        minor = None
    return translate(ctx.snapshot, cilium=minor).bgp


def check_bgp_control_plane(ctx: Context) -> CheckResult:
    """``enable-bgp-control-plane`` must be true for Cilium to peer at all [C3]."""
    field = "data.enable-bgp-control-plane"
    peers = ctx.snapshot.bgp_peers
    if not peers and not ctx.snapshot.bgp_advertisements:
        return CheckResult("bgp-control-plane", OK, "No BGPPeer or BGPAdvertisement: MetalLB"
                           " does not announce over BGP.", obj=ctx.cilium.config_obj,
                           field=field)
    value = ctx.setting("enable-bgp-control-plane")
    shown = f"is {value!r}" if value is not None else "is not set (default false)"
    found = (f"MetalLB peers with {len(peers)} BGP router(s); enable-bgp-control-plane"
             f" {shown}{ctx.config_note}.")
    notes: list[str] = []
    if ctx.at_least((1, 16)) is False:
        notes.append("Cilium before 1.16 has no CiliumBGPClusterConfig the translation can"
                     " write (upgrade to 1.16, or 1.18 for cilium.io/v2).")
    if ctx.setting("enable-bgp-control-plane-status-report") == "false":
        notes.append("enable-bgp-control-plane-status-report is 'false': the CiliumBGPNodeConfig"
                     " status that tells whether a node's sessions are Established stays empty.")
    secrets = ctx.setting("bgp-secrets-namespace") or "kube-system"
    if any(views.peer_view(p).has_password or views.peer_view(p).password_secret
           for p in peers):
        found += (f" Peers with a TCP MD5 password: Cilium reads their Secrets from"
                  f" {secrets} (bgp-secrets-namespace).")
    if value == "true" and not notes:
        return CheckResult("bgp-control-plane", OK, found, obj=ctx.cilium.config_obj,
                           field=field)
    if value == "true":
        return CheckResult("bgp-control-plane", BLOCKING, f"{found} {' '.join(notes)}",
                           "Fix that before moving BGP to Cilium.", obj=ctx.cilium.config_obj,
                           field=field)
    values = {"bgpControlPlane": {"enabled": True}}
    return helm_result(
        "bgp-control-plane", BLOCKING, f"{found} {' '.join(notes)}".strip(),
        "Enable Cilium's BGP control plane (Helm values below) and restart the agents before"
        " moving BGP to Cilium; with no CiliumBGPClusterConfig selecting a node it peers with"
        " no router, so it is safe to enable now.", values, ctx, field,
    )


def check_bgp_peers(ctx: Context) -> CheckResult:
    """The routers: one AS and one session per address, as a node's ClusterConfig holds them."""
    peers = [p for p in _peers(ctx) if p.address and not p.vrf]
    if not peers:
        return CheckResult("bgp-peers", OK, "No BGPPeer with an address to compare.")
    problems: list[str] = []
    by_address: dict[str, list[views.PeerView]] = defaultdict(list)
    for peer in peers:
        by_address[f"{peer.address}:{peer.port or 179}"].append(peer)
    for address, same in sorted(by_address.items()):
        asns = sorted({p.peer_asn or 0 for p in same})
        if len(asns) > 1:
            names = ", ".join(f"{p.name} (AS {p.peer_asn or 'any'})" for p in same)
            problems.append(f"router {address} is given different AS numbers: {names}")
    notes: list[str] = []
    bgp = _translation(ctx)
    for node_set in bgp.node_sets if bgp else []:
        members = [p for p in peers if p.name in node_set.peers]
        seen: dict[str, str] = {}
        for peer in members:
            key = str(peer.address)  # GoBGP keys a neighbour by address, whatever the port
            if key in seen and seen[key] != peer.name:
                problems.append(
                    f"{seen[key]} and {peer.name} both peer with {key} from the nodes of"
                    f" {node_set.cluster_config}: a router keeps one session per neighbour"
                    " address, so one of them never comes up")
            seen.setdefault(key, peer.name)
        asns = sorted({p.session_asn for p in members})
        router_ids = sorted({p.router_id for p in members if p.router_id})
        if len(asns) > 1 or len(router_ids) > 1:
            notes.append(
                f"the nodes of {node_set.cluster_config} speak AS {', '.join(map(str, asns))}"
                + (f" with router IDs {', '.join(router_ids)}" if len(router_ids) > 1 else "")
                + ": one Cilium BGP instance each (MetalLB's FRR modes refuse this on one"
                " node)")
    summary = (f"{len(peers)} BGPPeer(s), {len(by_address)} router address(es)"
               + (f", {len(bgp.node_sets)} CiliumBGPClusterConfig(s)" if bgp else "") + ".")
    if problems:
        return CheckResult(
            "bgp-peers", BLOCKING, f"{summary} " + "; ".join(problems) + ".",
            "Give each router one AS number and peer with each address once per node (fix the"
            " BGPPeers, which MetalLB itself runs this way), then translate again.",
            obj=f"BGPPeer {peers[0].ref.namespace}/{peers[0].name}", field="spec.peerAddress")
    if notes:
        return CheckResult("bgp-peers", INFO, f"{summary} " + "; ".join(notes) + ".",
                           "Nothing to do: the translation writes one instance per AS.")
    return CheckResult("bgp-peers", OK, f"{summary} Each router has one AS number and one"
                       " session per node; each node speaks one AS.")


def check_bgp_graceful_restart(ctx: Context) -> CheckResult:
    """MetalLB's ``enableGracefulRestart`` and what Cilium's PeerConfig does with it [M4][C3]."""
    peers = [p for p in _peers(ctx) if not p.vrf and not p.interface]
    restarting = [p for p in peers if p.graceful_restart]
    if not restarting:
        return CheckResult("bgp-graceful-restart", OK,
                           "No BGPPeer enables graceful restart: a router withdraws a node's"
                           " routes as soon as its session ends, under MetalLB and Cilium"
                           " alike." if peers else "No BGPPeer.")
    names = ", ".join(p.name for p in restarting)
    others = [p.name for p in peers if not p.graceful_restart]
    found = (f"{len(restarting)} BGPPeer(s) enable graceful restart ({names}); their"
             " CiliumBGPPeerConfigs do too, with"
             f" restartTimeSeconds {FRR_RESTART_TIME} (FRR's default, which MetalLB keeps).")
    if ctx.metallb.bgp_type in ("", "native"):
        return CheckResult(
            "bgp-graceful-restart", BLOCKING,
            f"{found} But MetalLB's speaker runs the native BGP implementation, which refuses"
            " enableGracefulRestart: MetalLB does not use these peers today, and Cilium would"
            " start them with graceful restart.",
            "Decide whether the routers should keep a restarting node's routes; drop"
            " gracefulRestart from those CiliumBGPPeerConfigs if not.",
            obj=describe(ctx.metallb.speaker) if ctx.metallb.speaker else None)
    remedy = (
        "During the hand-over a router may keep a node's routes as stale for up to"
        f" {FRR_RESTART_TIME} s after MetalLB's session there ends, and Cilium's session from"
        " the same address takes them over: bring Cilium's up within that time, or the router"
        " forwards to a node that no longer announces.")
    if others:
        remedy += f" {', '.join(others)} do not use graceful restart: their routes go at once."
    return CheckResult("bgp-graceful-restart", INFO, found, remedy,
                       obj=f"BGPPeer {restarting[0].ref.namespace}/{restarting[0].name}",
                       field="spec.enableGracefulRestart")


def check_bgp_bfd(ctx: Context) -> CheckResult:
    """What MetalLB's BFD did: Cilium has none, so link failures are noticed later [M4][C3]."""
    peers = [p for p in _peers(ctx) if p.bfd_profile]
    if not peers:
        unused = len(ctx.snapshot.bfd_profiles)
        return CheckResult("bgp-bfd", OK, "No BGPPeer uses BFD" + (
            f" ({unused} BFDProfile(s) unused: nothing is lost)." if unused else "."))
    profiles = {p.ref.name: views.bfd_view(p) for p in ctx.snapshot.bfd_profiles}
    lost: list[str] = []
    for peer in peers:
        profile = profiles.get(str(peer.bfd_profile))
        detection = profile.detection_ms if profile else 900
        hold = int(peer.hold_time) if peer.hold_time else 90
        lost.append(f"{peer.name} (profile {peer.bfd_profile}: {detection} ms, against a hold"
                    f" time of {hold} s)")
    return CheckResult(
        "bgp-bfd", WARNING,
        f"MetalLB's FRR runs BFD with {len(peers)} router(s): {'; '.join(lost)}. Cilium's BGP"
        " control plane has no BFD: once it holds the sessions, a dead link or node is"
        " noticed only when the BGP hold time expires, and its routes are withdrawn that much"
        " later.",
        "Lower the hold time of those CiliumBGPPeerConfigs and on the routers (Cilium's"
        " documentation suggests holdTimeSeconds 9, keepAliveTimeSeconds 3 for fast"
        " detection), or accept the slower failover.",
        obj=f"BGPPeer {peers[0].ref.namespace}/{peers[0].name}", field="spec.bfdProfile")


CHECKS = (check_bgp_control_plane, check_bgp_peers, check_bgp_graceful_restart, check_bgp_bfd)
"""The BGP checks, in the order preflight runs them."""
