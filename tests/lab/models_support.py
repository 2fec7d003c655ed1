"""Small builders for the controller-model tests: a store on a manual clock loaded from the YAML
fixtures in ``fixtures/models``, and short constructors for Services and pools."""

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


def start(store: Store, **switches: bool) -> Controllers:
    """Build the controllers over ``store`` (all on unless switched off)."""
    return build_controllers(store, **switches)


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
