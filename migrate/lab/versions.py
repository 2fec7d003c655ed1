"""Which MetalLB and Cilium release a lab process runs, from the image tags in the snapshot.

A process reads the version of the image it runs (its pod's container, or its workload's pod
template); a tag that is no version (``latest``, a digest only, no tag) means the newest
behaviour the lab models, which the bands below name. Each model keeps its version bands next
to the behaviour they change, with the upstream change they follow.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

Version = tuple[int, ...]
Obj = dict[str, Any]

NEWEST_METALLB: Version = (0, 16, 1)
"""The newest MetalLB release the lab knows (2026-05)."""
NEWEST_CILIUM: Version = (1, 20, 2)
"""The newest Cilium release the lab knows (2026-09-16)."""


def image_version(image: str) -> Version | None:
    """``quay.io/metallb/controller:v0.14.9`` -> (0, 14, 9); None when the tag is no version
    (``latest``, a bare digest, no tag)."""
    name = image.rsplit("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    tag = last.rsplit(":", 1)[-1]
    numbers = tag.lstrip("v").split("-")[0].split("+")[0].split(".")
    if len(numbers) < 2 or not all(n.isdigit() for n in numbers):
        return None
    return tuple(int(n) for n in numbers)


def pod_spec_of(obj: Mapping[str, Any]) -> Obj:
    """The pod spec of a Pod, or of a workload's pod template."""
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    if obj.get("kind") == "Pod":
        return spec
    template = spec.get("template")
    inner = template.get("spec") if isinstance(template, dict) else None
    return inner if isinstance(inner, dict) else {}


def containers_of(obj: Mapping[str, Any]) -> list[Obj]:
    """The containers of a Pod or of a workload's pod template."""
    found = pod_spec_of(obj).get("containers")
    return [c for c in found if isinstance(c, dict)] if isinstance(found, list) else []


def version_in(objects: Iterable[Mapping[str, Any]], *words: str) -> Version | None:
    """The first version found on a container image naming every one of ``words``."""
    for obj in objects:
        for container in containers_of(obj):
            image = str(container.get("image") or "")
            if all(w in image for w in words):
                version = image_version(image)
                if version is not None:
                    return version
    return None


def at_least(version: Version | None, *floor: int) -> bool:
    """``version >= floor``; an unknown version is the newest, so always True."""
    return version is None or version >= floor


def below(version: Version | None, *ceiling: int) -> bool:
    """``version < ceiling``; an unknown version is the newest, so always False."""
    return version is not None and version < ceiling


def within(version: Version | None, low: Version, high: Version) -> bool:
    """``low <= version < high``; False for an unknown version (the newest)."""
    return version is not None and low <= version < high


def snapshot_cilium_version(objects: Iterable[Mapping[str, Any]]) -> Version | None:
    """Cilium's version from its agent or operator image among snapshot objects."""
    items = list(objects)
    agents = [o for o in items if o.get("kind") in ("DaemonSet", "Pod")]
    found = version_in(agents, "cilium/cilium")
    if found is None:
        found = version_in(items, "cilium/operator")
    return found
