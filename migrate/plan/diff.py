"""Per-object diffs of a plan's actions (deepdiff), as plain data the renderer shows."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from deepdiff import DeepDiff

from migrate.plan.model import Action


@dataclass(frozen=True)
class Change:
    """One changed field: ``+`` added, ``-`` removed, ``~`` changed."""

    sign: str
    path: str
    old: Any = None
    new: Any = None


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf paths of nested mappings: ``{"metadata": {"labels": {"a/b": "1"}}}`` →
    ``{'metadata.labels["a/b"]': "1"}``. Lists are leaves; empty mappings vanish."""
    if not isinstance(value, dict):
        return {prefix or "(object)": value}
    if not value:
        return {} if prefix else {"(object)": value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        part = f'["{key}"]' if any(c in str(key) for c in "./") else str(key)
        path = f"{prefix}{part}" if part.startswith("[") else (
            f"{prefix}.{part}" if prefix else part)
        out.update(flatten(item, path))
    return out


def _key(raw: str) -> str:
    """``root['metadata.labels["a"]']`` → the flat path inside."""
    return raw[len("root['"):-2] if raw.startswith("root['") else raw


def action_changes(action: Action) -> list[Change]:
    """What the action changes in its object, field by field."""
    if action.verb == "wait":
        return []
    if action.before is None and action.after is not None:
        return [Change("+", "(object)", new=action.body or action.after)]
    if action.after is None:
        return [Change("-", "(object)", old=action.before)]
    before, after = flatten(action.before), flatten(action.after)
    diff = DeepDiff(before, after, ignore_order=False, verbose_level=2)
    changes: list[Change] = []
    for raw, value in (diff.get("dictionary_item_added") or {}).items():
        changes.append(Change("+", _key(raw), new=value))
    for raw, value in (diff.get("dictionary_item_removed") or {}).items():
        changes.append(Change("-", _key(raw), old=value))
    # A changed list is one leaf: each of its changed items names the same path, shown once.
    changed = {
        _key(raw).split("']")[0]
        for kind in ("values_changed", "type_changes", "iterable_item_added",
                     "iterable_item_removed")
        for raw in diff.get(kind) or {}
    }
    changes.extend(Change("~", path, before.get(path), after.get(path)) for path in changed)
    return sorted(changes, key=lambda c: c.path)
