"""Node sets for Cilium's BGP ClusterConfigs: label-selector algebra (pure).

MetalLB applies each BGPPeer to the nodes any of its ``nodeSelectors`` selects, and each
BGPAdvertisement to the nodes of its own ``nodeSelectors`` [M4]; the selectors of different
objects may overlap freely. Cilium gives every node exactly one CiliumBGPClusterConfig (a node
selected by two keeps the first, ``operator/pkg/bgpv2/cluster.go`` upsertNodeConfigs) [C3].
So the translation cuts the nodes into disjoint sets that every MetalLB selector either
contains or avoids, one label selector each: ``partition`` splits by each selector and by its
negation (the negation of ``r1 AND r2`` is the disjoint ``NOT r1`` or ``r1 AND NOT r2``),
dropping the pieces no node can match.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from migrate.model.selectors import matches

Requirement = tuple[str, str, tuple[str, ...]]
"""(key, operator, sorted values): one requirement of a label selector."""
Term = tuple[Requirement, ...]
"""The AND of requirements, simplified and sorted; ``()`` selects every node."""

_NEGATION = {"In": "NotIn", "NotIn": "In", "Exists": "DoesNotExist", "DoesNotExist": "Exists"}


def term_of(selector: Mapping[str, Any] | None) -> Term | None:
    """A validated label selector as a Term (None when it can never match)."""
    selector = selector or {}
    requirements: list[Requirement] = [
        (str(key), "In", (str(value),))
        for key, value in (selector.get("matchLabels") or {}).items()
    ]
    for expr in selector.get("matchExpressions") or []:
        values = tuple(sorted({str(v) for v in expr.get("values") or []}))
        requirements.append((str(expr["key"]), str(expr["operator"]), values))
    return conjoin(tuple(requirements))


def conjoin(*terms: Term) -> Term | None:
    """The AND of terms, simplified per key; None when no label set can satisfy it."""
    keys: dict[str, dict[str, Any]] = {}
    for term in terms:
        for key, operator, values in term:
            state = keys.setdefault(key, {"present": None, "allowed": None, "forbidden": set()})
            if operator == "In":
                allowed = set(values)
                state["allowed"] = allowed if state["allowed"] is None else (
                    state["allowed"] & allowed)
                _need(state, "must")
            elif operator == "NotIn":
                state["forbidden"] |= set(values)
            elif operator == "Exists":
                _need(state, "must")
            elif operator == "DoesNotExist":
                _need(state, "mustnot")
            else:  # pragma: no cover - selectors are validated before
                raise ValueError(f"unknown operator {operator!r}")
    out: list[Requirement] = []
    for key in sorted(keys):
        state = keys[key]
        if state["present"] == "never":
            return None
        if state["present"] == "mustnot":
            out.append((key, "DoesNotExist", ()))
            continue
        if state["allowed"] is not None:
            allowed = state["allowed"] - state["forbidden"]
            if not allowed:
                return None
            out.append((key, "In", tuple(sorted(allowed))))
            continue
        if state["present"] == "must":
            out.append((key, "Exists", ()))
        if state["forbidden"]:
            out.append((key, "NotIn", tuple(sorted(state["forbidden"]))))
    return tuple(out)


def _need(state: dict[str, Any], presence: str) -> None:
    """Record that the key must (or must not) be present; "never" when both are required."""
    current = state["present"]
    state["present"] = presence if current in (None, presence) else "never"


def negate(term: Term) -> list[Term]:
    """Disjoint terms whose union is the complement of ``term`` (``[]`` for every node)."""
    pieces: list[Term] = []
    for index, (key, operator, values) in enumerate(term):
        piece = conjoin(term[:index], ((key, _NEGATION[operator], values),))
        if piece is not None:
            pieces.append(piece)
    return pieces


def selector_of(term: Term) -> dict[str, Any]:
    """A Term as a Kubernetes label selector (single-value In as matchLabels)."""
    labels: dict[str, str] = {}
    expressions: list[dict[str, Any]] = []
    for key, operator, values in term:
        if operator == "In" and len(values) == 1:
            labels[key] = values[0]
            continue
        expression: dict[str, Any] = {"key": key, "operator": operator}
        if values:
            expression["values"] = list(values)
        expressions.append(expression)
    out: dict[str, Any] = {}
    if labels:
        out["matchLabels"] = labels
    if expressions:
        out["matchExpressions"] = expressions
    return out


def term_matches(term: Term, labels: Mapping[str, str]) -> bool:
    """True when a node with these labels satisfies the term."""
    return matches(selector_of(term), labels)


@dataclass(frozen=True)
class NodeSet:
    """One set of nodes: its selector, and which of the input terms contain it."""

    term: Term
    inside: frozenset[int]


def partition(terms: Sequence[Term], *, limit: int) -> list[NodeSet] | None:
    """Disjoint node sets that each term contains or avoids; None past ``limit`` sets."""
    sets = [NodeSet((), frozenset())]
    for index, term in enumerate(terms):
        refined: list[NodeSet] = []
        for node_set in sets:
            inside = conjoin(node_set.term, term)
            if inside is not None:
                refined.append(NodeSet(inside, node_set.inside | {index}))
            for piece in negate(term):
                outside = conjoin(node_set.term, piece)
                if outside is not None:
                    refined.append(NodeSet(outside, node_set.inside))
        sets = refined
        if len(sets) > limit:
            return None
    return sets


def _per_key(term: Term) -> dict[str, tuple[bool, str, frozenset[str]]]:
    """Each key's requirements as (absent allowed, "in" or "notin", values) over its values."""
    out: dict[str, tuple[bool, str, frozenset[str]]] = {}
    for key, operator, values in term:
        absent, mode, chosen = out.get(key, (True, "notin", frozenset()))
        if operator == "In":
            out[key] = (False, "in", frozenset(values))
        elif operator == "Exists":
            out[key] = (False, mode, chosen)
        elif operator == "DoesNotExist":
            out[key] = (True, "in", frozenset())
        else:  # NotIn
            out[key] = (absent, "notin", chosen | frozenset(values))
    return out


