"""What preflight needs to know of a cluster, read from the raw objects of a ClusterSnapshot.

Pure functions: the same snapshot gives the same inventory, whether it was read from files or,
later, from a live cluster. Detection rules follow [C5] (Cilium, kube-proxy) and [M9] (MetalLB).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from migrate.model.addresses import IPAddress
from migrate.model.kube import Node, Service
from migrate.model.metallb import L2Advertisement
from migrate.model.selectors import matches
from migrate.sources.snapshot import ClusterSnapshot

Body = dict[str, Any]
Version = tuple[int, int, int]

EXCLUDE_LB_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
CILIUM_CLASSES = ("io.cilium/l2-announcer", "io.cilium/bgp-control-plane", "io.cilium/node")
_VERSION = re.compile(r"^v?(\d+)\.(\d+)(?:\.(\d+))?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0,
                   "h": 3600.0}


# -- small readers over raw objects ----------------------------------------------------------
def metadata(body: Body) -> Body:
    value = body.get("metadata")
    return value if isinstance(value, dict) else {}


def name_of(body: Body) -> str:
    return str(metadata(body).get("name") or "")


def namespace_of(body: Body) -> str | None:
    value = metadata(body).get("namespace")
    return str(value) if value else None


def labels_of(body: Body) -> dict[str, str]:
    value = metadata(body).get("labels")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def annotations_of(body: Body) -> dict[str, str]:
    value = metadata(body).get("annotations")
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def describe(body: Body) -> str:
    """``Kind namespace/name`` (or ``Kind name`` when cluster-scoped)."""
    namespace = namespace_of(body)
    where = f"{namespace}/{name_of(body)}" if namespace else name_of(body)
    return f"{body.get('kind')} {where}"


def containers(body: Body) -> list[Body]:
    """The containers of a Pod, or of the pod template of a workload."""
    spec = body.get("spec")
    if not isinstance(spec, dict):
        return []
    if body.get("kind") != "Pod":
        template = spec.get("template")
        pod_spec = template.get("spec") if isinstance(template, dict) else None
        spec = pod_spec if isinstance(pod_spec, dict) else {}
    found = spec.get("containers")
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def container_args(container: Body) -> list[str]:
    """Command and args of a container, as one list of strings."""
    out: list[str] = []
    for key in ("command", "args"):
        value = container.get(key)
        if isinstance(value, list):
            out.extend(str(v) for v in value)
    return out


def flag_value(args: Iterable[str], flag: str) -> str | None:
    """The value of ``--flag=value`` or ``--flag value`` (also with one dash), if given."""
    items = list(args)
    names = {f"--{flag}", f"-{flag}"}
    for index, arg in enumerate(items):
        name, eq, value = arg.partition("=")
        if name in names:
            if eq:
                return value
            if index + 1 < len(items):
                return items[index + 1]
    return None


def container_env(container: Body, name: str) -> str | None:
    """The literal value of an environment variable of a container, if set."""
    for item in container.get("env") or []:
        if isinstance(item, dict) and item.get("name") == name and "value" in item:
            return str(item["value"])
    return None


def image_tag(image: str) -> str | None:
    """The tag of an image reference (``repo:tag@sha256:…`` → ``tag``), if it has one."""
    reference = image.split("@", 1)[0]
    last = reference.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


def parse_version(text: str | None) -> Version | None:
    """``v1.18.2`` / ``1.18`` / ``1.18.0-pre.3`` → (1, 18, 2) / (1, 18, 0) / (1, 18, 0)."""
    if not text:
        return None
    match = _VERSION.match(text.strip())
    if match is None:
        return None
    return int(match[1]), int(match[2]), int(match[3] or 0)


def version_text(version: Version) -> str:
    return ".".join(str(part) for part in version)


def go_duration_seconds(text: str | None) -> float | None:
    """A Go duration (``5s``, ``1m30s``, ``500ms``) in seconds; None when absent or invalid."""
    if text is None:
        return None
    value = text.strip()
    if not value:
        return None
    parts = _DURATION_PART.findall(value)
    if not parts or "".join(number + unit for number, unit in parts) != value:
        return None
    return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)


def _apps(snapshot: ClusterSnapshot, kind: str) -> list[Body]:
    return snapshot.find("apps/", kind)


# -- Cilium [C5] -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CiliumInstall:
    """Cilium's agent, operator, configuration and version as found in the snapshot."""

    agent: Body | None
    operator: Body | None
    config: dict[str, str] | None
    config_body: Body | None
    config_obj: str
    namespace: str
    version: Version | None
    version_source: str | None
    image: str | None
    operator_version: Version | None = None
    operator_version_source: str | None = None

    def setting(self, key: str) -> str | None:
        """A cilium-config value, stripped (None when the key or the ConfigMap is absent)."""
        if self.config is None or key not in self.config:
            return None
        return self.config[key].strip()


