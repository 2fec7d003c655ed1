"""Making, saving and loading plans: the library behind ``migrate plan``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from migrate.errors import InputError
from migrate.model.findings import Finding
from migrate.plan.build import build_plan
from migrate.plan.model import Plan
from migrate.sources.snapshot import ClusterSnapshot
from migrate.translate.translator import translate

_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_IMAGE_VERSION = re.compile(r":v?(\d+)\.(\d+)(?:\.(\d+))?")


def image_version(image: str) -> tuple[int, int, int] | None:
    """The version in an image tag (``quay.io/cilium/cilium:v1.18.4@sha256:…`` → 1.18.4)."""
    match = _IMAGE_VERSION.search(image.split("@")[0])
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def _agent_image_version(body: dict[str, Any], containers_path: tuple[str, ...]) -> (
    tuple[int, int, int] | None
):
    """The version in the image of a Cilium agent's container (``cilium-agent`` first)."""
    node: Any = body
    for key in containers_path:
        node = (node or {}).get(key) if isinstance(node, dict) else None
    containers = [c for c in node or [] if isinstance(c, dict)]
    containers.sort(key=lambda c: c.get("name") != "cilium-agent")
    for container in containers:
        version = image_version(str(container.get("image", "")))
        if version:
            return version
    return None


def _is_agent(body: dict[str, Any]) -> bool:
    labels = (body.get("metadata") or {}).get("labels") or {}
    return bool(labels.get("k8s-app") == "cilium"
                or labels.get("app.kubernetes.io/name") == "cilium-agent"
                or (body.get("kind") == "DaemonSet" and body["metadata"].get("name") == "cilium"))


def cilium_version_of(snapshot: ClusterSnapshot, namespace: str = "kube-system") -> str | None:
    """Cilium's version (``X.Y``) from its agent's image tag [C5]: the agent DaemonSet's pod
    template, else the oldest of the agent pods (a rollout may be half done); None when the
    input has no agent with a tagged image (``convert`` of plain manifests)."""
    for body in snapshot.find("apps/", "DaemonSet"):
        if _is_agent(body):
            version = _agent_image_version(body, ("spec", "template", "spec", "containers"))
            if version:
                return f"{version[0]}.{version[1]}"
    versions = [v for body in snapshot.find("v1", "Pod") if _is_agent(body)
                if (v := _agent_image_version(body, ("spec", "containers")))]
    if versions:
        oldest = min(versions)
        return f"{oldest[0]}.{oldest[1]}"
    return None


def preflight_findings(snapshot: ClusterSnapshot, cilium: str | None) -> list[Finding]:
    """Stage 0's findings, from the preflight checks when that module is present."""
    try:
        from migrate.preflight import run_preflight
    except ImportError:  # pragma: no cover - preflight ships with the package
        return []
    return [
        f if f.code.startswith("preflight:") else Finding(
            f.severity, f"preflight:{f.code}", f.obj, f.field, f.message, f.origin)
        for f in run_preflight(snapshot, cilium_version=cilium).findings()
    ]


def make_plan(snapshot: ClusterSnapshot, *, cilium: str | None = None,
              cilium_namespace: str = "kube-system", preflight: bool = True,
              canary: str | None = None, bgp_batch: int = 1) -> Plan:
    """Translate a snapshot and lay out the staged plan (Cilium version: given, else detected;
    ``canary``: a MetalLB pool whose announcements move to Cilium first, in stage l2-canary;
    ``bgp_batch``: how many nodes bgp-handover moves at once)."""
    version = cilium or cilium_version_of(snapshot, cilium_namespace)
    translation = translate(snapshot, cilium=version, bgp=True)
    extra = preflight_findings(snapshot, version) if preflight else []
    return build_plan(snapshot, translation, cilium_namespace=cilium_namespace,
                      extra_findings=extra, canary=canary, bgp_batch=bgp_batch)


def save_plan(plan: Plan, path: str | Path) -> None:
    """Write a plan file: JSON when the name ends in .json (faster for large plans), else YAML.
    The file carries its digest (``Plan.to_file``)."""
    if str(path).endswith(".json"):
        import json

        Path(path).write_text(json.dumps(plan.to_file(), indent=1) + "\n")
        return
    Path(path).write_text(yaml.dump(plan.to_file(), Dumper=_DUMPER, sort_keys=False, width=100))


def load_plan(path: str | Path) -> Plan:
    """Read a plan file written by ``save_plan``: InputError naming the file when it cannot be
    read, does not parse, is not a plan, or was changed or cut short after it was written."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file (not a plan)", source=source) from None
    except OSError as exc:
        raise InputError(f"cannot read the plan: {exc.strerror}", source=source) from None
    try:
        if source.endswith(".json"):
            import json

            data = json.loads(text)
        else:
            data = yaml.load(text, Loader=_LOADER)
    except ValueError as exc:
        raise InputError(f"the plan file is not valid JSON ({exc}); was it cut short?",
                         source=source) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise InputError("the plan file is not valid YAML; was it cut short?",
                         source=where) from None
    if isinstance(data, dict) and data.get("kind") == "MigrationPlan" and "digest" not in data:
        raise InputError("the plan has no digest: it was cut short, edited, or written by an"
                         " older migrate; make a new plan with migrate plan --out",
                         source=source, field="digest")
    return Plan.from_dict(data, origin=source)
