"""The engine's side of the BGP hand-over (migrate/plan/bgp_stage.py has the why): the waits of
``bgp-handover``, and the undo of ``bgp-handover`` and ``bgp-prepare``.

Waits (each polled like the others, the lab's or the real clock):

- ``bgp-secrets``: every Secret Cilium's peers read a password from exists with a ``password``
  key (without it Cilium peers with an empty password, which the router refuses) [C3];
- ``bgp-metallb-released``: MetalLB's speakers on the nodes no longer peer. The API shows it,
  where it can: MetalLB 0.15+ deletes a node's ServiceBGPStatus objects when its speaker stops
  advertising (``internal/k8s/controllers/bgp_status_controller.go``: no peer left, the object
  goes), and frr-k8s (where its BGPSessionState kind is served) deletes a neighbour's
  BGPSessionState when FRR no longer has it (frr-k8s ``internal/controller/
  bgpsessionstate_controller.go``). Both can lead FRR's own reload, and MetalLB before 0.15
  leaves no trace at all: the wait then gives the speaker the plan's ``settle`` seconds more;
- ``bgp-cilium-established``: each node's CiliumBGPNodeConfig status (written by its agent,
  ``pkg/bgpv1/manager/reconcilerv2/crd_status.go``) shows every expected peer
  ``peeringState: established`` with at least the expected routes advertised per family.

Undo of ``bgp-handover`` goes back the way it came, batch by batch, newest first: Cilium stops on
a node (label ``none``; the operator deletes its CiliumBGPNodeConfig; then its agent's shutdown
settle), then MetalLB peers there again (the label restored as recorded; its ServiceBGPStatus
objects back where MetalLB writes them, and its reload settle), before the next batch. Then the
Cilium BGP objects the stage created are deleted, ClusterConfigs first. Undo of ``bgp-prepare``
restores every BGPPeer's ``nodeSelectors`` exactly as recorded; it runs after ``freeze-metallb``
is undone (newest stage first), when MetalLB's controller serves its webhook again.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any

from migrate.apply.waits import WaitOptions, wait_until
from migrate.errors import BlockedError
from migrate.kube import Kube
from migrate.plan.model import Plan, Target
from migrate.verify.api import _list_or_empty

if TYPE_CHECKING:
    from migrate.apply.rollback import _Undo

Obj = dict[str, Any]
Check = Callable[[], tuple[bool, str, int, int]]
WAIT_KINDS = ("bgp-secrets", "bgp-metallb-released", "bgp-cilium-established")
ESTABLISHED = "established"
STATUS_KIND = "ServiceBGPStatus"
SESSION_STATE = ("frrk8s.metallb.io/v1beta1", "BGPSessionState")
CILIUM_KINDS_LAST_FIRST = ("CiliumBGPClusterConfig", "CiliumBGPNodeConfigOverride",
                           "CiliumBGPPeerConfig", "CiliumBGPAdvertisement")
"""The order a rollback deletes Cilium's BGP objects in: what selects nodes first."""


def _context(plan: Plan) -> Obj:
    context = plan.context.get("bgp")
    if not isinstance(context, dict):
        raise BlockedError("the plan has a BGP wait but no BGP context (context.bgp): make a"
                           " new plan with migrate plan")
    return context


def wait_check(kube: Kube, plan: Plan, spec: Mapping[str, Any], options: WaitOptions) -> Check:
    """The check of one of the BGP waits (``WAIT_KINDS``)."""
    kind = spec.get("for")
    if kind == "bgp-secrets":
        return secrets_check(kube, list(spec.get("secrets") or []))
    if kind == "bgp-metallb-released":
        return metallb_released_check(kube, plan, list(spec.get("nodes") or []),
                                      list(spec.get("peers") or []),
                                      settle=float(spec.get("settle") or 0), options=options)
    if kind == "bgp-cilium-established":
        return cilium_established_check(kube, plan, list(spec.get("nodes") or []),
                                        dict(spec.get("routes") or {}))
    raise BlockedError(f"the plan has a wait this version does not know: {kind}")


# --------------------------------------------------------------------------- the waits


