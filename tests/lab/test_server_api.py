"""The lab's API server through the official kubernetes client, over real HTTP."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes import watch as k8s_watch
from kubernetes.client.exceptions import ApiException

from tests.lab.conftest import Lab

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def service(name: str, namespace: str = "default", **labels: str) -> dict[str, Any]:
    """A LoadBalancer Service body."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {"type": "LoadBalancer", "selector": {"app": name},
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
    }


def ip_pool(name: str, addresses: Any) -> dict[str, Any]:
    """A MetalLB IPAddressPool body."""
    return {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": {"addresses": addresses}}


def cilium_pool(name: str, **spec: Any) -> dict[str, Any]:
    """A CiliumLoadBalancerIPPool body."""
    return {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": name}, "spec": {"blocks": [{"cidr": "10.0.10.0/24"}], **spec}}


@pytest.fixture(autouse=True)
def metallb_namespace(lab: Lab) -> None:
    """MetalLB's namespace exists, as in a cluster where MetalLB is installed."""
    lab.core.create_namespace({"metadata": {"name": "metallb-system"}})


def status_of(exc: ApiException) -> dict[str, Any]:
    """The Status body of a refused request."""
    body = json.loads(exc.body)
    assert body["kind"] == "Status"
    return dict(body)


def raw_get(lab: Lab, path: str) -> Any:
    """GET a path and decode the JSON."""
    response = lab.api_client.call_api("GET", lab.server.url + path,
                                       header_params={"Accept": "application/json"})
    response.read()
    return json.loads(response.data)


# --------------------------------------------------------------------------- discovery


def test_discovery_lists_groups_resources_and_short_names(lab: Lab) -> None:
    versions = k8s.CoreApi(lab.api_client).get_api_versions()
    assert versions.versions == ["v1"]
    groups = {g.name: g for g in k8s.ApisApi(lab.api_client).get_api_versions().groups}
    assert {"apps", "coordination.k8s.io", "discovery.k8s.io", "metallb.io", "cilium.io",
            "apiextensions.k8s.io", "admissionregistration.k8s.io"} <= set(groups)
    assert groups["metallb.io"].preferred_version.version == "v1beta2"
    core = {r.name: r for r in lab.core.get_api_resources().resources}
    assert core["services"].short_names == ["svc"] and core["services"].namespaced
    assert "services/status" in core and core["nodes"].namespaced is False
    cilium = raw_get(lab, "/apis/cilium.io/v2/")
    pools = next(r for r in cilium["resources"] if r["name"] == "ciliumloadbalancerippools")
    assert "ippools" in pools["shortNames"] and pools["namespaced"] is False
    apps = raw_get(lab, "/apis/apps/v1")
    scale = next(r for r in apps["resources"] if r["name"] == "deployments/scale")
    assert scale["kind"] == "Scale"
    assert k8s.VersionApi(lab.api_client).get_code().major == "1"


# --------------------------------------------------------------------------- CRUD


def test_create_get_list_and_delete(lab: Lab) -> None:
    created = lab.core.create_namespaced_service("default", service("web", app="web"))
    assert created.metadata.uid and created.metadata.creation_timestamp
    assert created.metadata.generation == 1 and int(created.metadata.resource_version) > 0
    assert created.spec.cluster_ip, "the server allocates a cluster IP"
    fetched = lab.core.read_namespaced_service("web", "default")
    assert fetched.metadata.uid == created.metadata.uid
    listed = lab.core.list_service_for_all_namespaces()
    assert [s.metadata.name for s in listed.items] == ["web"]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)
    lab.core.delete_namespaced_service("web", "default")
    with pytest.raises(ApiException) as missing:
        lab.core.read_namespaced_service("web", "default")
    assert missing.value.status == 404
    assert status_of(missing.value)["reason"] == "NotFound"


def test_create_twice_is_409_already_exists(lab: Lab) -> None:
    lab.core.create_namespaced_service("default", service("web"))
    with pytest.raises(ApiException) as exc:
        lab.core.create_namespaced_service("default", service("web"))
    assert exc.value.status == 409
    assert status_of(exc.value)["reason"] == "AlreadyExists"


def test_stale_replace_is_409_conflict(lab: Lab) -> None:
    first = lab.core.create_namespaced_service("default", service("web"))
    body = lab.api_client.sanitize_for_serialization(first)
    fresh = dict(body, metadata=dict(body["metadata"], labels={"v": "2"}))
    lab.core.replace_namespaced_service("web", "default", fresh)
    stale = dict(body, metadata=dict(body["metadata"], labels={"v": "stale"}))
    with pytest.raises(ApiException) as exc:
        lab.core.replace_namespaced_service("web", "default", stale)
    assert exc.value.status == 409
    assert status_of(exc.value)["reason"] == "Conflict"
    assert lab.core.read_namespaced_service("web", "default").metadata.labels == {"v": "2"}


def test_create_in_missing_namespace_and_delete_there_are_404(lab: Lab) -> None:
    with pytest.raises(ApiException) as create:
        lab.core.create_namespaced_config_map("nowhere", {"metadata": {"name": "c"}})
    assert create.value.status == 404 and "nowhere" in status_of(create.value)["message"]
    with pytest.raises(ApiException) as delete:
        lab.core.delete_namespaced_config_map("c", "nowhere")
    assert delete.value.status == 404


def test_delete_returns_the_object(lab: Lab) -> None:
    lab.core.create_namespaced_config_map("default", {"metadata": {"name": "c"},
                                                      "data": {"k": "v"}})
    response = lab.api_client.call_api(
        "DELETE", lab.server.url + "/api/v1/namespaces/default/configmaps/c",
        header_params={"Accept": "application/json"})
    response.read()
    deleted = json.loads(response.data)
    assert deleted["metadata"]["name"] == "c" and deleted["data"] == {"k": "v"}


# --------------------------------------------------------------------------- patches


def test_merge_patch_on_service(lab: Lab) -> None:
    lab.core.create_namespaced_service("default", service("web", keep="yes"))
    patched = lab.core.patch_namespaced_service(
        "web", "default", {"metadata": {"labels": {"new": "1", "keep": None}}},
        _content_type=MERGE)
    assert patched.metadata.labels == {"new": "1"}


def raw_service(lab: Lab, name: str) -> dict[str, Any]:
    """A Service read with the official client, as the JSON the server sent (not the model,
    which cannot tell an absent map from an empty one)."""
    response = lab.core.read_namespaced_service(name, "default", _preload_content=False)
    return dict(json.loads(response.data))


def test_merge_patch_removing_the_last_label_leaves_no_labels_key(lab: Lab) -> None:
    lab.core.create_namespaced_service("default", service("web", only="label"))
    lab.core.patch_namespaced_service(
        "web", "default", {"metadata": {"labels": {"only": None}}}, _content_type=MERGE)
    metadata = raw_service(lab, "web")["metadata"]
    assert "labels" not in metadata
    assert "only" not in json.dumps(metadata)


def test_empty_labels_and_annotations_are_dropped_on_create_and_replace(lab: Lab) -> None:
    body = service("web")
    body["metadata"]["annotations"] = {}
    created = lab.core.create_namespaced_service("default", body)
    assert created.metadata.labels is None and created.metadata.annotations is None
    current = raw_service(lab, "web")
    assert "labels" not in current["metadata"] and "annotations" not in current["metadata"]
    current["metadata"]["labels"] = {"team": "a"}
    current["metadata"]["annotations"] = {}
    lab.core.replace_namespaced_service("web", "default", current)
    replaced = raw_service(lab, "web")["metadata"]
    assert replaced["labels"] == {"team": "a"}
    assert "annotations" not in replaced


def test_strategic_merge_patch_merges_service_ports_by_port(lab: Lab) -> None:
    lab.core.create_namespaced_service("default", service("web"))
    patched = lab.core.patch_namespaced_service(
        "web", "default",
        {"spec": {"ports": [{"port": 443, "name": "https"},
                            {"port": 80, "targetPort": 9090}]}},
        _content_type=STRATEGIC)
    ports = {p.port: p for p in patched.spec.ports}
    assert set(ports) == {80, 443}
    assert ports[80].name == "http" and ports[80].target_port == 9090


def test_strategic_merge_patch_deletes_a_list_element(lab: Lab) -> None:
    body = service("web")
    body["spec"]["ports"].append({"name": "https", "port": 443})
    lab.core.create_namespaced_service("default", body)
    patched = lab.core.patch_namespaced_service(
        "web", "default", {"spec": {"ports": [{"port": 443, "$patch": "delete"}]}},
        _content_type=STRATEGIC)
    assert [p.port for p in patched.spec.ports] == [80]


def test_json_patch_on_a_custom_resource(lab: Lab) -> None:
    lab.custom.create_namespaced_custom_object(
        "metallb.io", "v1beta1", "metallb-system", "ipaddresspools",
        ip_pool("pool", ["10.0.0.0/24"]))
    patched = lab.custom.patch_namespaced_custom_object(
        "metallb.io", "v1beta1", "metallb-system", "ipaddresspools", "pool",
        [{"op": "add", "path": "/spec/addresses/-", "value": "10.0.1.0/24"},
         {"op": "replace", "path": "/spec/autoAssign", "value": False}],
        _content_type=JSON_PATCH)
    assert patched["spec"]["addresses"] == ["10.0.0.0/24", "10.0.1.0/24"]
    assert patched["spec"]["autoAssign"] is False


def test_strategic_merge_on_a_custom_resource_is_415(lab: Lab) -> None:
    lab.custom.create_cluster_custom_object("cilium.io", "v2alpha1",
                                            "ciliumloadbalancerippools", cilium_pool("p"))
    with pytest.raises(ApiException) as exc:
        lab.custom.patch_cluster_custom_object(
            "cilium.io", "v2alpha1", "ciliumloadbalancerippools", "p",
            {"spec": {"disabled": True}}, _content_type=STRATEGIC)
    assert exc.value.status == 415
    assert status_of(exc.value)["reason"] == "UnsupportedMediaType"


def test_merge_patch_on_a_custom_resource_and_version_served_as_asked(lab: Lab) -> None:
    lab.custom.create_cluster_custom_object("cilium.io", "v2alpha1",
                                            "ciliumloadbalancerippools", cilium_pool("p"))
    patched = lab.custom.patch_cluster_custom_object(
        "cilium.io", "v2alpha1", "ciliumloadbalancerippools", "p",
        {"spec": {"disabled": True}}, _content_type=MERGE)
    assert patched["apiVersion"] == "cilium.io/v2alpha1" and patched["spec"]["disabled"] is True
    at_v2 = lab.custom.get_cluster_custom_object("cilium.io", "v2",
                                                 "ciliumloadbalancerippools", "p")
    assert at_v2["apiVersion"] == "cilium.io/v2"


def test_server_side_apply_creates_then_merges_and_records_the_manager(lab: Lab) -> None:
    body = cilium_pool("applied")
    lab.custom.patch_cluster_custom_object(
        "cilium.io", "v2alpha1", "ciliumloadbalancerippools", "applied", body,
        field_manager="migrate", _content_type=APPLY)
    again = lab.custom.patch_cluster_custom_object(
        "cilium.io", "v2alpha1", "ciliumloadbalancerippools", "applied",
        {**body, "spec": {**body["spec"], "allowFirstLastIPs": "No"}},
        field_manager="migrate", _content_type=APPLY)
    assert again["spec"]["allowFirstLastIPs"] == "No"
    managers = {(m["manager"], m["operation"]) for m in again["metadata"]["managedFields"]}
    assert ("migrate", "Apply") in managers


def test_field_manager_is_recorded(lab: Lab) -> None:
    lab.core.create_namespaced_service("default", service("web"), field_manager="migrate")
    patched = lab.core.patch_namespaced_service(
        "web", "default", {"metadata": {"labels": {"a": "b"}}}, field_manager="other",
        _content_type=MERGE)
    managers = [m.manager for m in patched.metadata.managed_fields]
    assert managers == ["migrate", "other"]


# --------------------------------------------------------------------------- validation


def test_schema_invalid_ipaddresspool_is_422_with_field_path(lab: Lab) -> None:
    with pytest.raises(ApiException) as exc:
        lab.custom.create_namespaced_custom_object(
            "metallb.io", "v1beta1", "metallb-system", "ipaddresspools", ip_pool("bad", 5))
    status = status_of(exc.value)
    assert exc.value.status == 422 and status["reason"] == "Invalid"
    assert [c["field"] for c in status["details"]["causes"]] == ["spec.addresses"]
    assert "must be of type array" in status["message"]


def test_schema_invalid_cilium_pool_enum_is_422(lab: Lab) -> None:
    with pytest.raises(ApiException) as exc:
        lab.custom.create_cluster_custom_object(
            "cilium.io", "v2alpha1", "ciliumloadbalancerippools",
            cilium_pool("bad", allowFirstLastIPs="Maybe"))
    status = status_of(exc.value)
    assert exc.value.status == 422
    cause = status["details"]["causes"][0]
    assert cause["field"] == "spec.allowFirstLastIPs"
    assert cause["reason"] == "FieldValueNotSupported"
    with pytest.raises(ApiException):
        lab.custom.get_cluster_custom_object("cilium.io", "v2", "ciliumloadbalancerippools",
                                             "bad")


def test_crd_defaults_are_applied(lab: Lab) -> None:
    created = lab.custom.create_namespaced_custom_object(
        "metallb.io", "v1beta1", "metallb-system", "ipaddresspools",
        ip_pool("pool", ["10.0.0.0/24"]))
    assert created["spec"]["autoAssign"] is True
    assert created["spec"]["avoidBuggyIPs"] is False


def test_invalid_update_is_422_and_leaves_the_object(lab: Lab) -> None:
    lab.custom.create_namespaced_custom_object(
        "metallb.io", "v1beta1", "metallb-system", "ipaddresspools",
        ip_pool("pool", ["10.0.0.0/24"]))
    with pytest.raises(ApiException) as exc:
        lab.custom.patch_namespaced_custom_object(
            "metallb.io", "v1beta1", "metallb-system", "ipaddresspools", "pool",
            {"spec": {"autoAssign": "sometimes"}}, _content_type=MERGE)
    assert exc.value.status == 422
    kept = lab.custom.get_namespaced_custom_object(
        "metallb.io", "v1beta1", "metallb-system", "ipaddresspools", "pool")
    assert kept["spec"]["autoAssign"] is True


# --------------------------------------------------------------------------- reading


def test_pagination_with_limit_and_continue(lab: Lab) -> None:
    for index in range(7):
        lab.core.create_namespaced_service("default", service(f"svc-{index}"))
    seen: list[str] = []
    token: str | None = None
    pages = 0
    while True:
        page = lab.core.list_service_for_all_namespaces(limit=3, _continue=token)
        pages += 1
        seen += [s.metadata.name for s in page.items]
        token = page.metadata.var_continue
        if not token:
            break
        assert page.metadata.remaining_item_count == 7 - len(seen)
    assert pages == 3
    assert seen == sorted(f"svc-{i}" for i in range(7))


def test_bad_continue_token_is_400(lab: Lab) -> None:
    with pytest.raises(ApiException) as exc:
        lab.core.list_service_for_all_namespaces(limit=1, _continue="not-a-token")
    assert exc.value.status == 400


@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        ("tier=web", {"a", "b"}),
        ("tier==web", {"a", "b"}),
        ("tier!=web", {"c", "d"}),
        ("tier in (web,db)", {"a", "b", "c"}),
        ("tier notin (web)", {"c", "d"}),
        ("tier", {"a", "b", "c"}),
        ("!tier", {"d"}),
        ("tier=web,zone=x", {"a"}),
    ],
)
def test_label_selectors(lab: Lab, selector: str, expected: set[str]) -> None:
    lab.core.create_namespaced_service("default", service("a", tier="web", zone="x"))
    lab.core.create_namespaced_service("default", service("b", tier="web"))
    lab.core.create_namespaced_service("default", service("c", tier="db"))
    lab.core.create_namespaced_service("default", service("d"))
    found = lab.core.list_namespaced_service("default", label_selector=selector)
    assert {s.metadata.name for s in found.items} == expected


