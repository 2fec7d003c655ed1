"""The BGP stages of a plan: ``bgp-prepare`` and ``bgp-handover`` (reference/metallb.md §4,
reference/cilium.md §3), and what ``decommission`` removes of MetalLB's BGP configuration.

A router keeps one session per neighbour address (RFC 4271 §6.8), so MetalLB's speaker and
Cilium's agent on one node cannot both peer from the node's address: the hand-over goes node by
node (or batch by batch), MetalLB first stopping there, then Cilium starting, and the stage
waits for Cilium's sessions to be Established and its routes advertised before the next node.
The other nodes keep advertising every prefix meanwhile.

How each side is switched on one node only, through one Node label (``mappings/bgp.yaml``
``labels.handover``, ``lbmigrate.io/bgp-speaker``):

- MetalLB: ``bgp-prepare`` adds ``<label> DoesNotExist`` to every node selector of every BGPPeer
  (a peer with none gets that one selector). No node has the label yet, so no session changes:
  the speakers re-read their configuration, and a peer that changed is closed and created again
  in the same ``SetConfig`` (metallb ``speaker/bgp_controller.go``), which the FRR modes collapse
  into an unchanged FRR configuration (``internal/bgp/frr/config.go`` ``debouncer``). Labelling
  a Node afterwards makes only that node's speaker close its sessions (``SetNode`` ->
  ``syncPeers``: "filteredByNodeSelector"). Changing the speaker DaemonSet instead would
  restart every speaker pod, each withdrawing its routes; the label
  ``node.kubernetes.io/exclude-from-external-load-balancers`` would withdraw the node's routes
  but keep its sessions up (``ShouldAnnounce`` only), so Cilium's would still collide.
  The edit needs MetalLB's validating webhook, which its controller serves: so it is a stage of
  its own before ``freeze-metallb``, while the webhook answers (and validates the edit), and
  its undo runs after ``freeze-metallb``'s, when the controller is back. No webhook bypass is
  needed at either end.
- Cilium: every CiliumBGPClusterConfig of the translation also requires ``<label>=cilium``;
  Cilium's operator matches **CiliumNode** labels (``operator/pkg/bgpv2/cluster.go``), which
  the agent keeps equal to its Node's (cilium/cilium#18609). So ``bgp-handover`` labels the Node:
  first ``none`` (MetalLB stops; nobody peers there), then, once MetalLB's sessions there are
  gone, ``cilium`` (Cilium starts).

``externalTrafficPolicy: Local`` Services are advertised only from nodes with a local endpoint,
by MetalLB and Cilium alike: a Service whose only such node hands over has no route for that
moment. One node at a time, no other prefix ever loses its last next hop; batches are formed so
that none holds every next hop of a prefix, and a prefix with a single next hop is a finding
naming it.
"""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from migrate.model.findings import Finding, Severity
from migrate.model.kube import Node
from migrate.model.selectors import matches
from migrate.plan.model import Action, Obj, Stage, Target, merge_patch
from migrate.plan.views import creatable, view
from migrate.preflight.inventory import find_metallb, version_text
from migrate.translate.bgp import endpoint_nodes
from migrate.translate.translator import selection_labels

if TYPE_CHECKING:
    from migrate.plan.build import _Builder
    from migrate.translate.bgp import BGPService, BGPTranslation

PARKED = "none"
"""The hand-over label's value while neither MetalLB nor Cilium peers from the node."""
SERVICE_BGP_STATUS_FROM = (0, 15, 0)
"""MetalLB writes a ServiceBGPStatus per advertised Service and node from 0.15.0."""
METALLB_SETTLE = {"native": 3.0, "frr": 10.0, "frr-k8s": 10.0}
"""Seconds from the last API sign of MetalLB letting go of a node (its ServiceBGPStatus gone,
or the label written where it writes none) to its sessions there being closed: the speaker's
reaction, then, in the FRR modes, the configuration debounce (3 s by default,
``--bgp-debounce-timeout``) and frr-reload.py; frr-k8s adds its own debounce."""
CILIUM_SETTLE = 3.0
"""Seconds from Cilium's CiliumBGPNodeConfig of a node being gone (the operator let go of it)
to the agent there having closed its sessions (its reaction, then GoBGP's shutdown)."""
METALLB_PEERS_AGAIN = 10.0
"""Seconds a rollback gives MetalLB's speaker on a node to peer again after its label goes,
where no API object tells (before MetalLB 0.15): reaction, debounce, reload, connect."""
HANDOVER_TIMEOUT = 180.0