def secrets_check(kube: Kube, secrets: Collection[str]) -> Check:
    """Every ``namespace/name`` Secret exists and has a ``password`` key (its value is never
    read into anything the tool prints or records)."""

    def check() -> tuple[bool, str, int, int]:
        missing = []
        for ref in sorted(secrets):
            namespace, _, name = ref.partition("/")
            secret = kube.try_get("v1", "Secret", name, namespace)
            data = {**((secret or {}).get("data") or {}), **((secret or {}).get("stringData")
                                                             or {})}
            if secret is None or "password" not in data:
                missing.append(ref + ("" if secret is None else " (no key password)"))
        if missing:
            return (False, "missing: " + ", ".join(missing) + ". Create each in Cilium's"
                    " bgp-secrets-namespace with the router's password (the translation's"
                    " bgp-password-* findings give the command)", len(secrets) - len(missing),
                    len(secrets))
        return True, "present", len(secrets), len(secrets)

    return check


def _status_nodes(kube: Kube, plan: Plan) -> dict[str, set[str]]:
    """node -> the Services MetalLB's speaker there advertises to some peer (ServiceBGPStatus)."""
    out: dict[str, set[str]] = {}
    for obj in _list_or_empty(kube, "metallb.io/v1beta1", STATUS_KIND, plan.metallb_namespace):
        status = obj.get("status") or {}
        labels = (obj.get("metadata") or {}).get("labels") or {}
        node = status.get("node") or labels.get("metallb.io/node")
        service = status.get("serviceName") or labels.get("metallb.io/service-name")
        namespace = status.get("serviceNamespace") or labels.get("metallb.io/service-namespace")
        if node and status.get("peers"):
            out.setdefault(str(node), set()).add(f"{namespace}/{service}")
    return out


def _frr_sessions(kube: Kube, nodes: Collection[str], peers: Collection[str]) -> list[str]:
    """frr-k8s' Established sessions from ``nodes`` to MetalLB's ``peers`` (none where the kind
    is not served)."""
    found = []
    for obj in _list_or_empty(kube, *SESSION_STATE):
        labels = (obj.get("metadata") or {}).get("labels") or {}
        status = obj.get("status") or {}
        node = status.get("node") or labels.get("frrk8s.metallb.io/node")
        peer = status.get("peer") or labels.get("frrk8s.metallb.io/peer")
        if node in nodes and peer in peers and str(status.get("bgpStatus")).lower() == \
                ESTABLISHED:
            found.append(f"{node} -> {peer}")
    return sorted(found)


def metallb_released_check(kube: Kube, plan: Plan, nodes: Collection[str],
                           peers: Collection[str], *, settle: float,
                           options: WaitOptions) -> Check:
    """MetalLB's speakers on ``nodes`` no longer peer: no ServiceBGPStatus of theirs and no
    Established frr-k8s session to MetalLB's ``peers``, then ``settle`` seconds."""
    wanted = set(nodes)
    cleared: list[float] = []

    def check() -> tuple[bool, str, int, int]:
        advertising = _status_nodes(kube, plan)
        still = [f"{n} (ServiceBGPStatus of {', '.join(sorted(advertising[n])[:3])})"
                 for n in sorted(wanted & set(advertising))]
        still += [f"{s} Established (frr-k8s)" for s in _frr_sessions(kube, wanted, peers)]
        if still:
            cleared.clear()
            return (False, "MetalLB still peers from " + "; ".join(still[:5]),
                    len(wanted) - len(still), len(wanted))
        now = options.clock()
        if not cleared:
            cleared.append(now)
        waited = now - cleared[0]
        budget = settle * options.timeout_scale
        if waited < budget:
            return (False, f"{waited:.1f}s of {budget:.1f}s for MetalLB's speaker to close its"
                    " sessions (its configuration reload leaves no trace in the API)",
                    len(wanted), len(wanted))
        return True, "MetalLB peers from none of them", len(wanted), len(wanted)

    return check


def node_config_peers(node_config: Mapping[str, Any] | None) -> dict[str, Mapping[str, Any]]:
    """Peer name -> its status in a CiliumBGPNodeConfig (every instance)."""
    out: dict[str, Mapping[str, Any]] = {}
    for instance in ((node_config or {}).get("status") or {}).get("bgpInstances") or []:
        for peer in instance.get("peers") or []:
            if isinstance(peer, dict) and peer.get("name"):
                out[str(peer["name"])] = peer
    return out