def test_field_selectors(lab: Lab) -> None:
    lab.core.create_namespaced_service("default", service("lb"))
    plain = service("plain")
    plain["spec"]["type"] = "ClusterIP"
    lab.core.create_namespaced_service("default", plain)
    lab.core.create_namespace({"metadata": {"name": "other"}})
    lab.core.create_namespaced_service("other", service("lb", namespace="other"))
    by_type = lab.core.list_service_for_all_namespaces(field_selector="spec.type=LoadBalancer")
    assert {(s.metadata.namespace, s.metadata.name) for s in by_type.items} == {
        ("default", "lb"), ("other", "lb")}
    by_name = lab.core.list_service_for_all_namespaces(
        field_selector="metadata.name=lb,metadata.namespace!=other")
    assert [(s.metadata.namespace, s.metadata.name) for s in by_name.items] == [
        ("default", "lb")]


# --------------------------------------------------------------------------- dry run


def test_dry_run_leaves_nothing(lab: Lab) -> None:
    before = lab.store.resource_version()
    created = lab.core.create_namespaced_service("default", service("web"), dry_run="All")
    assert created.metadata.name == "web"
    assert lab.core.list_namespaced_service("default").items == []
    lab.core.create_namespaced_service("default", service("real"))
    lab.core.patch_namespaced_service("real", "default", {"metadata": {"labels": {"x": "y"}}},
                                      dry_run="All", _content_type=MERGE)
    lab.core.delete_namespaced_service("real", "default", dry_run="All")
    kept = lab.core.read_namespaced_service("real", "default")
    assert "x" not in (kept.metadata.labels or {})
    assert lab.store.resource_version() == before + 1, "only the real create wrote"


