"""The translation keeps MetalLB's behaviour: pinned IPs, pool selection, who announces what.

Checked on every golden scenario by evaluating both sides' rules: MetalLB's [M2][M3][M8] on the
input objects and Cilium's [C1.4][C2] on the translated ones.
"""

from __future__ import annotations

import itertools
import shlex
from pathlib import Path
from typing import Any

import pytest

from migrate.model.addresses import cilium_allocatable
from migrate.model.selectors import matches
from migrate.sources.snapshot import ClusterSnapshot, read_snapshot
from migrate.translate.translator import (
    ANNOUNCED_WITH_ANNOTATION,
    EXCLUDE_LB_LABEL,
    Translation,
    translate,
)
from tests.conftest import TESTDATA

SCENARIOS = sorted(p for p in (TESTDATA / "convert").iterdir()
                   if (p / "input.yaml").exists() and not p.name.startswith("invalid-"))


def _load(case: Path) -> tuple[ClusterSnapshot, Translation]:
    args = shlex.split((case / "args").read_text()) if (case / "args").exists() else []
    version = args[args.index("--cilium-version") + 1] if "--cilium-version" in args else None
    snapshot = read_snapshot([case / "input.yaml"])
    return snapshot, translate(snapshot, cilium=version)


def _service_view(namespace: str, name: str, labels: dict[str, str]) -> dict[str, str]:
    return {**labels, "io.kubernetes.service.namespace": namespace,
            "io.kubernetes.service.name": name}


