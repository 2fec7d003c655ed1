"""The parts of each object that a plan depends on: used for diffs and for staleness checks.

A view leaves out what the API server and controllers own (resourceVersion, managedFields,
timestamps, status conditions), so a plan is stale only when something that matters changed.
"""

from __future__ import annotations

import copy
from typing import Any

Obj = dict[str, Any]
IGNORED_ANNOTATIONS = (
    "kubectl.kubernetes.io/last-applied-configuration",
    "metallb.io/ip-allocated-from-pool",
    "metallb.universe.tf/ip-allocated-from-pool",
    "deployment.kubernetes.io/revision",
)
# Spec fields the API server fills from the CRD's ``default:`` when a writer leaves them out.
# A view drops them when they hold that default: a pool the tool created without ``disabled``
# reads back with ``disabled: false`` [C1], a MetalLB pool read from files may lack what the
# live one shows [M10]; neither is a change. (Comparing them as different made a re-run of a
# half-done ipam-handover refuse every pool it had created as "another content".)
TOOL_LABEL_PREFIX = "lbmigrate.io/"
"""The prefix of the labels the tool itself writes (a Node's hand-over label)."""
HIDDEN = "(hidden)"
"""What a view shows for a secret value (a BGPPeer's plain-text ``spec.password``)."""
SERVER_DEFAULTS: dict[str, dict[str, Any]] = {
    "CiliumLoadBalancerIPPool": {"disabled": False},
    "IPAddressPool": {"autoAssign": True, "avoidBuggyIPs": False},
    "BGPPeer": {"peerPort": 179, "disableMP": False, "dualStackAddressFamily": False},
    "BGPAdvertisement": {"aggregationLength": 32, "aggregationLengthV6": 128},
}


NESTED_DEFAULTS: dict[str, tuple[tuple[str, Any], ...]] = {
    # Cilium's BGP CRDs (pkg/k8s/apis/cilium.io/v2/bgp_peer_types.go, bgp_cluster_types.go):
    # ``[]`` walks every item of a list.
    "CiliumBGPPeerConfig": (
        ("ebgpMultihop", 1), ("gracefulRestart.restartTimeSeconds", 120),
        ("timers.connectRetryTimeSeconds", 120), ("timers.holdTimeSeconds", 90),
        ("timers.keepAliveTimeSeconds", 30), ("transport.peerPort", 179)),
    "CiliumBGPClusterConfig": (
        ("bgpInstances[].peers[].peerASN", 0),
        ("bgpInstances[].peers[].peerConfigRef.group", "cilium.io"),
        ("bgpInstances[].peers[].peerConfigRef.kind", "CiliumBGPPeerConfig")),
}
"""Defaults the API server fills deeper in a spec, dropped from a view where they hold."""


def _drop_default(node: Any, parts: list[str], default: Any) -> None:
    if not parts or not isinstance(node, dict):
        return
    head, rest = parts[0], parts[1:]
    if head.endswith("[]"):
        for item in node.get(head[:-2]) or []:
            _drop_default(item, rest, default)
    elif not rest:
        if head in node and node[head] == default:
            del node[head]
    else:
        _drop_default(node.get(head), rest, default)


def _meta(obj: Obj) -> Obj:
    metadata = obj.get("metadata") or {}
    annotations = {
        k: v for k, v in (metadata.get("annotations") or {}).items()
        if k not in IGNORED_ANNOTATIONS
    }
    return {"labels": dict(metadata.get("labels") or {}), "annotations": annotations}


def ingress_ips(obj: Obj) -> list[str]:
    """The IPs in a Service's status.loadBalancer.ingress, in order."""
    ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
    return [str(item["ip"]) for item in ingress if isinstance(item, dict) and item.get("ip")]


def view(obj: Obj | None) -> Obj | None:
    """The part of an object a plan depends on (None for an absent object)."""
    if obj is None:
        return None
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind == "Service":
        return {
            "metadata": _meta(obj),
            "spec": {k: spec.get(k) for k in ("type", "loadBalancerIP", "loadBalancerClass",
                                               "externalTrafficPolicy") if spec.get(k)},
            "ips": ingress_ips(obj),
        }
    if kind == "Deployment":
        return {"spec": {"replicas": spec.get("replicas", 1)}}
    if kind == "DaemonSet":
        template = (spec.get("template") or {}).get("spec") or {}
        return {"spec": {"template": {"spec": {
            "nodeSelector": dict(template.get("nodeSelector") or {})}}}}
    if kind == "ValidatingWebhookConfiguration":
        return {"webhooks": [
            {"name": w.get("name"), "failurePolicy": w.get("failurePolicy", "Fail")}
            for w in obj.get("webhooks") or []
        ]}
    if kind == "ConfigMap":
        return {"metadata": _meta(obj), "data": dict(obj.get("data") or {})}
    if kind == "Node":
        # Kubelets and CNIs write a Node's annotations, status and most labels all the time:
        # a plan depends on the labels the tool writes only.
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return {"metadata": {"labels": {k: v for k, v in labels.items()
                                        if k.startswith(TOOL_LABEL_PREFIX)}}}
    if kind == "BGPPeer" and "password" in spec:
        # A plain-text password never goes into a plan (nor, see backup_object, a backup).
        spec = {**spec, "password": HIDDEN}
    defaults = SERVER_DEFAULTS.get(str(kind), {})
    out_spec = {k: copy.deepcopy(v) for k, v in spec.items()
                if k not in defaults or defaults[k] != v}
    for path, default in NESTED_DEFAULTS.get(str(kind), ()):
        _drop_default(out_spec, path.split("."), default)
    return {"metadata": _meta(obj), "spec": out_spec}


def creatable(obj: Obj) -> Obj:
    """An object body fit to create again: server-populated fields and status removed."""
    out = copy.deepcopy(obj)
    out.pop("status", None)
    metadata = out.get("metadata") or {}
    for key in ("resourceVersion", "uid", "creationTimestamp", "generation", "managedFields",
                "selfLink", "deletionTimestamp", "deletionGracePeriodSeconds", "generateName"):
        metadata.pop(key, None)
    annotations = metadata.get("annotations")
    if annotations:
        annotations.pop("kubectl.kubernetes.io/last-applied-configuration", None)
        if not annotations:
            metadata.pop("annotations")
    return out



def backup_object(obj: Obj | None) -> Obj | None:
    """What a backup records of an object before a stage changes it: all of it, except a
    BGPPeer's plain-text password (the stages never change it, and a backup in the cluster must
    not hold it) and a Node's bulk (only its labels are ever restored)."""
    if obj is None:
        return None
    kind = obj.get("kind")
    if kind == "BGPPeer" and "password" in (obj.get("spec") or {}):
        out = copy.deepcopy(obj)
        out["spec"]["password"] = HIDDEN
        return out
    if kind == "Node":
        metadata = obj.get("metadata") or {}
        return {"apiVersion": obj.get("apiVersion", "v1"), "kind": "Node",
                "metadata": {"name": metadata.get("name"),
                             "labels": dict(metadata.get("labels") or {})}}
    return obj