def peer_problems(node: str, node_config: Mapping[str, Any] | None,
                  expected: Mapping[str, Mapping[str, int]]) -> list[str]:
    """What keeps ``node``'s Cilium sessions from being Established with their routes."""
    if not expected:
        return []
    if node_config is None:
        return [f"{node}: no CiliumBGPNodeConfig yet (Cilium's operator has not selected its"
                " CiliumNode)"]
    statuses = node_config_peers(node_config)
    problems = []
    for peer, families in sorted(expected.items()):
        status = statuses.get(peer)
        state = str((status or {}).get("peeringState") or "")
        if state != ESTABLISHED:
            problems.append(f"{node} -> {peer}: {state or 'no session state yet'}")
            continue
        counts = {str(c.get("afi")): int(c.get("advertised") or 0)
                  for c in (status or {}).get("routeCount") or [] if isinstance(c, dict)}
        for family, count in sorted(families.items()):
            if counts.get(family, 0) < count:
                problems.append(f"{node} -> {peer}: {counts.get(family, 0)} of {count} {family}"
                                " routes advertised")
    return problems


def cilium_established_check(kube: Kube, plan: Plan, nodes: Collection[str],
                             routes: Mapping[str, Mapping[str, Mapping[str, int]]]) -> Check:
    """Every node's Cilium sessions are Established and advertise the expected routes."""
    api_version = str(_context(plan).get("apiVersion") or "cilium.io/v2")

    def check() -> tuple[bool, str, int, int]:
        problems = []
        ready = 0
        for node in sorted(nodes):
            node_config = kube.try_get(api_version, "CiliumBGPNodeConfig", node)
            found = peer_problems(node, node_config, routes.get(node) or {})
            problems += found
            ready += not found
        if problems:
            return False, "; ".join(problems[:5]), ready, len(nodes)
        return True, "Established", ready, len(nodes)

    return check


def cilium_released_check(kube: Kube, plan: Plan, nodes: Collection[str], *, settle: float,
                          options: WaitOptions) -> Check:
    """No CiliumBGPNodeConfig is left for ``nodes`` (the operator let go of them), then
    ``settle`` seconds for their agents to close the sessions."""
    api_version = str(_context(plan).get("apiVersion") or "cilium.io/v2")
    gone: list[float] = []

    def check() -> tuple[bool, str, int, int]:
        left = [n for n in sorted(nodes)
                if kube.try_get(api_version, "CiliumBGPNodeConfig", n) is not None]
        if left:
            gone.clear()
            return (False, f"CiliumBGPNodeConfig still there for {', '.join(left)}",
                    len(nodes) - len(left), len(nodes))
        now = options.clock()
        if not gone:
            gone.append(now)
        if now - gone[0] < settle * options.timeout_scale:
            return False, "waiting for the agents to close their sessions", len(nodes), len(
                nodes)
        return True, "Cilium peers from none of them", len(nodes), len(nodes)

    return check


def metallb_peering_check(kube: Kube, plan: Plan, nodes: Collection[str], *, settle: float,
                          options: WaitOptions) -> Check:
    """MetalLB's speakers on ``nodes`` peer again: where MetalLB writes ServiceBGPStatus, one
    for every Service the plan says each node advertises; then ``settle`` seconds (its reload
    and the connection leave no other trace in the API)."""
    context = _context(plan)
    with_status = bool(context.get("metallbStatus"))
    expected = {node: {key for key, svc in (context.get("services") or {}).items()
                       if node in (svc.get("nodes") or ())} for node in nodes}
    since: list[float] = []

    def check() -> tuple[bool, str, int, int]:
        if with_status:
            advertising = _status_nodes(kube, plan)
            missing = [f"{n} ({', '.join(sorted(expected[n] - advertising.get(n, set()))[:3])})"
                       for n in sorted(nodes) if expected[n] - advertising.get(n, set())]
            if missing:
                since.clear()
                return (False, "no ServiceBGPStatus yet from " + "; ".join(missing),
                        len(nodes) - len(missing), len(nodes))
        now = options.clock()
        if not since:
            since.append(now)
        if now - since[0] < settle * options.timeout_scale:
            return (False, f"{now - since[0]:.1f}s of {settle * options.timeout_scale:.1f}s"
                    " for MetalLB's speakers to peer again", len(nodes), len(nodes))
        return True, "MetalLB peers again", len(nodes), len(nodes)

    return check


