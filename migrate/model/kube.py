"""Typed views of the core Kubernetes objects the migration reads: Services and Nodes."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from migrate.errors import InputError
from migrate.model.addresses import IPAddress
from migrate.model.metallb import ObjectRef

METALLB_PREFIXES = ("metallb.io/", "metallb.universe.tf/")


def metallb_annotation(annotations: dict[str, str], name: str) -> tuple[str | None, str | None]:
    """Value and key of a MetalLB annotation: the new prefix wins over the legacy one [M6]."""
    for prefix in METALLB_PREFIXES:
        key = prefix + name
        if key in annotations:
            return annotations[key], key
    return None, None


@dataclass(frozen=True)
class Service:
    """A Service as the migration sees it."""

    ref: ObjectRef
    body: dict[str, Any]
    labels: dict[str, str]
    annotations: dict[str, str]
    type: str
    load_balancer_class: str | None
    load_balancer_ip: str | None
    ingress_ips: tuple[str, ...]
    external_traffic_policy: str
    selector: dict[str, str]
    ports: tuple[tuple[str, int], ...]
    ip_families: tuple[str, ...]
    ip_family_policy: str | None

    @property
    def namespace(self) -> str:
        return self.ref.namespace or "default"

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def is_load_balancer(self) -> bool:
        return self.type == "LoadBalancer"

    def metallb(self, name: str) -> str | None:
        """A MetalLB annotation's value (either prefix)."""
        return metallb_annotation(self.annotations, name)[0]

    def _ip(self, text: str, field: str) -> IPAddress:
        try:
            return ipaddress.ip_address(text.strip())
        except ValueError:
            raise InputError(
                f"{text!r} is not an IP address",
                source=self.ref.origin,
                obj=str(self.ref),
                field=field,
            ) from None

    def requested_ips(self) -> tuple[IPAddress, ...]:
        """IPs requested from MetalLB: the loadBalancerIPs annotation or spec.loadBalancerIP."""
        value, key = metallb_annotation(self.annotations, "loadBalancerIPs")
        out: list[IPAddress] = []
        if value:
            for index, part in enumerate(p.strip() for p in value.split(",")):
                if not part:
                    continue
                out.append(self._ip(part, f"metadata.annotations[{key}][{index}]"))
        if self.load_balancer_ip:
            ip = self._ip(self.load_balancer_ip, "spec.loadBalancerIP")
            if ip not in out:
                out.append(ip)
        return tuple(out)

    def current_ips(self) -> tuple[IPAddress, ...]:
        """The IPs the Service holds now (status) or, without a status, the ones it asks for."""
        if self.ingress_ips:
            return tuple(
                self._ip(text, f"status.loadBalancer.ingress[{index}].ip")
                for index, text in enumerate(self.ingress_ips)
            )
        return self.requested_ips()


def parse_service(ref: ObjectRef, body: dict[str, Any]) -> Service:
    """Read the fields of a Service that matter to the migration (its structure was checked
    where it was read, ``migrate/sources/validate.py``)."""
    metadata = body["metadata"]
    spec = body.get("spec") or {}
    status = body.get("status") or {}
    ingress = (status.get("loadBalancer") or {}).get("ingress") or []
    return Service(
        ref=ref,
        body=body,
        labels=dict(metadata.get("labels") or {}),
        annotations=dict(metadata.get("annotations") or {}),
        type=spec.get("type") or "ClusterIP",
        load_balancer_class=spec.get("loadBalancerClass"),
        load_balancer_ip=spec.get("loadBalancerIP") or None,
        ingress_ips=tuple(item["ip"] for item in ingress if item.get("ip")),
        external_traffic_policy=spec.get("externalTrafficPolicy") or "Cluster",
        selector=dict(spec.get("selector") or {}),
        ports=tuple((port.get("protocol") or "TCP", port["port"])
                    for port in spec.get("ports") or []),
        ip_families=tuple(spec.get("ipFamilies") or ()),
        ip_family_policy=spec.get("ipFamilyPolicy"),
    )


@dataclass(frozen=True)
class Node:
    """A Node: its name, labels and addresses."""

    name: str
    labels: dict[str, str]
    internal_ips: tuple[str, ...]
    os_image: str | None


def parse_node(body: dict[str, Any]) -> Node:
    """Read a Node object (its structure was checked where it was read)."""
    metadata = body["metadata"]
    status = body.get("status") or {}
    return Node(
        name=metadata["name"],
        labels=dict(metadata.get("labels") or {}),
        internal_ips=tuple(
            a["address"] for a in status.get("addresses") or []
            if a.get("type") == "InternalIP" and a.get("address")
        ),
        os_image=(status.get("nodeInfo") or {}).get("osImage"),
    )
