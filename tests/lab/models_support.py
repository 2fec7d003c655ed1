"""Small builders for the controller-model tests: a store on a manual clock loaded from the YAML
fixtures in ``fixtures/models``, and short constructors for Services and pools.

``start`` builds the models with the instant timing (every reaction in the tick of its cause);
``start_realistic`` with the asynchronous one on the same manual clock (virtual time: the test
moves it with ``lab.advance``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from migrate.lab.models import Controllers, build_controllers
from migrate.lab.store import Clock, Store

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models"

Obj = dict[str, Any]


def load(store: Store, *names: str) -> None:
    """Create every document of ``fixtures/models/<name>.yaml`` in the store."""
    for name in names:
        for doc in yaml.safe_load_all((FIXTURES / f"{name}.yaml").read_text()):
            if doc:
                store.create(doc)


def new_store(*fixtures: str) -> Store:
    """A store on a manual clock, loaded with the named fixtures."""
    store = Store(Clock.manual())
    load(store, *fixtures)
    return store


def start(store: Store, **switches: Any) -> Controllers:
    """Build the controllers over ``store`` (all on unless switched off), instant timing."""
    return build_controllers(store, **switches)


def start_realistic(store: Store, *, seed: int = 0, **switches: Any) -> Controllers:
    """Build the controllers with the realistic timing, delays drawn from ``seed``."""
    return build_controllers(store, timing="realistic", seed=seed, **switches)


def deployment(name: str, namespace: str, labels: dict[str, str], *, replicas: int = 1,
               image: str = "", grace: int | None = None, args: tuple[str, ...] = (),
               env: dict[str, str] | None = None, status: Obj | None = None) -> Obj:
    """A Deployment with a pod template (one container)."""
    container: Obj = {"name": name, "image": image or f"example/{name}"}
    if args:
        container["args"] = list(args)
    if env:
        container["env"] = [{"name": k, "value": v} for k, v in env.items()]
    pod_spec: Obj = {"containers": [container]}
    if grace is not None:
        pod_spec["terminationGracePeriodSeconds"] = grace
    body: Obj = {"apiVersion": "apps/v1", "kind": "Deployment",
                 "metadata": {"name": name, "namespace": namespace, "labels": labels},
                 "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                          "template": {"metadata": {"labels": labels}, "spec": pod_spec}}}
    if status is not None:
        body["status"] = status
    return body


def daemonset(name: str, namespace: str, labels: dict[str, str], *, image: str = "",
              grace: int | None = None, args: tuple[str, ...] = (),
              node_selector: dict[str, str] | None = None) -> Obj:
    """A DaemonSet with a pod template (one container)."""
    body = deployment(name, namespace, labels, image=image, grace=grace, args=args)
    body["kind"] = "DaemonSet"
    del body["spec"]["replicas"]
    if node_selector:
        body["spec"]["template"]["spec"]["nodeSelector"] = node_selector
    return body


def replace_workload(store: Store, body: Obj) -> None:
    """Put ``body`` in place of the stored workload of the same name."""
    current = store.get("apps", body["kind"], body["metadata"]["name"],
                        body["metadata"]["namespace"])
    current["spec"] = body["spec"]
    store.update(current)


def pods(store: Store, namespace: str, **labels: str) -> list[Obj]:
    """The pods of a namespace carrying ``labels``."""
    return [p for p in store.list("", "Pod", namespace)
            if all((p["metadata"].get("labels") or {}).get(k) == v for k, v in labels.items())]


def service(name: str, *, namespace: str = "apps", ips: tuple[str, ...] = (),
            labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None,
            ports: tuple[int, ...] = (80,), lb_class: str | None = None, **spec: Any) -> Obj:
    """A LoadBalancer Service, with ``ips`` already in its status when given."""
    body: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {},
                     "annotations": annotations or {}},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"name": f"p{p}", "port": p, "protocol": "TCP"} for p in ports],
                 **spec},
        "status": {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips]} if ips else {}},
    }
    if lb_class is not None:
        body["spec"]["loadBalancerClass"] = lb_class
    return body


def metallb_pool(name: str, *addresses: str, **spec: Any) -> Obj:
    """An IPAddressPool in metallb-system."""
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": {"addresses": list(addresses), **spec}}


def l2_advertisement(name: str, **spec: Any) -> Obj:
    """An L2Advertisement in metallb-system."""
    return {"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
            "metadata": {"name": name, "namespace": "metallb-system"}, "spec": spec}


def cilium_pool(name: str, *cidrs: str, selector: Obj | None = None, **spec: Any) -> Obj:
    """A cilium.io/v2 CiliumLoadBalancerIPPool with one cidr block per argument."""
    body: Obj = {"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
                 "metadata": {"name": name},
                 "spec": {"blocks": [{"cidr": c} for c in cidrs], **spec}}
    if selector is not None:
        body["spec"]["serviceSelector"] = selector
    return body


def l2_policy(name: str, **spec: Any) -> Obj:
    """A CiliumL2AnnouncementPolicy announcing LoadBalancer IPs."""
    return {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
            "metadata": {"name": name}, "spec": {"loadBalancerIPs": True, **spec}}


def ips(store: Store, name: str, namespace: str = "apps") -> list[str]:
    """The ingress IPs of a Service as stored."""
    svc = store.get("", "Service", name, namespace)
    return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {})
            .get("ingress") or []]


def condition(obj: Obj, ctype: str) -> Obj | None:
    """One status condition of an object, or None."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return dict(cond)
    return None


def scale(store: Store, namespace: str, name: str, replicas: int) -> None:
    """Set a Deployment's replicas (as ``kubectl scale`` does)."""
    deployment = store.get("apps", "Deployment", name, namespace)
    deployment["spec"]["replicas"] = replicas
    store.update(deployment)


def patch_metadata(store: Store, group: str, kind: str, name: str, namespace: str | None,
                   *, labels: dict[str, str] | None = None,
                   annotations: dict[str, str] | None = None) -> None:
    """Merge labels/annotations into an object."""
    obj = store.get(group, kind, name, namespace)
    meta = obj["metadata"]
    if labels:
        meta["labels"] = {**(meta.get("labels") or {}), **labels}
    if annotations:
        meta["annotations"] = {**(meta.get("annotations") or {}), **annotations}
    store.update(obj)


def writes_by(store: Store, manager: str) -> list[tuple[str, tuple[str, ...], tuple[str, ...]]]:
    """Status writes that changed ingress IPs, by one field manager: (service, before, after)."""
    return [(f"{w.namespace}/{w.name}", w.before, w.after) for w in store.status_writes
            if w.manager == manager and w.before != w.after]