def _is_cilium_agent(body: Body) -> bool:
    labels = labels_of(body)
    if labels.get("k8s-app") == "cilium" or labels.get("app.kubernetes.io/name") == "cilium-agent":
        return True
    return name_of(body) == "cilium" and any(
        "cilium/cilium" in str(c.get("image", "")) for c in containers(body)
    )


def _is_cilium_operator(body: Body) -> bool:
    labels = labels_of(body)
    return (
        labels.get("io.cilium/app") == "operator"
        or labels.get("app.kubernetes.io/name") == "cilium-operator"
        or name_of(body) == "cilium-operator"
    )


def _agent_image(agent: Body) -> str | None:
    images = [(str(c.get("name")), str(c.get("image") or "")) for c in containers(agent)]
    for name, image in images:
        if name == "cilium-agent" and image:
            return image
    return next((image for _, image in images if "cilium" in image), None)


def _operator_image(operator: Body) -> str | None:
    """The image of the operator container (``quay.io/cilium/operator-generic:v1.18.4``)."""
    images = [str(c.get("image") or "") for c in containers(operator)]
    return next((image for image in images if "operator" in image), images[0] if images else None)


def _version_of(body: Body, image: str | None, chart: str) -> tuple[Version | None, str | None]:
    """Version from the image tag, else the ``app.kubernetes.io/version`` or chart label."""
    if image:
        version = parse_version(image_tag(image))
        if version is not None:
            return version, f"image {image}"
    labels = labels_of(body)
    version = parse_version(labels.get("app.kubernetes.io/version"))
    if version is not None:
        return version, f"label app.kubernetes.io/version of {describe(body)}"
    chart_label = labels.get("helm.sh/chart", "")
    if chart_label.startswith(f"{chart}-"):
        version = parse_version(chart_label[len(chart) + 1:])
        if version is not None:
            return version, f"label helm.sh/chart of {describe(body)}"
    return None, None


def find_cilium(snapshot: ClusterSnapshot) -> CiliumInstall:
    """Locate Cilium's agent DaemonSet, operator Deployment and ``cilium-config`` [C5]."""
    agents = sorted(
        (d for d in _apps(snapshot, "DaemonSet") if _is_cilium_agent(d)), key=describe
    )
    agent = agents[0] if agents else None
    operators = sorted(
        (d for d in _apps(snapshot, "Deployment") if _is_cilium_operator(d)), key=describe
    )
    operator = operators[0] if operators else None
    namespace = (
        namespace_of(agent) if agent else namespace_of(operator) if operator else None
    ) or "kube-system"
    configs = [
        c for c in snapshot.find("v1", "ConfigMap")
        if c.get("apiVersion") == "v1" and name_of(c) == "cilium-config"
    ]
    configs.sort(key=lambda c: (namespace_of(c) != namespace, describe(c)))
    config: dict[str, str] | None = None
    config_body = configs[0] if configs else None
    config_obj = f"ConfigMap {namespace}/cilium-config"
    if configs:
        data = configs[0].get("data") or {}
        config = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
        config_obj = describe(configs[0])
    image = _agent_image(agent) if agent else None
    version, source = _version_of(agent, image, "cilium") if agent else (None, None)
    operator_version, operator_source = (
        _version_of(operator, _operator_image(operator), "cilium") if operator else (None, None)
    )
    return CiliumInstall(
        agent, operator, config, config_body, config_obj, namespace, version, source, image,
        operator_version, operator_source,
    )