# --------------------------------------------------------------------------- subresources


def test_deployment_scale_subresource(lab: Lab) -> None:
    lab.core.create_namespace({"metadata": {"name": "metallb-system-test"}})
    lab.apps.create_namespaced_deployment("metallb-system-test", {
        "metadata": {"name": "controller"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "c"}},
                 "template": {"metadata": {"labels": {"app": "c"}},
                              "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    scale = lab.apps.read_namespaced_deployment_scale("controller", "metallb-system-test")
    assert scale.spec.replicas == 1 and scale.kind == "Scale"
    lab.apps.patch_namespaced_deployment_scale("controller", "metallb-system-test",
                                               {"spec": {"replicas": 0}}, _content_type=MERGE)
    deployment = lab.apps.read_namespaced_deployment("controller", "metallb-system-test")
    assert deployment.spec.replicas == 0
    replaced = lab.apps.replace_namespaced_deployment_scale(
        "controller", "metallb-system-test",
        {"metadata": {"name": "controller"}, "spec": {"replicas": 3}})
    assert replaced.spec.replicas == 3
    assert lab.apps.read_namespaced_deployment("controller",
                                               "metallb-system-test").spec.replicas == 3


def test_service_status_subresource(lab: Lab) -> None:
    lab.core.create_namespaced_service("default", service("web"))
    ingress = {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}}
    lab.core.patch_namespaced_service_status("web", "default", ingress,
                                             field_manager="metallb-controller",
                                             _content_type=MERGE)
    svc = lab.core.read_namespaced_service("web", "default")
    assert svc.status.load_balancer.ingress[0].ip == "192.0.2.10"
    # a write to the main resource cannot change status ...
    lab.core.patch_namespaced_service(
        "web", "default", {"status": {"loadBalancer": {"ingress": []}}, "metadata": {
            "labels": {"a": "b"}}}, _content_type=MERGE)
    svc = lab.core.read_namespaced_service("web", "default")
    assert svc.status.load_balancer.ingress[0].ip == "192.0.2.10"
    assert svc.metadata.labels == {"a": "b"}
    # ... and a write to status cannot change spec
    lab.core.patch_namespaced_service_status("web", "default", {"spec": {"type": "ClusterIP"}},
                                             _content_type=MERGE)
    assert lab.core.read_namespaced_service("web", "default").spec.type == "LoadBalancer"
    writes = [w for w in lab.store.status_writes if w.name == "web"]
    assert writes[0].manager == "metallb-controller" and writes[0].after == ("192.0.2.10",)


# --------------------------------------------------------------------------- watch


def test_watch_receives_events_from_a_resource_version(lab: Lab) -> None:
    start = lab.core.list_namespaced_service("default").metadata.resource_version
    received: list[tuple[str, str]] = []
    ready = threading.Event()

    def watch_services() -> None:
        watcher = k8s_watch.Watch()
        ready.set()
        for event in watcher.stream(lab.core.list_namespaced_service, "default",
                                    resource_version=start, timeout_seconds=10):
            received.append((event["type"], event["object"].metadata.name))
            if len(received) == 2:
                watcher.stop()

    thread = threading.Thread(target=watch_services)
    thread.start()
    ready.wait(5)
    lab.core.create_namespaced_service("default", service("web"))
    lab.core.delete_namespaced_service("web", "default")
    thread.join(15)
    assert not thread.is_alive()
    assert received == [("ADDED", "web"), ("DELETED", "web")]


def test_watch_without_resource_version_lists_existing_first(lab: Lab) -> None:
    lab.custom.create_cluster_custom_object("cilium.io", "v2alpha1",
                                            "ciliumloadbalancerippools", cilium_pool("old"))
    watcher = k8s_watch.Watch()
    events = []
    for event in watcher.stream(lab.custom.list_cluster_custom_object, "cilium.io", "v2",
                                "ciliumloadbalancerippools", timeout_seconds=1):
        events.append((event["type"], event["object"]["metadata"]["name"]))
    assert events == [("ADDED", "old")]


def test_watch_of_leases_and_deployments_ends_at_timeout(lab: Lab) -> None:
    lab.core.create_namespace({"metadata": {"name": "cilium-test"}})
    k8s.CoordinationV1Api(lab.api_client).create_namespaced_lease(
        "kube-system", {"metadata": {"name": "cilium-l2announce-default-web"},
                        "spec": {"holderIdentity": "node-1"}})
    watcher = k8s_watch.Watch()
    leases = [e["object"].spec.holder_identity for e in watcher.stream(
        k8s.CoordinationV1Api(lab.api_client).list_namespaced_lease, "kube-system",
        timeout_seconds=1)]
    assert leases == ["node-1"]
    deployments = list(k8s_watch.Watch().stream(lab.apps.list_deployment_for_all_namespaces,
                                                timeout_seconds=1))
    assert deployments == []


def test_watch_with_a_selector_sees_objects_enter_and_leave(lab: Lab) -> None:
    start = lab.core.list_namespaced_service("default").metadata.resource_version
    lab.core.create_namespaced_service("default", service("web"))
    for value in ("yes", "no"):
        lab.core.patch_namespaced_service("web", "default",
                                          {"metadata": {"labels": {"migrate": value}}},
                                          _content_type=MERGE)
    events = [(e["type"], e["object"].metadata.name) for e in k8s_watch.Watch().stream(
        lab.core.list_namespaced_service, "default", label_selector="migrate=yes",
        resource_version=start, timeout_seconds=1)]
    assert events == [("ADDED", "web"), ("DELETED", "web")]


# --------------------------------------------------------------------------- unknown fields


def test_unknown_fields_of_a_custom_resource_are_pruned(lab: Lab) -> None:
    body = cilium_pool("typo")
    body["spec"]["serviceSelectr"] = {"matchLabels": {"a": "b"}}
    body["spec"]["blocks"][0]["cidrr"] = "10.0.0.0/8"
    created = lab.custom.create_cluster_custom_object("cilium.io", "v2alpha1",
                                                      "ciliumloadbalancerippools", body)
    assert "serviceSelectr" not in created["spec"]
    assert created["spec"]["blocks"] == [{"cidr": "10.0.10.0/24"}]


def test_strict_field_validation_refuses_unknown_fields(lab: Lab) -> None:
    body = cilium_pool("typo")
    body["spec"]["serviceSelectr"] = {}
    with pytest.raises(ApiException) as exc:
        lab.custom.create_cluster_custom_object("cilium.io", "v2alpha1",
                                                "ciliumloadbalancerippools", body,
                                                field_validation="Strict")
    assert exc.value.status == 400
    assert 'unknown field "spec.serviceSelectr"' in status_of(exc.value)["message"]
    lab.custom.create_cluster_custom_object("cilium.io", "v2alpha1",
                                            "ciliumloadbalancerippools", body,
                                            field_validation="Warn")
    assert lab.store.get("cilium.io", "CiliumLoadBalancerIPPool", "typo")["spec"].get(
        "serviceSelectr") is None


def test_strategic_merge_on_webhook_configuration_merges_webhooks_by_name(lab: Lab) -> None:
    admission = k8s.AdmissionregistrationV1Api(lab.api_client)

    def webhook(name: str) -> dict[str, Any]:
        return {"name": name, "failurePolicy": "Fail", "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "clientConfig": {"service": {"name": "metallb-webhook-service",
                                             "namespace": "metallb-system"}}}

    admission.create_validating_webhook_configuration({
        "metadata": {"name": "metallb-webhook-configuration"},
        "webhooks": [webhook("ipaddresspoolvalidationwebhook.metallb.io"),
                     webhook("l2advertisementvalidationwebhook.metallb.io")]})
    patched = admission.patch_validating_webhook_configuration(
        "metallb-webhook-configuration",
        {"webhooks": [{"name": "ipaddresspoolvalidationwebhook.metallb.io",
                       "failurePolicy": "Ignore"}]},
        _content_type=STRATEGIC)
    policies = {w.name: w.failure_policy for w in patched.webhooks}
    assert policies == {"ipaddresspoolvalidationwebhook.metallb.io": "Ignore",
                        "l2advertisementvalidationwebhook.metallb.io": "Fail"}


def test_concurrent_patches_lose_no_update(lab: Lab) -> None:
    lab.core.create_namespaced_config_map("default", {"metadata": {"name": "shared"}})

    def writer(index: int) -> None:
        for step in range(10):
            lab.core.patch_namespaced_config_map(
                "shared", "default", {"data": {f"w{index}-{step}": "x"}}, _content_type=MERGE)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    data = lab.core.read_namespaced_config_map("shared", "default").data
    assert len(data) == 40