def _metallb_signal(builder: _Builder) -> tuple[bool, str]:
    """(MetalLB writes ServiceBGPStatus, its BGP type)."""
    install = find_metallb(builder.snapshot)
    version = install.version
    writes = bool(builder.snapshot.find("metallb.io/", "ServiceBGPStatus")) if version is None \
        else version >= SERVICE_BGP_STATUS_FROM
    return writes, install.bgp_type or "native"


def handover_blocker(builder: _Builder) -> str | None:
    """Why the plan cannot hand BGP over (None when it can)."""
    bgp = builder.translation.bgp
    snapshot = builder.snapshot
    if bgp is None or not bgp.cluster_configs:
        return "the BGP translation writes no CiliumBGPClusterConfig"
    legacy = [p for p in snapshot.bgp_peers
              if p.ref.origin.startswith(tuple(snapshot.legacy_sources))]
    if legacy:
        return ("its peers are in MetalLB's legacy configuration (ConfigMap), whose node"
                " selectors the hand-over cannot edit one node at a time: convert it to"
                " BGPPeer objects first (MetalLB 0.13+, configmaptocrs)")
    if not snapshot.nodes:
        return ("the input has no Node: the hand-over goes node by node (read the live"
                " cluster, or add the Nodes: kubectl get nodes -o yaml)")
    return None


def bgp_left_to_metallb(snapshot: Any, bgp_pools: set[str], reason: str) -> list[Finding]:
    """One WARNING per pool announced over BGP when the plan cannot hand BGP over."""
    return [
        Finding(
            Severity.WARNING, "bgp-left-to-metallb", str(pool.ref), None,
            f"is announced over BGP, which this plan leaves to MetalLB: {reason}. Its Cilium"
            " pool takes over the IPs, and MetalLB's speakers keep announcing them"
            " (decommission keeps MetalLB's BGP objects).", pool.ref.origin)
        for pool in sorted(snapshot.pools, key=lambda p: p.name) if pool.name in bgp_pools
    ]