# -- kube-proxy [C5] -------------------------------------------------------------------------
def find_kube_proxy(snapshot: ClusterSnapshot) -> list[str]:
    """kube-proxy DaemonSets, then pods labelled as kube-proxy (static or embedded) [C5]."""
    found = [
        describe(d) for d in _apps(snapshot, "DaemonSet")
        if name_of(d) == "kube-proxy" or labels_of(d).get("k8s-app") == "kube-proxy"
    ]
    for pod in snapshot.find("v1", "Pod"):
        labels = labels_of(pod)
        if pod.get("apiVersion") == "v1" and (
            labels.get("component") == "kube-proxy" or labels.get("k8s-app") == "kube-proxy"
        ):
            owners = metadata(pod).get("ownerReferences") or []
            if any(isinstance(o, dict) and o.get("kind") == "DaemonSet" for o in owners) and (
                found
            ):
                continue  # a pod of a DaemonSet already listed
            found.append(describe(pod))
    return sorted(set(found))


# -- MetalLB [M9] ----------------------------------------------------------------------------
@dataclass(frozen=True)
class MetalLBInstall:
    """MetalLB's controller and speaker and what they run with [M4][M6][M9]."""

    controller: Body | None
    speaker: Body | None
    version: Version | None
    version_source: str | None
    lb_class: str | None
    bgp_type: str
    bgp_evidence: str | None
    webhooks: list[Body] = field(default_factory=list)
    component_versions: dict[str, tuple[Version, str]] = field(default_factory=dict)
    """``controller`` / ``speaker`` → (version, where it was read), for those whose version is
    known (they are released together, but may run different images during an upgrade)."""


def _metallb_component(body: Body, component: str) -> bool:
    labels = labels_of(body)
    if labels.get("app") == "metallb" and labels.get("component") == component:
        return True
    if labels.get("app.kubernetes.io/name") == "metallb" and (
        labels.get("app.kubernetes.io/component") == component
    ):
        return True
    return any(f"metallb/{component}" in str(c.get("image", "")) for c in containers(body))


def find_metallb(snapshot: ClusterSnapshot) -> MetalLBInstall:
    """Locate MetalLB's controller Deployment, speaker DaemonSet, FRR and webhooks [M9]."""
    controllers = sorted(
        (d for d in _apps(snapshot, "Deployment") if _metallb_component(d, "controller")),
        key=lambda d: (namespace_of(d) != snapshot.metallb_namespace, describe(d)),
    )
    speakers = sorted(
        (d for d in _apps(snapshot, "DaemonSet") if _metallb_component(d, "speaker")),
        key=lambda d: (namespace_of(d) != snapshot.metallb_namespace, describe(d)),
    )
    controller = controllers[0] if controllers else None
    speaker = speakers[0] if speakers else None
    version: Version | None = None
    source: str | None = None
    versions: dict[str, tuple[Version, str]] = {}
    for workload, component in ((controller, "controller"), (speaker, "speaker")):
        if workload is None:
            continue
        image = next(
            (str(c.get("image")) for c in containers(workload)
             if f"metallb/{component}" in str(c.get("image", ""))),
            None,
        )
        found, where = _version_of(workload, image, "metallb")
        if found is not None and where is not None:
            versions[component] = (found, where)
            if version is None:
                version, source = found, where
    lb_class = None
    for workload in (controller, speaker):
        for container in containers(workload) if workload else []:
            lb_class = lb_class or flag_value(container_args(container), "lb-class") or None
    bgp_type, evidence = "native", None
    for container in containers(speaker) if speaker else []:
        value = container_env(container, "METALLB_BGP_TYPE")
        if value:
            bgp_type, evidence = value, f"{describe(speaker or {})} env METALLB_BGP_TYPE={value}"
            break
        if container.get("name") == "frr":
            bgp_type, evidence = "frr", f"{describe(speaker or {})} runs an frr container"
    if bgp_type == "native":
        frr_k8s = [
            d for d in _apps(snapshot, "DaemonSet")
            if labels_of(d).get("app.kubernetes.io/name") == "frr-k8s"
            or labels_of(d).get("app.kubernetes.io/component") == "frr-k8s"
            or name_of(d).endswith("frr-k8s")
        ]
        if frr_k8s:
            bgp_type, evidence = "frr-k8s", f"{describe(frr_k8s[0])} is present"
    webhooks = [
        w for w in snapshot.find("admissionregistration.k8s.io/", "ValidatingWebhookConfiguration")
        if name_of(w) == "metallb-webhook-configuration"
        or any(
            isinstance(h, dict) and str(h.get("name", "")).endswith(".metallb.io")
            for h in w.get("webhooks") or []
        )
    ]
    return MetalLBInstall(
        controller, speaker, version, source, lb_class, bgp_type, evidence,
        sorted(webhooks, key=describe), versions,
    )