@pytest.mark.parametrize("case", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_every_pinned_ip_is_importable_by_lbipam(case: Path) -> None:
    """Each pinned IP lies in a Cilium pool whose selector matches the pinned Service [C1.4]."""
    snapshot, translation = _load(case)
    services = {s.key: s for s in snapshot.services}
    for pin in translation.pins:
        service = services[pin.key]
        assert tuple(pin.ips) == tuple(str(ip) for ip in service.current_ips())
        if pin.ips:
            assert translation.cilium.ips_annotation in pin.annotations
            assert pin.annotations[translation.cilium.ips_annotation].split(",") == list(pin.ips)
        key = service.metallb("allow-shared-ip")
        if key:
            assert pin.annotations[translation.cilium.sharing_key_annotation] == key
        labels = _service_view(pin.namespace, pin.name, {**service.labels, **pin.labels})
        for ip in pin.ips:
            holders = [
                pool for pool in translation.pools
                if any(ip_in(ip, rng) for rng in cilium_allocatable(pool["spec"]))
            ]
            assert len(holders) == 1, f"{ip} is in {len(holders)} Cilium pools"
            assert matches(holders[0]["spec"].get("serviceSelector"), labels), (
                f"{pin.key} would lose {ip}: pool {holders[0]['metadata']['name']} does not"
                " select it"
            )


def ip_in(text: str, rng: Any) -> bool:
    import ipaddress

    return ipaddress.ip_address(text) in rng


def _candidate_nodes(snapshot: ClusterSnapshot) -> list[dict[str, str]]:
    """Label sets that exercise every selector of the input (and the exclusion label)."""
    pairs: set[tuple[str, str]] = set()
    for ad in snapshot.l2_advertisements:
        for selector in ad.node_selectors:
            pairs.update((selector.get("matchLabels") or {}).items())
            for expr in selector.get("matchExpressions") or []:
                for value in expr.get("values") or ["x"]:
                    pairs.add((expr["key"], value))
    pairs.add((EXCLUDE_LB_LABEL, ""))
    ordered = sorted(pairs)
    nodes: list[dict[str, str]] = [{}]
    for size in (1, 2):
        for combo in itertools.combinations(ordered, size):
            nodes.append(dict(combo))
    return nodes


def _metallb_interfaces(
    snapshot: ClusterSnapshot, pool: str | None, labels: dict[str, str], node: dict[str, str]
) -> set[str] | None:
    """Interfaces MetalLB would answer on from this node for this Service; None = not at all."""
    if pool is None or EXCLUDE_LB_LABEL in node:
        return None
    found: set[str] | None = None
    for ad in snapshot.l2_advertisements:
        selected = ad.selects_all_pools or pool in ad.pool_names or any(
            matches(sel, snapshot.pool(pool).labels)  # type: ignore[union-attr]
            for sel in ad.pool_selectors
        )
        if not selected:
            continue
        if ad.service_selectors and not any(matches(s, labels) for s in ad.service_selectors):
            continue
        if ad.node_selectors and not any(matches(s, node) for s in ad.node_selectors):
            continue
        found = found or set()
        found |= set(ad.interfaces) if ad.interfaces else {"*"}
    if found and "*" in found:
        return {"*"}
    return found


def _cilium_interfaces(
    translation: Translation, labels: dict[str, str], node: dict[str, str]
) -> set[str] | None:
    found: set[str] | None = None
    for policy in translation.policies:
        spec = policy["spec"]
        if not spec.get("loadBalancerIPs"):
            continue
        if not matches(spec.get("serviceSelector"), labels):
            continue
        if not matches(spec.get("nodeSelector"), node):
            continue
        found = found or set()
        regexes = spec.get("interfaces") or []
        found |= {r[1:-1].replace("\\", "") for r in regexes} if regexes else {"*"}
    if found and "*" in found:
        return {"*"}
    return found


@pytest.mark.parametrize("case", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_same_services_announced_from_same_nodes_on_same_interfaces(case: Path) -> None:
    """Every Service's IPs are announced from the nodes and interfaces MetalLB used; a Service
    that shares its IPs is announced through the sharer it follows, and selects no policy
    itself (one lease, so one announcer, per shared IP: cilium#48419)."""
    snapshot, translation = _load(case)
    services = {s.key: s for s in snapshot.services}
    pins = {pin.key: pin for pin in translation.pins}
    nodes = _candidate_nodes(snapshot)

    def view(key: str) -> dict[str, str]:
        pin = pins[key]
        return _service_view(pin.namespace, pin.name, {**services[key].labels, **pin.labels})

    for pin in translation.pins:
        if not pin.ips:
            continue
        labels = view(pin.key)
        leaders = [key for key in pin.annotations.get(ANNOUNCED_WITH_ANNOTATION, "").split(",")
                   if key]
        for node in nodes:
            expected = _metallb_interfaces(snapshot, pin.pool, labels, node)
            if leaders:
                assert not _cilium_interfaces(translation, labels, node), pin.key
                for leader in leaders:
                    assert set(pin.ips) & set(pins[leader].ips), (pin.key, leader)
                    actual = _cilium_interfaces(translation, view(leader), node)
                    assert actual == expected, f"{pin.key} via {leader} on node {node}"
                continue
            actual = _cilium_interfaces(translation, labels, node)
            assert actual == expected, f"{pin.key} on node {node}: {actual} != {expected}"


@pytest.mark.parametrize("case", SCENARIOS, ids=[p.name for p in SCENARIOS])
def test_each_shared_ip_is_announced_through_one_service(case: Path) -> None:
    snapshot, translation = _load(case)
    services = {s.key: s for s in snapshot.services}
    announced_by: dict[str, list[str]] = {}
    for pin in translation.pins:
        labels = _service_view(pin.namespace, pin.name,
                               {**services[pin.key].labels, **pin.labels})
        if any(matches(p["spec"].get("serviceSelector"), labels) for p in translation.policies):
            for ip in pin.ips:
                announced_by.setdefault(ip, []).append(pin.key)
    warned = {f.obj for f in translation.findings if f.code == "shared-ip-two-announcers"}
    for ip, keys in announced_by.items():
        unwarned = [key for key in keys if f"Service {key}" not in warned]
        assert len(unwarned) <= 1, (ip, keys)  # two announcers only where a WARNING says so


def test_interface_regexes_are_anchored_and_escaped() -> None:
    _, translation = _load(TESTDATA / "convert" / "interface-dot")
    regexes = translation.policies[0]["spec"]["interfaces"]
    assert regexes == ["^eth0\\.100$", "^br-lan$"]
    import re

    assert re.match(regexes[0], "eth0.100")
    assert not re.match(regexes[0], "eth0x100")
    assert not re.match(regexes[0], "veth0.100")
