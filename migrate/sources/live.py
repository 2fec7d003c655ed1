"""Read a ClusterSnapshot from a live cluster through the official client.

The result is the same ``ClusterSnapshot`` the file reader builds (both go through
``build_snapshot``). Every kind is read with paginated LISTs, so the number of requests does not
grow with the number of Services beyond one per page. MetalLB objects are read from MetalLB's
own namespace only, as MetalLB itself does [M1]; BGPPeers at v1beta2, the storage version,
because v1beta1 needs MetalLB's conversion webhook [M1].
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from migrate.kube import Kube, KubeError, Obj
from migrate.model import metallb as mlb
from migrate.sources.files import SourceDocument
from migrate.sources.snapshot import ClusterSnapshot, build_snapshot

CILIUM_NAMESPACE = "kube-system"
METALLB_KINDS = [
    ("metallb.io/v1beta1", "IPAddressPool"),
    ("metallb.io/v1beta1", "L2Advertisement"),
    ("metallb.io/v1beta1", "BGPAdvertisement"),
    ("metallb.io/v1beta2", "BGPPeer"),
    ("metallb.io/v1beta1", "BFDProfile"),
    ("metallb.io/v1beta1", "Community"),
    ("metallb.io/v1beta1", "ServiceL2Status"),
    ("metallb.io/v1beta1", "AddressPool"),  # MetalLB 0.13 to 0.14.2 only
]
METALLB_SELECTORS = ("app.kubernetes.io/name=metallb", "app=metallb")


def _absent_ok(read: Callable[[], list[Obj]]) -> list[Obj]:
    """A list of a kind that may not be installed (404 → nothing)."""
    try:
        return read()
    except KubeError as error:
        if error.status == 404:
            return []
        raise


def _local_endpoints(kube: Kube, objects: list[Obj]) -> list[Obj]:
    """The EndpointSlices of the LoadBalancer Services with ``externalTrafficPolicy: Local``:
    over BGP they are advertised only from the nodes with a local endpoint, which the
    hand-over's order depends on (one LIST per such Service, by its service-name label)."""
    out: list[Obj] = []
    for obj in objects:
        spec = obj.get("spec") or {}
        if obj.get("kind") != "Service" or spec.get("type") != "LoadBalancer" or \
                spec.get("externalTrafficPolicy") != "Local":
            continue
        metadata = obj.get("metadata") or {}
        for item in _absent_ok(lambda m=metadata: kube.list(  # type: ignore[misc]
                "discovery.k8s.io/v1", "EndpointSlice", namespace=m.get("namespace"),
                label_selector=f"kubernetes.io/service-name={m.get('name')}")):
            item.setdefault("apiVersion", "discovery.k8s.io/v1")
            item.setdefault("kind", "EndpointSlice")
            out.append(item)
    return out


def find_metallb_namespace(kube: Kube) -> str:
    """MetalLB's namespace: where its controller runs, else where its pools are, else default."""
    for selector in METALLB_SELECTORS:
        deployments = kube.list("apps/v1", "Deployment", label_selector=selector)
        for deployment in deployments:
            return str(deployment["metadata"]["namespace"])
    pools = _absent_ok(lambda: kube.list("metallb.io/v1beta1", "IPAddressPool"))
    if pools:
        return str(pools[0]["metadata"]["namespace"])
    return mlb.DEFAULT_NAMESPACE


def read_live(kube: Kube, *, metallb_namespace: str | None = None,
              cilium_namespace: str = CILIUM_NAMESPACE) -> ClusterSnapshot:
    """Read everything the migration needs from a cluster into a validated snapshot."""
    namespace = metallb_namespace or find_metallb_namespace(kube)
    objects: list[Obj] = []
    for api_version, kind in METALLB_KINDS:
        objects.extend(_absent_ok(
            lambda v=api_version, k=kind: kube.list(v, k, namespace=namespace)  # type: ignore[misc]
        ))
    objects.extend(kube.list("v1", "ConfigMap", namespace=namespace))
    objects.extend(kube.list("apps/v1", "Deployment", namespace=namespace))
    objects.extend(kube.list("apps/v1", "DaemonSet", namespace=namespace))
    objects.extend(kube.list("v1", "Service"))
    objects.extend(kube.list("v1", "Node"))
    if cilium_namespace != namespace:
        objects.extend(kube.list("apps/v1", "Deployment", namespace=cilium_namespace))
        objects.extend(kube.list("apps/v1", "DaemonSet", namespace=cilium_namespace))
        config = kube.try_get("v1", "ConfigMap", "cilium-config", cilium_namespace)
        if config is not None:
            config.setdefault("apiVersion", "v1")
            config.setdefault("kind", "ConfigMap")
            objects.append(config)
    objects.extend(kube.list("coordination.k8s.io/v1", "Lease", namespace=cilium_namespace))
    # kube-proxy may run as static pods rather than a DaemonSet [C5]; Cilium's agents tell
    # which nodes run Cilium.
    for selector in ("component=kube-proxy", "k8s-app=kube-proxy", "k8s-app=cilium"):
        objects.extend(kube.list("v1", "Pod", namespace=cilium_namespace,
                                 label_selector=selector))
    for api_version, kind in (("kustomize.toolkit.fluxcd.io/v1", "Kustomization"),
                              ("helm.toolkit.fluxcd.io/v2", "HelmRelease"),
                              ("argoproj.io/v1alpha1", "Application")):
        objects.extend(_absent_ok(
            lambda v=api_version, k=kind: kube.list(v, k)  # type: ignore[misc]
        ))
    objects.extend(_absent_ok(lambda: kube.list(
        "admissionregistration.k8s.io/v1", "ValidatingWebhookConfiguration")))
    pool_versions = [
        v for v in kube.served_versions("cilium.io") if v in ("v2", "v2alpha1")
    ]
    for version in ("v2", "v2alpha1"):
        if version in pool_versions:
            objects.extend(_absent_ok(
                lambda v=version: kube.list(f"cilium.io/{v}",  # type: ignore[misc]
                                            "CiliumLoadBalancerIPPool")
            ))
            break
    if "v2alpha1" in pool_versions:
        objects.extend(_absent_ok(lambda: kube.list("cilium.io/v2alpha1",
                                                    "CiliumL2AnnouncementPolicy")))
    if "v2" in pool_versions:
        objects.extend(_absent_ok(lambda: kube.list("cilium.io/v2", "CiliumNode")))
    if any(o.get("kind") == "BGPAdvertisement" for o in objects):
        objects.extend(_local_endpoints(kube, objects))
    # Every object read is checked where it enters (build_snapshot), as objects read from files
    # are; a problem names its source "cluster" and the object.
    documents = [SourceDocument("cluster", obj) for obj in objects]
    facts: dict[str, Any] = {
        "source": "cluster",
        "cilium_api_versions": pool_versions,
        "cilium_namespace": cilium_namespace,
    }
    return build_snapshot(documents, metallb_namespace=namespace, facts=facts)