# -- Services and pools ----------------------------------------------------------------------
def metallb_serves(service: Service, lb_class: str | None) -> bool:
    """MetalLB handles a LoadBalancer Service whose class equals its ``--lb-class`` [M6]."""
    return service.is_load_balancer and service.load_balancer_class == lb_class


def advertisement_pools(snapshot: ClusterSnapshot, ad: L2Advertisement) -> set[str]:
    """Names of the pools one L2Advertisement announces (empty pool lists = all) [M3]."""
    if ad.selects_all_pools:
        names = {pool.name for pool in snapshot.pools}
    else:
        names = {name for name in ad.pool_names if snapshot.pool(name) is not None}
        for selector in ad.pool_selectors:
            names.update(p.name for p in snapshot.pools if matches(selector, p.labels))
    return {snapshot.pool_aliases.get(name, name) for name in names}


def l2_pool_names(snapshot: ClusterSnapshot) -> set[str]:
    """Names of the pools some L2Advertisement announces (empty pool lists = all) [M3]."""
    names: set[str] = set()
    for ad in snapshot.l2_advertisements:
        names |= advertisement_pools(snapshot, ad)
    return names


def advertisement_nodes(snapshot: ClusterSnapshot, ad: L2Advertisement) -> list[Node]:
    """The Nodes an L2Advertisement announces from: its node selectors (none = every node),
    never a node labelled to be excluded from external load balancers [M3][M8]."""
    return sorted(
        (node for node in snapshot.nodes
         if EXCLUDE_LB_LABEL not in node.labels
         and (not ad.node_selectors or any(matches(sel, node.labels)
                                           for sel in ad.node_selectors))),
        key=lambda node: node.name,
    )


def pool_holding(snapshot: ClusterSnapshot, ip: IPAddress) -> str | None:
    """The MetalLB pool whose addresses contain the IP, if any."""
    return snapshot.pool_holding(ip)


def announced_services(snapshot: ClusterSnapshot, lb_class: str | None) -> list[Service]:
    """Services Cilium will hold an L2 lease for after the cutover [C2].

    Those MetalLB serves with an IP of an L2-announced pool, plus those already of Cilium's
    L2 class; a lease exists only for a Service that has an IP.
    """
    pools = l2_pool_names(snapshot)
    out = []
    for service in snapshot.services:
        ips = service.current_ips()
        if not ips:
            continue
        already_cilium = (
            service.is_load_balancer and service.load_balancer_class == CILIUM_CLASSES[0]
        )
        if already_cilium or (
            metallb_serves(service, lb_class)
            and any(pool_holding(snapshot, ip) in pools for ip in ips)
        ):
            out.append(service)
    return out


# -- other objects ----------------------------------------------------------------------------
def cilium_node_labels(snapshot: ClusterSnapshot) -> dict[str, dict[str, str]]:
    """Labels of every CiliumNode object, by name (= Node name)."""
    return {name_of(body): labels_of(body) for body in snapshot.find("cilium.io/", "CiliumNode")}


def talos_machine_configs(snapshot: ClusterSnapshot) -> list[tuple[str, Body]]:
    """Talos machine configurations (``version: v1alpha1`` with machine and cluster)."""
    return [
        (doc.origin, doc.body) for doc in snapshot.others
        if "kind" not in doc.body and isinstance(doc.body.get("machine"), dict)
        and isinstance(doc.body.get("cluster"), dict)
    ]


# -- node interfaces ---------------------------------------------------------------------------
LAB_INTERFACES_ANNOTATION = "lab.lbmigrate.io/interfaces"
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface


