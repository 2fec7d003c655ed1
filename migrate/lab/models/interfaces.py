"""A node's network interfaces in the lab, and the devices a Cilium agent selects on them.

The Kubernetes API does not hold a node's interfaces, so a snapshot states them with an
annotation on the Node (the lab's own; nothing in a real cluster writes it)::

    lab.lbmigrate.io/interfaces: "ens18=10.77.0.11/24,ens20"

Comma-separated interfaces, each ``name`` or ``name=address[/prefix]`` (repeat a name to give
it more addresses). An interface without an address exists but carries none: Cilium's L2
announcer does not answer on it (cilium/cilium#41641, #31691), MetalLB's speaker does (its
ARP responder needs no address, metallb ``internal/layer2/announcer.go``).

Without the annotation a node's interfaces are unknown, and the lab assumes the node has
whatever interface the configuration names, each with an address: MetalLB answers on the
interfaces its L2Advertisements name, Cilium's agent on the devices ``cilium-config`` names
(``devices``; every device when unset) that a policy's ``interfaces`` match. So only a node
annotated with its real interfaces can show an announcement that goes nowhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from migrate.lab.models._common import Obj, annotations_of

INTERFACES_ANNOTATION = "lab.lbmigrate.io/interfaces"
EXCLUDED_DEVICES = re.compile(r"^(lo|lxc.*|cilium_.*|veth.*|docker.*|cni.*|flannel.*|vxlan.*)$")
"""What Cilium's device detection never picks (loopback, its own and other overlay links)."""


@dataclass(frozen=True)
class Interface:
    """One interface of a node."""

    name: str
    addresses: tuple[str, ...] = ()


def parse_interfaces(text: str) -> dict[str, Interface]:
    """``ens18=10.77.0.11/24,ens20`` -> {name: Interface}; malformed parts are skipped."""
    found: dict[str, list[str]] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        name, _, address = part.partition("=")
        name = name.strip()
        if not name:
            continue
        addresses = found.setdefault(name, [])
        if address.strip():
            addresses.append(address.strip())
    return {name: Interface(name, tuple(addrs)) for name, addrs in found.items()}


def node_interfaces(node: Obj | None) -> dict[str, Interface] | None:
    """The interfaces a Node's annotation states, or None when it states none (unknown)."""
    if node is None:
        return None
    text = annotations_of(node).get(INTERFACES_ANNOTATION)
    if text is None:
        return None
    return parse_interfaces(text)


def configured_devices(config: dict[str, str]) -> list[str]:
    """cilium-config ``devices``: names or ``prefix+`` wildcards, comma or space separated."""
    return [d for d in re.split(r"[,\s]+", config.get("devices", "").strip()) if d]


def _device_matches(pattern: str, name: str) -> bool:
    if pattern.endswith("+"):
        return name.startswith(pattern[:-1])
    return name == pattern


@dataclass(frozen=True)
class Devices:
    """The devices one Cilium agent can announce on.

    ``names``: concrete device names (the node's interfaces are known, or ``devices`` names
    them), with whether each carries an address. ``patterns``: ``devices`` wildcards on a node
    whose interfaces are unknown. ``anything``: nothing restricts them (unknown interfaces,
    ``devices`` unset).
    """

    names: dict[str, bool]
    patterns: tuple[str, ...] = ()
    anything: bool = False

    def matching(self, regexes: list[str]) -> tuple[list[str], bool]:
        """The devices a policy's ``interfaces`` select and that can answer (they carry an
        address), and whether there is any. Regexes follow ``regexp.MatchString`` (a match
        anywhere in the name); no regex selects every device (``upsertPolicy``). The list is
        empty for "every device", and holds the regexes themselves where the node's device
        names are unknown."""
        if not regexes:
            if self.anything or self.patterns:
                return [], True
            return [], any(self.names.values())
        compiled = []
        for text in regexes:
            try:
                compiled.append((text, re.compile(text)))
            except re.error:
                return [], False  # io.cilium/bad-interface-regex: the policy is not used
        chosen = sorted(n for n, addressed in self.names.items()
                        if addressed and any(r.search(n) for _, r in compiled))
        if chosen:
            return chosen, True
        if self.anything:
            return [t for t, _ in compiled], True
        guessed = [t for t, r in compiled
                   if any(r.search(p[:-1] + "0") for p in self.patterns)]
        return guessed, bool(guessed)


def agent_devices(node: Obj | None, config: dict[str, str]) -> Devices:
    """The devices of the agent on ``node`` (cilium-config ``devices``, else detected)."""
    interfaces = node_interfaces(node)
    wanted = configured_devices(config)
    if interfaces is None:
        if not wanted:
            return Devices({}, anything=True)
        names = {d: True for d in wanted if not d.endswith("+")}
        return Devices(names, patterns=tuple(d for d in wanted if d.endswith("+")))
    if wanted:
        selected = {name: bool(i.addresses) for name, i in interfaces.items()
                    if any(_device_matches(p, name) for p in wanted)}
        return Devices(selected)
    # detection: devices with an address, not loopback or overlay (pkg/datapath/linux devices)
    return Devices({name: True for name, i in interfaces.items()
                    if i.addresses and not EXCLUDED_DEVICES.match(name)})
