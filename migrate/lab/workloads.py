"""A minimal Deployment controller for the lab: status follows spec at once.

The real controller manager reports ``status.replicas`` / ``readyReplicas`` /
``observedGeneration`` once pods start or stop; migrate waits on those fields after scaling
MetalLB's controller and Cilium's operator. Here pods are not modelled, so the status simply
follows ``spec.replicas`` on every change.
"""

from __future__ import annotations

import contextlib
from typing import Any

from migrate.lab.store import ApiError, Store

Obj = dict[str, Any]
MANAGER = "kube-controller-manager"


def _wanted_status(obj: Obj) -> Obj:
    replicas = (obj.get("spec") or {}).get("replicas")
    replicas = 1 if replicas is None else int(replicas)
    generation = int((obj.get("metadata") or {}).get("generation") or 1)
    return {"observedGeneration": generation, "replicas": replicas,
            "readyReplicas": replicas, "availableReplicas": replicas,
            "updatedReplicas": replicas}


class DeploymentStatus:
    """Keeps every Deployment's status in line with its spec (subscribe it to a store)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        store.subscribe(self._on_event)
        for deployment in store.list("apps", "Deployment"):
            self._sync(deployment)

    def _on_event(self, event_type: str, obj: Obj, old: Obj | None) -> None:
        if event_type != "DELETED" and obj.get("kind") == "Deployment":
            self._sync(obj)

    def _sync(self, obj: Obj) -> None:
        wanted = _wanted_status(obj)
        status = obj.get("status") or {}
        if all(status.get(k) == v for k, v in wanted.items()):
            return
        current = self.store.try_get("apps", "Deployment", obj["metadata"]["name"],
                                     obj["metadata"].get("namespace"))
        if current is None:
            return
        current["status"] = {**(current.get("status") or {}), **_wanted_status(current)}
        current["metadata"].pop("resourceVersion", None)
        with contextlib.suppress(ApiError):  # a newer write follows and brings its own event
            self.store.update(current, subresource="status", manager=MANAGER)
