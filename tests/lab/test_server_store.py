"""The lab's object store: the semantics the API server and the controller models rely on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import watch
from kubernetes.client.exceptions import ApiException

from migrate.lab import crds
from migrate.lab.store import ApiError, Clock, Store, parse_label_selector
from tests.lab.conftest import Lab, LabFactory

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def lb_service(name: str, namespace: str = "default") -> dict[str, Any]:
    """A LoadBalancer Service body."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}


def test_returned_objects_are_copies() -> None:
    store = Store(Clock.manual())
    created = store.create(lb_service("web"))
    created["spec"]["type"] = "ClusterIP"
    fetched = store.get("", "Service", "web", "default")
    fetched["metadata"]["labels"] = {"x": "y"}
    again = store.get("", "Service", "web", "default")
    assert again["spec"]["type"] == "LoadBalancer" and "labels" not in again["metadata"]


def test_resource_version_generation_and_timestamps_follow_the_clock() -> None:
    clock = Clock.manual()
    store = Store(clock)
    clock.advance(90)
    created = store.create(lb_service("web"))
    assert created["metadata"]["creationTimestamp"] == "2026-01-01T00:01:30Z"
    labelled = dict(created, metadata={**created["metadata"], "labels": {"a": "b"}})
    after_label = store.update(labelled)
    assert after_label["metadata"]["generation"] == 1, "metadata changes keep the generation"
    assert int(after_label["metadata"]["resourceVersion"]) > int(
        created["metadata"]["resourceVersion"])
    respec = dict(after_label, spec={**after_label["spec"], "type": "NodePort"})
    assert store.update(respec)["metadata"]["generation"] == 2


def test_subscribers_see_every_write_in_order_outside_the_lock() -> None:
    store = Store(Clock.manual())
    seen: list[tuple[str, str, str | None]] = []

    def on_event(event: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        # reading the store from a callback must not deadlock
        store.list("", "Service")
        seen.append((event, obj["metadata"]["name"],
                     old["metadata"]["resourceVersion"] if old else None))

    store.subscribe(on_event)
    created = store.create(lb_service("web"))
    updated = store.update(dict(created, metadata={**created["metadata"], "labels": {"a": "b"}}))
    store.delete("", "Service", "web", "default")
    assert [s[:2] for s in seen] == [("ADDED", "web"), ("MODIFIED", "web"), ("DELETED", "web")]
    assert seen[1][2] == created["metadata"]["resourceVersion"]
    assert seen[2][2] == updated["metadata"]["resourceVersion"]


def test_admission_hook_rejects_over_http(lab: Lab) -> None:
    def webhook(operation: str, new: dict[str, Any], old: dict[str, Any] | None) -> None:
        if new.get("apiVersion", "").startswith("metallb.io/") and operation != "DELETE":
            raise ApiError(500, "InternalError", 'Internal error occurred: failed calling '
                           'webhook "ipaddresspoolvalidationwebhook.metallb.io"')

    lab.store.add_admission_hook(webhook)
    lab.core.create_namespace({"metadata": {"name": "metallb-system"}})
    with pytest.raises(ApiException) as exc:
        lab.custom.create_namespaced_custom_object(
            "metallb.io", "v1beta1", "metallb-system", "ipaddresspools",
            {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
             "metadata": {"name": "p"}, "spec": {"addresses": ["192.0.2.0/28"]}})
    assert exc.value.status == 500 and "webhook" in json.loads(exc.value.body)["message"]
    assert lab.store.list("metallb.io", "IPAddressPool") == []
    lab.store.remove_admission_hook(webhook)
    lab.custom.create_namespaced_custom_object(
        "metallb.io", "v1beta1", "metallb-system", "ipaddresspools",
        {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
         "metadata": {"name": "p"}, "spec": {"addresses": ["192.0.2.0/28"]}})


def test_status_writes_record_each_ingress_change() -> None:
    store = Store(Clock.manual())
    svc = store.create(lb_service("web"))
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}
    svc = store.update(svc, subresource="status", manager="metallb-controller")
    store.clock.advance(5)
    svc["status"] = {"loadBalancer": {}}
    store.update(svc, subresource="status", manager="cilium-operator")
    writes = [(w.time, w.manager, w.before, w.after) for w in store.status_writes]
    assert writes == [(0.0, "metallb-controller", (), ("192.0.2.1",)),
                      (5.0, "cilium-operator", ("192.0.2.1",), ())]


def test_snapshot_loads_objects_with_their_metadata_and_crds() -> None:
    store, skipped = Store.from_snapshot([FIXTURES / "basic"])
    assert skipped == []
    web = store.get("", "Service", "web", "default")
    assert web["metadata"]["uid"] == "5a1e0000-0000-4000-8000-000000000001"
    assert web["status"]["loadBalancer"]["ingress"] == [{"ip": "192.0.2.1"}]
    assert "nodePort" not in web["spec"]["ports"][0], "snapshot objects are kept as recorded"
    assert store.status_writes == [], "loading is not a write the cluster made"
    assert store.get("", "Namespace", "metallb-system")["status"]["phase"] == "Active"
    crd_names = {c["metadata"]["name"] for c in
                 store.list("apiextensions.k8s.io", "CustomResourceDefinition")}
    assert {"ipaddresspools.metallb.io", "ciliumloadbalancerippools.cilium.io"} <= crd_names


