"""The lab refuses what kube-apiserver refuses: label keys and values, names, annotation size.

Through the official kubernetes client over HTTP: every refusal is an ``ApiException`` with
status 422 whose body is a ``Status`` (reason Invalid) naming each field in ``details.causes``,
worded as kube-apiserver words it, whatever the verb (create, replace, every patch type,
server-side dry run); and migrate's own adapter shows the refused field to the user.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException

from migrate.errors import ClusterError
from migrate.kube import Kube, KubeError
from migrate.lab.store import Store
from tests.lab.conftest import Lab, LabFactory

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"

LONG = "x" * 64
"""One character more than a label value may have."""
LABEL_VALUE_REGEX = ("a valid label must be an empty string or consist of alphanumeric"
                     " characters, '-', '_' or '.', and must start and end with an alphanumeric"
                     " character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for"
                     " validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")


def service(name: str = "web", labels: dict[str, str] | None = None,
            annotations: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "labels": labels or {}}
    if annotations is not None:
        metadata["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Service", "metadata": metadata,
            "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                     "ports": [{"port": 80}]}}


def refusal(call: Callable[[], Any]) -> dict[str, Any]:
    """The Status body of a call that must be refused with 422 Invalid."""
    with pytest.raises(ApiException) as exc:
        call()
    assert exc.value.status == 422, exc.value.body
    body = json.loads(exc.value.body)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert body["reason"] == "Invalid" and body["code"] == 422
    return dict(body)


def test_a_label_value_of_64_characters_is_refused_as_kube_apiserver_words_it(lab: Lab) -> None:
    body = refusal(lambda: lab.core.create_namespaced_service(
        "default", service(labels={"lbmigrate.io/pool": LONG})))
    assert body["message"] == (f'Service "web" is invalid: metadata.labels: Invalid value:'
                               f' "{LONG}": must be no more than 63 characters')
    assert body["details"] == {
        "name": "web", "group": "", "kind": "Service",
        "causes": [{"reason": "FieldValueInvalid", "field": "metadata.labels",
                    "message": f'Invalid value: "{LONG}": must be no more than 63 characters'}],
    }
    assert lab.store.try_get("", "Service", "web", "default") is None


def test_label_values_at_the_limits_are_stored(lab: Lab) -> None:
    labels = {"a": "x" * 63, "b": "", "c": "A-b_c.9", "example.com/d": "1"}
    created = lab.core.create_namespaced_service("default", service(labels=labels))
    assert created.metadata.labels == labels


@pytest.mark.parametrize(("value", "detail"), [
    ("-leading", LABEL_VALUE_REGEX),
    ("trailing.", LABEL_VALUE_REGEX),
    ("two words", LABEL_VALUE_REGEX),
    ("é", LABEL_VALUE_REGEX),
])
def test_label_values_outside_the_alphabet_are_refused(lab: Lab, value: str, detail: str) -> None:
    body = refusal(lambda: lab.core.create_namespaced_service(
        "default", service(labels={"k": value})))
    assert body["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "field": "metadata.labels",
         "message": f"Invalid value: {json.dumps(value, ensure_ascii=False)}: {detail}"}]


def test_a_long_value_outside_the_alphabet_has_both_causes_in_one_message(lab: Lab) -> None:
    value = "-" + "x" * 70
    body = refusal(lambda: lab.core.create_namespaced_service(
        "default", service(labels={"k": value})))
    causes = body["details"]["causes"]
    assert [c["message"] for c in causes] == [
        f'Invalid value: "{value}": must be no more than 63 characters',
        f'Invalid value: "{value}": {LABEL_VALUE_REGEX}']
    assert body["message"] == (
        f'Service "web" is invalid: [metadata.labels: {causes[0]["message"]},'
        f' metadata.labels: {causes[1]["message"]}]')


@pytest.mark.parametrize(("key", "detail"), [
    ("k" * 64, "name part must be no more than 63 characters"),
    ("example.com/", "name part must be non-empty"),
    ("/name", "prefix part must be non-empty"),
    ("Example.com/name", "prefix part a lowercase RFC 1123 subdomain must consist of lower case"
     " alphanumeric characters, '-' or '.', and must start and end with an alphanumeric"
     " character (e.g. 'example.com', regex used for validation is"
     " '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
    ("a/b/c", "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and"
     " must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or"
     " '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
     " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"),
])
def test_label_keys_must_be_qualified_names(lab: Lab, key: str, detail: str) -> None:
    body = refusal(lambda: lab.core.create_namespaced_service(
        "default", service(labels={key: "v"})))
    assert body["details"]["causes"][0] == {
        "reason": "FieldValueInvalid", "field": "metadata.labels",
        "message": f'Invalid value: "{key}": {detail}'}


def test_a_prefix_may_be_a_253_character_subdomain(lab: Lab) -> None:
    prefix = ".".join(["a" * 63] * 3 + ["b" * 61])
    assert len(prefix) == 253
    lab.core.create_namespaced_service("default", service(labels={f"{prefix}/name": "v"}))
    body = refusal(lambda: lab.core.create_namespaced_service(
        "default", service("other", labels={f"c{prefix}/name": "v"})))
    assert body["details"]["causes"][0]["message"].endswith(
        "prefix part must be no more than 253 characters")


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize(("name", "detail"), [
    ("Web", "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start"
     " with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',"
     "  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"),
    ("1web", "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start"
     " with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',"
     "  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"),
    ("w" * 64, "must be no more than 63 characters"),
])
def test_service_names_are_dns_1035_labels(lab: Lab, name: str, detail: str) -> None:
    body = refusal(lambda: lab.core.create_namespaced_service("default", service(name)))
    assert body["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "field": "metadata.name",
         "message": f'Invalid value: "{name}": {detail}'}]
    assert body["message"].startswith(f'Service "{name}" is invalid: metadata.name: ')


def test_other_kinds_take_dns_subdomain_names_and_namespaces_dns_labels(lab: Lab) -> None:
    lab.core.create_namespaced_config_map("default", {"metadata": {"name": "1web.example"}})
    body = refusal(lambda: lab.core.create_namespace({"metadata": {"name": "a.b"}}))
    assert body["details"]["causes"] == [
        {"reason": "FieldValueInvalid", "field": "metadata.name",
         "message": 'Invalid value: "a.b": must not contain dots'}]
    body = refusal(lambda: lab.core.create_namespaced_config_map(
        "default", {"metadata": {"name": "Upper"}}))
    assert body["details"]["causes"][0]["field"] == "metadata.name"


def test_a_custom_resource_name_may_be_longer_than_any_label_value(lab: Lab) -> None:
    long_name = "pool-" + "a" * 66
    assert len(long_name) == 71
    pool = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": long_name}, "spec": {"blocks": [{"cidr": "10.0.10.0/24"}]}}
    lab.custom.create_cluster_custom_object("cilium.io", "v2alpha1",
                                            "ciliumloadbalancerippools", pool)
    too_long = dict(pool, metadata={"name": "p" * 254})
    body = refusal(lambda: lab.custom.create_cluster_custom_object(
        "cilium.io", "v2alpha1", "ciliumloadbalancerippools", too_long))
    assert body["message"] == (f'CiliumLoadBalancerIPPool.cilium.io "{"p" * 254}" is invalid:'
                               f' metadata.name: Invalid value: "{"p" * 254}": must be no more'
                               " than 253 characters")
    labelled = dict(pool, metadata={"name": "labelled", "labels": {"k": long_name}})
    body = refusal(lambda: lab.custom.create_cluster_custom_object(
        "cilium.io", "v2alpha1", "ciliumloadbalancerippools", labelled))
    assert body["details"]["kind"] == "CiliumLoadBalancerIPPool"
    assert body["details"]["group"] == "cilium.io"
    assert body["details"]["causes"][0]["field"] == "metadata.labels"


def test_a_generated_name_is_validated(lab: Lab) -> None:
    created = lab.core.create_namespaced_config_map("default",
                                                    {"metadata": {"generateName": "cm-"}})
    assert created.metadata.name.startswith("cm-")
    body = refusal(lambda: lab.core.create_namespaced_config_map(
        "default", {"metadata": {"generateName": "CM-"}}))
    assert "metadata.generateName" in [c["field"] for c in body["details"]["causes"]]


# --------------------------------------------------------------------------- annotations


def test_annotations_are_limited_to_256_kib_in_all(lab: Lab) -> None:
    limit = 256 * 1024
    exactly = {"a": "x" * (limit - 1 - len("b") - 10), "b": "y" * 10}
    lab.core.create_namespaced_service("default", service(annotations=exactly))
    over = {"a": "x" * (limit - 1), "bb": ""}
    body = refusal(lambda: lab.core.create_namespaced_service(
        "default", service("over", annotations=over)))
    assert body["details"]["causes"] == [
        {"reason": "FieldValueTooLong", "field": "metadata.annotations",
         "message": "Too long: must have at most 262144 bytes"}]
    assert body["message"] == ('Service "over" is invalid: metadata.annotations: Too long: must'
                               " have at most 262144 bytes")


def test_annotation_keys_are_qualified_names_of_any_case(lab: Lab) -> None:
    lab.core.create_namespaced_service("default", service(annotations={"Example.COM/Key": "v"}))
    body = refusal(lambda: lab.core.create_namespaced_service(
        "default", service("other", annotations={"bad key": "v"})))
    assert body["details"]["causes"][0]["field"] == "metadata.annotations"
    assert body["details"]["causes"][0]["message"].startswith('Invalid value: "bad key": name'
                                                              " part must consist of")


# --------------------------------------------------------------------------- every verb


@pytest.fixture
def web(lab: Lab) -> k8s.V1Service:
    return lab.core.create_namespaced_service("default", service(labels={"app": "web"}))


def _unchanged(lab: Lab, before: k8s.V1Service) -> None:
    after = lab.core.read_namespaced_service("web", "default")
    assert after.metadata.resource_version == before.metadata.resource_version
    assert after.metadata.labels == {"app": "web"}


@pytest.mark.parametrize(("content_type", "patch"), [
    (MERGE, {"metadata": {"labels": {"lbmigrate.io/pool": LONG}}}),
    (STRATEGIC, {"metadata": {"labels": {"lbmigrate.io/pool": LONG}}}),
    (JSON_PATCH, [{"op": "add", "path": "/metadata/labels/lbmigrate.io~1pool", "value": LONG}]),
    (APPLY, {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "web", "labels": {"lbmigrate.io/pool": LONG}}}),
])
def test_every_patch_type_is_validated(lab: Lab, web: k8s.V1Service, content_type: str,
                                       patch: Any) -> None:
    extra = {"field_manager": "test"} if content_type == APPLY else {}
    body = refusal(lambda: lab.core.patch_namespaced_service(
        "web", "default", patch, _content_type=content_type, **extra))
    assert body["details"]["causes"][0]["field"] == "metadata.labels"
    _unchanged(lab, web)


def test_replace_and_server_side_dry_run_are_validated(lab: Lab, web: k8s.V1Service) -> None:
    body = lab.api_client.sanitize_for_serialization(web)
    body["metadata"]["labels"] = {"lbmigrate.io/pool": LONG}
    refusal(lambda: lab.core.replace_namespaced_service("web", "default", body))
    refusal(lambda: lab.core.patch_namespaced_service(
        "web", "default", {"metadata": {"labels": {"k": LONG}}}, dry_run="All",
        _content_type=MERGE))
    refusal(lambda: lab.core.create_namespaced_service(
        "default", service("new", labels={"k": LONG}), dry_run="All"))
    _unchanged(lab, web)
    accepted = lab.core.patch_namespaced_service(
        "web", "default", {"metadata": {"labels": {"k": "x" * 63}}}, dry_run="All",
        _content_type=MERGE)
    assert accepted.metadata.labels["k"] == "x" * 63
    _unchanged(lab, web)


def test_a_label_removed_by_a_patch_is_not_validated(lab: Lab, web: k8s.V1Service) -> None:
    patched = lab.core.patch_namespaced_service(
        "web", "default", {"metadata": {"labels": {"app": None, "k": "v"}}},
        _content_type=MERGE)
    assert patched.metadata.labels == {"k": "v"}


def test_a_label_that_is_not_a_string_does_not_decode(lab: Lab) -> None:
    body = service()
    body["metadata"]["labels"] = {"k": 1}
    with pytest.raises(KubeError) as exc:  # the typed client would not even send it
        Kube(lab.api_client).request("POST", "/api/v1/namespaces/default/services", body=body)
    assert exc.value.status == 400 and exc.value.failure.reason == "BadRequest"
    assert exc.value.failure.message == (
        'Service in version "v1" cannot be handled as a Service: json: cannot unmarshal number'
        " into Go struct field ObjectMeta.metadata.labels of type string")


# --------------------------------------------------------------------------- spec label fields


def test_a_service_selector_is_validated_as_labels(lab: Lab) -> None:
    body = service()
    body["spec"]["selector"] = {"app": LONG}
    refused = refusal(lambda: lab.core.create_namespaced_service("default", body))
    assert refused["details"]["causes"][0]["field"] == "spec.selector"


def test_a_pod_template_node_selector_is_validated(lab: Lab) -> None:
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "speaker", "namespace": "default"},
        "spec": {"selector": {"matchLabels": {"app": "speaker"}},
                 "template": {"metadata": {"labels": {"app": "speaker"}},
                              "spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                       "containers": [{"name": "s", "image": "s"}]}}},
    }
    lab.apps.create_namespaced_daemon_set("default", daemonset)
    body = refusal(lambda: lab.apps.patch_namespaced_daemon_set(
        "speaker", "default",
        {"spec": {"template": {"spec": {"nodeSelector": {"lbmigrate.io/paused": LONG}}}}},
        _content_type=STRATEGIC))
    assert body["details"]["causes"][0]["field"] == "spec.template.spec.nodeSelector"
    body = refusal(lambda: lab.apps.patch_namespaced_daemon_set(
        "speaker", "default",
        {"spec": {"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}}},
        _content_type=MERGE))
    assert body["details"]["causes"] == [
        {"reason": "FieldValueRequired", "field": "spec.selector.matchExpressions[0].values",
         "message": "Required value: must be specified when `operator` is 'In' or 'NotIn'"}]


# --------------------------------------------------------------------------- the adapter


def test_migrate_names_the_refused_field(lab: Lab, web: k8s.V1Service) -> None:
    kube = Kube(lab.api_client)
    with pytest.raises(KubeError) as exc:
        kube.patch("v1", "Service", "web", {"metadata": {"labels": {"lbmigrate.io/pool": LONG}}},
                   namespace="default")
    error = exc.value
    assert isinstance(error, ClusterError)
    assert error.status == 422 and error.fields == ["metadata.labels"]
    assert str(error) == (f"PATCH Service default/web: 422 Invalid: Service \"web\" is invalid:"
                          f" metadata.labels: Invalid value: \"{LONG}\": must be no more than 63"
                          " characters")
    _unchanged(lab, web)


def test_migrate_adds_the_fields_a_terse_message_leaves_out(lab: Lab, web: k8s.V1Service) -> None:
    def terse(operation: str, new: dict[str, Any], old: dict[str, Any] | None) -> None:
        from migrate.lab.store import ApiError

        if operation == "UPDATE" and "k" in ((new.get("metadata") or {}).get("labels") or {}):
            raise ApiError(422, "Invalid", "admission webhook denied the request", details={
                "causes": [{"reason": "FieldValueForbidden", "field": "metadata.labels",
                            "message": "Forbidden: the k label is reserved"}]})

    lab.store.add_admission_hook(terse)
    with pytest.raises(KubeError) as exc:
        Kube(lab.api_client).patch("v1", "Service", "web", {"metadata": {"labels": {"k": "v"}}},
                                   namespace="default")
    assert str(exc.value).endswith("admission webhook denied the request (metadata.labels:"
                                   " Forbidden: the k label is reserved)")


# --------------------------------------------------------------------------- snapshots


def test_a_snapshot_object_the_server_would_refuse_is_skipped(lab_factory: LabFactory,
                                                              tmp_path: Any) -> None:
    snapshot = tmp_path / "snap.yaml"
    snapshot.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        service("ok"), service("bad", labels={"k": LONG})]}))
    store, skipped = Store.from_snapshot([snapshot])
    assert store.try_get("", "Service", "ok", "default") is not None
    assert store.try_get("", "Service", "bad", "default") is None
    assert len(skipped) == 1 and "metadata.labels" in skipped[0]
