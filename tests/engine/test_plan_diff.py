"""The per-object diff a user reads in ``migrate plan``: one line per changed field."""

from __future__ import annotations

from migrate.plan.diff import action_changes
from migrate.plan.model import Action, Target


def test_a_changed_list_is_shown_once_with_its_old_and_new_value() -> None:
    action = Action("patch", Target("cilium.io/v2", "CiliumLoadBalancerIPPool", "general"),
                    "widen the pool",
                    before={"spec": {"blocks": ["10.0.0.0/30", "10.0.1.0/30"], "x": 1}},
                    after={"spec": {"blocks": ["10.0.2.0/30", "10.0.3.0/30", "10.0.4.0/30"],
                                    "x": 1}})
    changes = action_changes(action)
    assert [(c.sign, c.path) for c in changes] == [("~", "spec.blocks")]
    assert changes[0].old == ["10.0.0.0/30", "10.0.1.0/30"]
    assert changes[0].new == ["10.0.2.0/30", "10.0.3.0/30", "10.0.4.0/30"]