def _requirements(key: str, absent: bool, mode: str, values: frozenset[str]) -> (
    list[Requirement] | None
):
    """The requirements for one key's (absent allowed, mode, values); None if inexpressible."""
    ordered = tuple(sorted(values))
    if mode == "in":
        if absent:
            return [(key, "DoesNotExist", ())] if not values else None
        return [(key, "In", ordered)]
    if absent:
        return [(key, "NotIn", ordered)] if values else []
    return [(key, "Exists", ())] + ([(key, "NotIn", ordered)] if values else [])


def merge(left: Term, right: Term) -> Term | None:
    """One term selecting exactly the nodes of both, when they differ on one key only and the
    union is a selector; else None."""
    lhs, rhs = _per_key(left), _per_key(right)
    any_key: tuple[bool, str, frozenset[str]] = (True, "notin", frozenset())
    differ = [k for k in sorted(set(lhs) | set(rhs)) if lhs.get(k, any_key) != rhs.get(k, any_key)]
    if len(differ) != 1:
        return None
    key = differ[0]
    (a1, m1, v1), (a2, m2, v2) = lhs.get(key, any_key), rhs.get(key, any_key)
    if m1 == m2 == "in":
        union = (a1 or a2, "in", v1 | v2)
    elif m1 == m2 == "notin":
        union = (a1 or a2, "notin", v1 & v2)
    else:
        inside, outside = (v1, v2) if m1 == "in" else (v2, v1)
        union = (a1 or a2, "notin", outside - inside)
    joined = _requirements(key, *union)
    if joined is None:
        return None
    rest = [r for r in left if r[0] != key]
    return tuple(sorted([*rest, *joined]))
