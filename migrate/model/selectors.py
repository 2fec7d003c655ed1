"""Kubernetes label selectors: validation and matching (matchLabels AND matchExpressions)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")


class SelectorError(ValueError):
    """A label selector the API server would refuse; ``field`` is where, when known."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def normalise(selector: Mapping[str, Any] | None, field: str) -> dict[str, Any]:
    """Validate a LabelSelector whose structure was checked where it was read
    (``migrate/sources/validate.py``) and return it as a plain dict (raises SelectorError
    for what the API server refuses: an unknown operator, values that do not fit it)."""
    if not selector:
        return {}
    out: dict[str, Any] = {}
    labels = selector.get("matchLabels")
    if labels:
        out["matchLabels"] = dict(labels)
    expressions = selector.get("matchExpressions")
    if expressions:
        checked = []
        for index, expr in enumerate(expressions):
            where = f"{field}.matchExpressions[{index}]"
            operator = expr["operator"]
            if operator not in OPERATORS:
                raise SelectorError(f"{operator!r} is not one of {', '.join(OPERATORS)}",
                                    f"{where}.operator")
            values = list(expr.get("values") or [])
            if operator in ("In", "NotIn") and not values:
                raise SelectorError(
                    f"must not be empty for {operator}" if "values" in expr
                    else f"is required for {operator}", f"{where}.values")
            if operator in ("Exists", "DoesNotExist") and values:
                raise SelectorError(f"must be empty for {operator}", f"{where}.values")
            item: dict[str, Any] = {"key": expr["key"], "operator": operator}
            if values:
                item["values"] = values
            checked.append(item)
        out["matchExpressions"] = checked
    return out


def matches(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """True when the labels satisfy the selector; an empty selector matches everything."""
    if not selector:
        return True
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(str(key)) != str(value):
            return False
    for expr in selector.get("matchExpressions") or []:
        key, operator = str(expr.get("key", "")), expr.get("operator")
        values = [str(v) for v in expr.get("values") or []]
        present = key in labels
        if operator not in OPERATORS:  # the API server's selector conversion would fail
            return False
        if operator == "In" and not (present and labels[key] in values):
            return False
        if operator == "NotIn" and present and labels[key] in values:
            return False
        if operator == "Exists" and not present:
            return False
        if operator == "DoesNotExist" and present:
            return False
    return True


def combine(*selectors: Mapping[str, Any] | None) -> dict[str, Any]:
    """The AND of several selectors as one selector, or None-equivalent ``{}`` when all empty.

    Raises SelectorError when two selectors need different values for one matchLabels key
    (the result could never match).
    """
    labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for selector in selectors:
        if not selector:
            continue
        for key, value in (selector.get("matchLabels") or {}).items():
            if key in labels and labels[key] != value:
                raise SelectorError(f"label {key} cannot be both {labels[key]!r} and {value!r}")
            labels[key] = value
        for expr in selector.get("matchExpressions") or []:
            if expr not in expressions:
                expressions.append(dict(expr))
    out: dict[str, Any] = {}
    if labels:
        out["matchLabels"] = dict(sorted(labels.items()))
    if expressions:
        out["matchExpressions"] = expressions
    return out