@dataclass(frozen=True)
class NodeInterface:
    """A network interface of a node, with the addresses (and so the subnets) it carries."""

    name: str
    addresses: tuple[IPInterface, ...]


def node_bodies(snapshot: ClusterSnapshot) -> list[Body]:
    """The raw Node objects of the snapshot."""
    return [d.body for d in snapshot.documents
            if d.body.get("kind") == "Node" and d.body.get("apiVersion") == "v1"]


def node_addresses(snapshot: ClusterSnapshot) -> dict[str, list[tuple[str, IPAddress]]]:
    """Node name → its InternalIP and ExternalIP addresses, as (type, address)."""
    out: dict[str, list[tuple[str, IPAddress]]] = {}
    for body in node_bodies(snapshot):
        status = body.get("status")
        found: list[tuple[str, IPAddress]] = []
        for item in (status.get("addresses") or []) if isinstance(status, dict) else []:
            if not isinstance(item, dict) or item.get("type") not in ("InternalIP", "ExternalIP"):
                continue
            try:
                found.append((str(item["type"]), ipaddress.ip_address(str(item.get("address")))))
            except ValueError:
                continue
        out[name_of(body)] = found
    return out


def _interface_addresses(values: object) -> tuple[IPInterface, ...]:
    out = []
    for value in values if isinstance(values, list) else []:
        try:
            out.append(ipaddress.ip_interface(str(value)))
        except ValueError:
            continue
    return tuple(out)


def _lab_interfaces(text: str) -> tuple[NodeInterface, ...]:
    """``ens18=10.77.0.11/24,ens20``: names, each with the addresses after ``=`` (several
    separated by spaces, or the name repeated)."""
    by_name: dict[str, list[IPInterface]] = {}
    for item in (part.strip() for part in text.split(",")):
        name, _, addresses = item.partition("=")
        if not name.strip():
            continue
        by_name.setdefault(name.strip(), []).extend(_interface_addresses(addresses.split()))
    return tuple(NodeInterface(name, tuple(found)) for name, found in by_name.items())


def _talos_interfaces(config: Body) -> tuple[NodeInterface, ...]:
    """``machine.network.interfaces`` of a Talos machine config: named interfaces and their
    VLANs (``<interface>.<vlanId>``) with their static addresses (deviceSelector entries name
    no interface and are left out)."""
    machine = config.get("machine")
    network = machine.get("network") if isinstance(machine, dict) else None
    interfaces = network.get("interfaces") if isinstance(network, dict) else None
    out = []
    for item in interfaces if isinstance(interfaces, list) else []:
        if not isinstance(item, dict) or not item.get("interface"):
            continue
        name = str(item["interface"])
        out.append(NodeInterface(name, _interface_addresses(item.get("addresses"))))
        for vlan in item.get("vlans") or []:
            if isinstance(vlan, dict) and vlan.get("vlanId") is not None:
                out.append(NodeInterface(f"{name}.{vlan['vlanId']}",
                                         _interface_addresses(vlan.get("addresses"))))
    return tuple(out)


def node_interfaces(snapshot: ClusterSnapshot) -> dict[str, tuple[NodeInterface, ...]]:
    """Node name → its interfaces, for the nodes whose interfaces the input tells: the lab's
    Node annotation ``lab.lbmigrate.io/interfaces``, or a Talos machine config whose hostname
    or addresses name the node."""
    out: dict[str, tuple[NodeInterface, ...]] = {}
    addresses = node_addresses(snapshot)
    for body in node_bodies(snapshot):
        text = annotations_of(body).get(LAB_INTERFACES_ANNOTATION)
        if text:
            out[name_of(body)] = _lab_interfaces(text)
    for _, config in talos_machine_configs(snapshot):
        interfaces = _talos_interfaces(config)
        if not interfaces:
            continue
        machine = config.get("machine") or {}
        network = machine.get("network") if isinstance(machine, dict) else None
        hostname = network.get("hostname") if isinstance(network, dict) else None
        held = {a.ip for i in interfaces for a in i.addresses}
        for node, found in addresses.items():
            if node not in out and (node == hostname or any(ip in held for _, ip in found)):
                out[node] = interfaces
    return out