def test_snapshot_own_crd_wins_and_unknown_kinds_are_reported(tmp_path: Path) -> None:
    (tmp_path / "crd.yaml").write_text(json.dumps({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "ipaddresspools.metallb.io"},
        "spec": {"group": "metallb.io", "scope": "Namespaced",
                 "names": {"kind": "IPAddressPool", "plural": "ipaddresspools"},
                 "versions": [{"name": "v1beta1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "properties": {
                                       "addresses": {"type": "array",
                                                     "items": {"type": "string"}},
                                       "autoAssign": {"type": "boolean",
                                                      "default": False}}}}}}}]}}))
    (tmp_path / "objects.yaml").write_text(
        "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: p, namespace: m}\n"
        "spec: {addresses: [192.0.2.0/28]}\n---\n"
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: {name: w}\n")
    store, skipped = Store.from_snapshot([tmp_path])
    assert store.get("metallb.io", "IPAddressPool", "p", "m")["spec"]["autoAssign"] is False
    assert len(skipped) == 1 and "Widget" in skipped[0]


def test_builtin_definitions_when_no_crd_folder(monkeypatch: pytest.MonkeyPatch,
                                                tmp_path: Path) -> None:
    monkeypatch.setenv(crds.CRDS_ENV, str(tmp_path))
    found = {c["metadata"]["name"]: c for c in crds.default_crds()}
    assert found["ipaddresspools.metallb.io"]["metadata"]["annotations"][
        "migrate.lab/definition"] == "built-in minimal"
    store = Store(Clock.manual())
    with pytest.raises(ApiError) as exc:
        store.create({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
                      "metadata": {"name": "x"},
                      "spec": {"allowFirstLastIPs": "Maybe", "blocks": []}})
    assert exc.value.status == 422
    pool = store.create({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                         "metadata": {"name": "p", "namespace": "m"},
                         "spec": {"addresses": ["192.0.2.0/28"]}})
    assert pool["spec"]["autoAssign"] is True


def test_real_crds_are_used_when_present(shared_dir: Path) -> None:
    found = {c["metadata"]["name"]: c for c in crds.default_crds()}
    assert "annotations" not in found["ipaddresspools.metallb.io"]["metadata"] or (
        "migrate.lab/definition" not in found["ipaddresspools.metallb.io"]["metadata"][
            "annotations"])
    bgppeers = crds.types_from_crd(found["bgppeers.metallb.io"])
    assert bgppeers.storage_version == "v1beta2" and set(bgppeers.versions) == {
        "v1beta1", "v1beta2"}


def test_creating_a_crd_over_http_serves_its_kind_and_deleting_removes_it(lab: Lab) -> None:
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Cluster",
                 "names": {"kind": "Widget", "plural": "widgets", "shortNames": ["wd"]},
                 "versions": [{"name": "v1", "served": True, "storage": True,
                               "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                   "spec": {"type": "object", "properties": {
                                       "size": {"type": "integer", "minimum": 1}}}}}}}]},
    }
    from kubernetes import client as k8s

    k8s.ApiextensionsV1Api(lab.api_client).create_custom_resource_definition(crd)
    lab.custom.create_cluster_custom_object("example.com", "v1", "widgets", {
        "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"},
        "spec": {"size": 2}})
    with pytest.raises(ApiException) as exc:
        lab.custom.create_cluster_custom_object("example.com", "v1", "widgets", {
            "apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "z"},
            "spec": {"size": 0}})
    assert exc.value.status == 422
    k8s.ApiextensionsV1Api(lab.api_client).delete_custom_resource_definition(
        "widgets.example.com")
    with pytest.raises(ApiException) as gone:
        lab.custom.list_cluster_custom_object("example.com", "v1", "widgets")
    assert gone.value.status == 404


def test_deleting_a_namespace_deletes_its_objects() -> None:
    store = Store(Clock.manual())
    store.create(lb_service("web", "team"))
    store.delete("", "Namespace", "team")
    assert store.list("", "Service", "team") == []
    with pytest.raises(ApiError) as exc:
        store.delete("", "Service", "web", "team")
    assert exc.value.status == 404


def test_watch_from_a_too_old_resource_version_is_gone(lab_factory: LabFactory) -> None:
    store = Store(Clock.manual(), event_log_size=5)
    for index in range(10):
        store.create(lb_service(f"s{index}"))
    with pytest.raises(ApiError) as exc:
        store.events_after(1, group="", kind="Service")
    assert exc.value.status == 410
    lab = lab_factory(store=store)
    with pytest.raises(ApiException) as gone:
        list(watch.Watch().stream(lab.core.list_namespaced_service, "default",
                                  resource_version="1", timeout_seconds=2))
    assert gone.value.status == 410, "the server sent an ERROR event with a 410 Status"


@pytest.mark.parametrize("text", ["a in (x", "a b", "=x"])
def test_malformed_label_selectors_are_400(text: str) -> None:
    with pytest.raises(ApiError) as exc:
        parse_label_selector(text)
    assert exc.value.status == 400


def test_a_no_op_update_writes_nothing() -> None:
    store = Store(Clock.manual())
    seen: list[str] = []
    store.subscribe(lambda event, obj, old: seen.append(event))
    created = store.create(lb_service("web"))
    again = store.update(created)
    assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    assert seen == ["ADDED"], "no MODIFIED event for a write that changes nothing"