# --------------------------------------------------------------------------- the undo


def _objects(backup: Obj) -> list[tuple[Target, Obj | None]]:
    return [(Target.from_dict(item["target"]), item.get("object"))
            for item in backup.get("objects") or []]


def _node_label(kube: Kube, node: str, label: str) -> tuple[bool, str | None]:
    """(the Node exists, its value of ``label``)."""
    body = kube.try_get("v1", "Node", node)
    if body is None:
        return False, None
    return True, ((body.get("metadata") or {}).get("labels") or {}).get(label)


def _set_label(undo: _Undo, node: str, label: str, value: str | None, why: str) -> None:
    undo.step(f"label Node {node} {label}={value}: {why}" if value is not None
              else f"remove label {label} from Node {node}: {why}")
    undo.kube.patch("v1", "Node", node, {"metadata": {"labels": {label: value}}},
                    dry_run=undo.dry)


def undo_handover(undo: _Undo, backup: Obj) -> None:
    """Undo ``bgp-handover``: batch by batch, newest first, Cilium stops, then MetalLB peers
    again; then the Cilium BGP objects the stage created go."""
    plan = undo.plan
    context = _context(plan)
    label = str(context["label"])
    parked = str(context.get("parked") or "none")
    cilium = str(context.get("cilium") or "cilium")
    objects = _objects(backup)
    recorded = {t.name: ((o or {}).get("metadata") or {}).get("labels", {}).get(label)
                for t, o in objects if t.kind == "Node" and o is not None}
    waits, reporter = undo.options.waits, undo.reporter
    for batch in reversed([list(b) for b in context.get("batches") or []]):
        batch = [n for n in batch if n in recorded]
        current = {n: _node_label(undo.kube, n, label) for n in batch}
        present = [n for n in batch if current[n][0]]
        on_cilium = [n for n in present if current[n][1] == cilium]
        for node in on_cilium:
            _set_label(undo, node, label, parked, "Cilium's agent on it stops peering")
        if on_cilium and not undo.dry:
            wait_until(cilium_released_check(undo.kube, plan, on_cilium,
                                             settle=float(context.get("ciliumSettle") or 0),
                                             options=waits),
                       f"Cilium no longer peers from {', '.join(on_cilium)}", 120, waits,
                       reporter)
        back = [n for n in present if current[n][1] != recorded[n]]
        for node in back:
            _set_label(undo, node, label, recorded[node], "MetalLB's speaker on it peers again")
        if back and not undo.dry:
            from migrate.plan.bgp_stage import METALLB_PEERS_AGAIN

            settle = float(context.get("metallbSettle") or 0) if context.get(
                "metallbStatus") else METALLB_PEERS_AGAIN
            wait_until(metallb_peering_check(undo.kube, plan, back, settle=settle,
                                             options=waits),
                       f"MetalLB peers again from {', '.join(back)}", 120, waits, reporter)
    created = [t for t, o in objects if o is None and t.kind in CILIUM_KINDS_LAST_FIRST]
    for kind in CILIUM_KINDS_LAST_FIRST:
        for target in created:
            if target.kind == kind:
                undo.delete(target)


def undo_prepare(undo: _Undo, backup: Obj) -> None:
    """Undo ``bgp-prepare``: every BGPPeer's ``nodeSelectors`` exactly as recorded."""
    for target, original in _objects(backup):
        if target.kind != "BGPPeer" or original is None:
            continue
        current = undo.kube.try_get(target.api_version, target.kind, target.name,
                                    target.namespace)
        if current is None:
            continue
        want = (original.get("spec") or {}).get("nodeSelectors")
        if (current.get("spec") or {}).get("nodeSelectors") == want:
            continue
        undo.step(f"restore the node selectors of {target.key}")
        undo.kube.patch(target.api_version, target.kind, target.name,
                        {"spec": {"nodeSelectors": want}}, namespace=target.namespace,
                        dry_run=undo.dry)