class BGPStages:
    """Builds the BGP stages from the plan builder's snapshot and translation."""

    def __init__(self, builder: _Builder, *, batch_size: int = 1) -> None:
        self.builder = builder
        self.snapshot = builder.snapshot
        bgp = builder.translation.bgp
        assert bgp is not None
        self.bgp: BGPTranslation = bgp
        self.label = bgp.handover_label
        self.cilium_value = bgp.handover_value
        self.batch_size = max(1, batch_size)
        self.status_kind, self.bgp_type = _metallb_signal(builder)
        self.nodes = sorted(self.snapshot.nodes, key=lambda n: n.name)
        self.local_nodes = self._local_endpoint_nodes()
        self.prepared: dict[tuple[str, str], Obj] = {}
        """(namespace, name) -> a BGPPeer's spec patch in bgp-prepare (what decommission
        then finds)."""

    # ----------------------------------------------------------------- inputs

    def _local_endpoint_nodes(self) -> dict[str, set[str] | None]:
        """Service -> the nodes with a ready endpoint (absent: the input holds no
        EndpointSlice of it)."""
        return dict(endpoint_nodes(self.snapshot))

    def _metallb_nodes(self) -> list[Node]:
        """The nodes MetalLB's speakers peer from today (any BGPPeer selects them)."""
        out = []
        for node in self.nodes:
            for peer in self.snapshot.bgp_peers:
                selectors = list(peer.fields.get("nodeSelectors") or [])
                if not selectors or any(matches(s, node.labels) for s in selectors):
                    out.append(node)
                    break
        return out

    def _advertisement(self, name: str) -> Obj | None:
        return next((a for a in self.bgp.advertisements if a["metadata"]["name"] == name), None)

    def _prefixes(self, service: BGPService, advertisements: Sequence[str]) -> set[str]:
        """The prefixes Cilium advertises a Service's IPs as through some advertisements
        (aggregated where they say so, except for Local Services)."""
        found: set[str] = set()
        svc = self.builder.services.get(service.key)
        labels = selection_labels(svc, {}) if svc is not None else {}
        pin = next((p for p in self.builder.translation.pins if p.key == service.key), None)
        if pin is not None and svc is not None:
            labels = selection_labels(svc, pin.labels)
        for name in advertisements:
            advert = self._advertisement(name)
            entries = (advert or {}).get("spec", {}).get("advertisements") or []
            for entry in entries:
                if not matches(entry.get("selector"), labels):
                    continue
                for text in service.ips:
                    ip = ipaddress.ip_address(text)
                    key = "aggregationLengthIPv4" if ip.version == 4 else "aggregationLengthIPv6"
                    length: int = ip.max_prefixlen
                    options = entry.get("service") or {}
                    if options.get(key) is not None and service.external_traffic_policy != \
                            "Local":
                        length = int(options[key])
                    found.add(str(ipaddress.ip_network(f"{ip}/{length}", strict=False)))
        return found

    def _advertises(self, service: BGPService, node: str, *, unknown: bool = True) -> bool:
        """Whether ``node`` advertises a Service (``unknown``: the answer for a Local one whose
        endpoints the input does not show)."""
        if service.external_traffic_policy != "Local":
            return True
        local = self.local_nodes.get(service.key)
        return unknown if local is None else node in local

    def expected_routes(self, node: Node) -> dict[str, dict[str, int]]:
        """Peer -> address family -> how many prefixes Cilium advertises from ``node``."""
        node_set = self.bgp.node_set_of(node.labels)
        if node_set is None:
            return {}
        out: dict[str, dict[str, int]] = {}
        for peer in node_set.peers:
            sent = node_set.advertisements.get(peer, ())
            prefixes: set[str] = set()
            for service in self.bgp.services:
                chosen = [a for a in service.advertisements if a in sent]
                # A lower bound: a Local Service whose endpoints are unknown is not counted.
                if chosen and self._advertises(service, node.name, unknown=False):
                    prefixes |= self._prefixes(service, chosen)
            counts: dict[str, int] = {}
            for prefix in prefixes:
                family = "ipv6" if ":" in prefix else "ipv4"
                counts[family] = counts.get(family, 0) + 1
            out[peer] = counts
        return out

    def next_hops(self) -> dict[str, tuple[list[str], list[str]]]:
        """Service -> (its prefixes, the nodes that advertise them today: the translation
        keeps only the endpoint nodes of a Local Service whose endpoints the input shows)."""
        out = {}
        for service in self.bgp.services:
            nodes = list(service.nodes or ())
            prefixes = sorted(self._prefixes(service, service.advertisements))
            out[service.key] = (prefixes, sorted(nodes))
        return out

    # ----------------------------------------------------------------- order

    def batches(self, nodes: Sequence[Node]) -> list[list[str]]:
        """Nodes in hand-over batches (``batch_size`` at most), none holding every next hop of
        a prefix that has more than one."""
        hops = [set(h) for _, h in self.next_hops().values() if len(h) > 1]
        out: list[list[str]] = []
        current: list[str] = []
        for node in nodes:
            trial = {*current, node.name}
            if current and (len(current) >= self.batch_size
                            or any(h <= trial for h in hops)):
                out.append(current)
                current = []
            current.append(node.name)
        if current:
            out.append(current)
        return out

    # ----------------------------------------------------------------- findings

    def findings(self) -> list[Finding]:
        """What the hand-over says before it runs."""
        out = []
        label = f"{self.label}={self.cilium_value}"
        for key, (prefixes, nodes) in sorted(self.next_hops().items()):
            if len(nodes) != 1:
                continue
            service = next(s for s in self.bgp.services if s.key == key)
            why = ("its only node with a local endpoint (externalTrafficPolicy Local)"
                   if service.external_traffic_policy == "Local"
                   else "the only node its advertisements select")
            out.append(Finding(
                Severity.WARNING, "bgp-single-next-hop", f"Service {key}", None,
                f"{', '.join(prefixes)} is advertised from {nodes[0]} only, {why}: while"
                f" {nodes[0]} hands over (MetalLB's session there closes, then Cilium's comes"
                " up, typically 10-20 s), the router has no route for it. It cannot be"
                " avoided on that node (a router keeps one session per neighbour address);"
                " run an endpoint on a second node before bgp-handover to keep it routed."))
        if self.bgp_type == "native":
            out.append(Finding(
                Severity.WARNING, "bgp-prepare-native-reset",
                f"BGPPeer {self.snapshot.metallb_namespace}/"
                + ", ".join(sorted(p.ref.name for p in self.snapshot.bgp_peers)),
                "spec.nodeSelectors",
                "MetalLB's speakers run the native BGP implementation: when bgp-prepare edits"
                " the BGPPeers' node selectors, each speaker closes and reopens those sessions"
                " at once (metallb internal/bgp/native/native.go Close; a changed peer is a new"
                " peer, speaker/bgp_controller.go), and the routers withdraw the routes for the"
                " seconds they take to come back. MetalLB's FRR modes keep the sessions."))
        how = ("its ServiceBGPStatus objects for the node are gone, then"
               f" {METALLB_SETTLE.get(self.bgp_type, 10.0):g}s for its"
               f" {self.bgp_type} speaker to close the sessions" if self.status_kind else
               f"{METALLB_SETTLE.get(self.bgp_type, 10.0):g}s after the label is written"
               f" (MetalLB {self._metallb_text()} writes no ServiceBGPStatus, which 0.15"
               " added)")
        out.append(Finding(
            Severity.INFO, "bgp-handover",
            f"CiliumBGPClusterConfig {self.bgp.node_sets[0].cluster_config}", "spec.nodeSelector",
            f"bgp-handover moves the BGP sessions node by node: it labels each Node"
            f" {self.label}={PARKED} (MetalLB's speaker there stops peering: bgp-prepare made"
            f" every BGPPeer require the label absent), waits until MetalLB let go ({how}),"
            f" then labels it {label} (Cilium's agent copies it to its CiliumNode, which the"
            " ClusterConfigs select) and waits for its sessions to be Established and its"
            " routes advertised (CiliumBGPNodeConfig status) before the next."))
        return out

    def _metallb_text(self) -> str:
        version = find_metallb(self.snapshot).version
        return version_text(version) if version else "(version unknown)"

    # ----------------------------------------------------------------- bgp-prepare

    def prepare(self) -> Stage:
        """Every BGPPeer's node selectors also require the hand-over label absent."""
        actions = []
        requirement = {"key": self.label, "operator": "DoesNotExist"}
        for peer in sorted(self.snapshot.bgp_peers, key=lambda p: p.ref.name):
            body = next(d.body for d in self.snapshot.documents
                        if d.body.get("kind") == "BGPPeer"
                        and d.body["metadata"]["name"] == peer.ref.name
                        and (d.body["metadata"].get("namespace") or self.snapshot
                             .metallb_namespace) == peer.ref.namespace)
            selectors = copy.deepcopy(list((body.get("spec") or {}).get("nodeSelectors") or []))
            if not selectors:
                selectors = [{}]
            changed = False
            for selector in selectors:
                expressions = selector.setdefault("matchExpressions", [])
                if not any(e.get("key") == self.label for e in expressions):
                    expressions.append(dict(requirement))
                    changed = True
            if not changed:
                continue
            patch = {"spec": {"nodeSelectors": selectors}}
            self.prepared[(peer.ref.namespace or "", peer.ref.name)] = patch
            before = view(body)
            assert before is not None
            actions.append(Action(
                "patch", Target("metallb.io/v1beta2", "BGPPeer", peer.ref.name,
                                peer.ref.namespace),
                f"peer only from nodes without {self.label} (every node today)",
                before=before, after=merge_patch(before, patch), patch=patch))
        return Stage(
            2, "bgp-prepare", "Let MetalLB's BGP sessions be stopped one node at a time",
            f"Every BGPPeer also requires the Node label {self.label} to be absent; no node has"
            " it, so every session stays up (MetalLB's FRR modes keep an unchanged neighbour"
            " as it is). From then on, labelling one Node stops MetalLB's sessions on that node"
            " only. Done now, while MetalLB's controller still serves the webhook that"
            " validates BGPPeers.",
            actions=actions,
            checks_before=["MetalLB's controller runs (its webhook validates the BGPPeers)"],
            checks_after=["every BGPPeer requires the hand-over label absent",
                          "no Service IP changed"],
        )

    # ----------------------------------------------------------------- bgp-handover

    def handover(self) -> Stage:
        """Create Cilium's BGP objects, then hand every node over, a batch at a time."""
        builder = self.builder
        actions: list[Action] = []
        namespace = self._secrets_namespace()
        secrets = sorted({f"{s.namespace}/{s.name}" for s in self.bgp.secrets})
        if secrets:
            actions.append(Action(
                "wait", Target("v1", "Secret", "*", namespace),
                "the Secrets Cilium's BGP peers read their passwords from exist (key password)",
                wait={"for": "bgp-secrets", "secrets": secrets, "timeout": 30}))
        existing = {(o.get("kind"), (o.get("metadata") or {}).get("name")): o
                    for kind in ("CiliumBGPAdvertisement", "CiliumBGPPeerConfig",
                                 "CiliumBGPNodeConfigOverride", "CiliumBGPClusterConfig")
                    for o in self.snapshot.find("cilium.io/", kind)}
        for obj in self.bgp.objects():
            key = (obj["kind"], obj["metadata"]["name"])
            if key in existing:
                if view(existing[key]) == view(obj):
                    continue
                builder.error("cilium-bgp-object-exists", f"{obj['kind']} {key[1]}",
                              "a Cilium BGP object of this name already exists with another"
                              " content; rename or delete it first.")
            actions.append(Action("create", Target.of(obj), _create_text(obj),
                                  after=view(obj), body=obj))
        nodes = self._metallb_nodes()
        batches = self.batches(nodes)
        by_name = {n.name: n for n in nodes}
        routes = {n.name: self.expected_routes(n) for n in nodes}
        peers = sorted({str(p.fields.get("peerAddress")) for p in self.snapshot.bgp_peers
                        if p.fields.get("peerAddress")})
        settle = METALLB_SETTLE.get(self.bgp_type, 10.0)
        for batch in batches:
            actions += [self._label(by_name[n], PARKED, "MetalLB's speaker on it stops"
                                    " peering") for n in batch]
            actions.append(Action(
                "wait", Target("metallb.io/v1beta1", "ServiceBGPStatus", "*",
                               self.snapshot.metallb_namespace),
                f"MetalLB no longer peers from {', '.join(batch)}",
                wait={"for": "bgp-metallb-released", "nodes": list(batch), "peers": peers,
                      "settle": settle, "timeout": 120}))
            actions += [self._label(by_name[n], self.cilium_value, "Cilium's agent on it"
                                    " peers") for n in batch]
            actions.append(Action(
                "wait", Target(self.bgp.api_version, "CiliumBGPNodeConfig", "*"),
                f"Cilium's sessions from {', '.join(batch)} are Established and advertise"
                " their routes",
                wait={"for": "bgp-cilium-established", "nodes": list(batch),
                      "routes": {n: routes[n] for n in batch}, "timeout": HANDOVER_TIMEOUT}))
        builder.context["bgp"] = {
            "label": self.label, "cilium": self.cilium_value, "parked": PARKED,
            "apiVersion": self.bgp.api_version, "secretsNamespace": namespace,
            "batches": batches, "peers": peers, "routes": routes,
            "metallbSettle": settle, "ciliumSettle": CILIUM_SETTLE,
            "metallbStatus": self.status_kind,
            "services": {key: {"prefixes": prefixes, "nodes": hops}
                         for key, (prefixes, hops) in sorted(self.next_hops().items())},
        }
        order = "; ".join(", ".join(b) for b in batches)
        return Stage(
            5, "bgp-handover", "Hand the BGP sessions from MetalLB to Cilium, node by node",
            "A router keeps one session per neighbour address, so MetalLB and Cilium cannot"
            " both peer from one node: each node in turn stops MetalLB's sessions (Node label"
            f" {self.label}={PARKED}), then starts Cilium's ({self.label}={self.cilium_value}),"
            " and the stage waits for them to be Established with their routes advertised"
            " before the next; the other nodes keep every prefix routed meanwhile. Order:"
            f" {order}.",
            actions=actions,
            checks_before=["LB-IPAM holds every pinned IP",
                           "the Secrets of Cilium's BGP passwords exist"],
            checks_after=["every node's Cilium BGP sessions are Established and advertise"
                          " their routes", "MetalLB peers from no node",
                          "no Service IP changed"],
        )

    def _label(self, node: Node, value: str, why: str) -> Action:
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": node.name, "labels": dict(node.labels)}}
        before = view(body)
        assert before is not None
        patch = {"metadata": {"labels": {self.label: value}}}
        return Action("patch", Target("v1", "Node", node.name),
                      f"label {self.label}={value}: {why}", before=before,
                      after=merge_patch(before, patch), patch=patch)

    def _secrets_namespace(self) -> str:
        if self.bgp.secrets:
            return self.bgp.secrets[0].namespace
        for body in self.snapshot.find("v1", "ConfigMap"):
            data = body.get("data") or {}
            if (body.get("metadata") or {}).get("name") == "cilium-config" and data.get(
                    "bgp-secrets-namespace"):
                return str(data["bgp-secrets-namespace"])
        return "kube-system"

    # ----------------------------------------------------------------- decommission

    def last_step(self) -> str:
        """What is left to do by hand for BGP once MetalLB is uninstalled."""
        names = ", ".join(c["metadata"]["name"] for c in self.bgp.cluster_configs)
        return (f" Then drop {self.label}={self.cilium_value} from the nodeSelector of the"
                f" CiliumBGPClusterConfig(s) {names} (Cilium keeps its sessions: every node"
                " already has the label), or label every Node that joins later: until then a"
                " new Node peers through nobody.")

    def decommission_actions(self) -> list[Action]:
        """Delete MetalLB's BGP objects: advertisements, peers, communities. A BGPPeer with a
        plain-text password stays (its backup would have to hold the password; it peers from
        no node, and goes with MetalLB's CRDs); BFDProfiles stay too (MetalLB's webhook checks
        their deletion, and its controller is stopped)."""
        actions = []
        kept: list[str] = []
        for kind in ("BGPAdvertisement", "BGPPeer", "Community"):
            for doc in self.snapshot.documents:
                body = doc.body
                if body.get("kind") != kind or not str(body.get("apiVersion", "")).startswith(
                        "metallb.io/"):
                    continue
                if doc.origin.startswith(tuple(self.snapshot.legacy_sources)):
                    continue
                metadata = body.get("metadata") or {}
                name = str(metadata.get("name"))
                namespace = str(metadata.get("namespace") or self.snapshot.metallb_namespace)
                if kind == "BGPPeer" and (body.get("spec") or {}).get("password"):
                    kept.append(name)
                    continue
                obj = creatable(body)
                obj["metadata"]["namespace"] = namespace
                if kind == "BGPPeer":
                    obj["apiVersion"] = "metallb.io/v1beta2"
                    obj = merge_patch(obj, self.prepared.get((namespace, name), {}))
                actions.append(Action(
                    "delete", Target(obj["apiVersion"], kind, name, namespace),
                    f"MetalLB's {kind} is no longer used", before=view(obj), body=obj))
        if kept:
            self.builder.findings.append(Finding(
                Severity.INFO, "decommission-keeps-bgppeer",
                f"BGPPeer {self.snapshot.metallb_namespace}/{', '.join(kept)}", "spec.password",
                "keeps its TCP MD5 password in plain text, which a backup in the cluster must"
                " not hold: decommission leaves it (it peers from no node, every node being"
                " labelled for Cilium) and it goes when MetalLB's CRDs are removed."))
        return actions


def _create_text(obj: Mapping[str, Any]) -> str:
    kind = obj.get("kind")
    if kind == "CiliumBGPClusterConfig":
        return "Cilium's BGP configuration (it selects no node until one is labelled)"
    if kind == "CiliumBGPPeerConfig":
        return "how Cilium peers with the router (transport, timers, password Secret)"
    if kind == "CiliumBGPAdvertisement":
        return "what Cilium advertises (Services of the pool, attributes)"
    return "per-node BGP settings (router ID, source address)"
