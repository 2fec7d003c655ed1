"""Fault injection on the lab's API server, as the official client observes it."""

from __future__ import annotations

import json
import socket
import threading

import pytest
import urllib3
from kubernetes.client.exceptions import ApiException

from migrate.lab.faults import FaultRule
from tests.lab.conftest import Lab, LabFactory


def make_config_map(lab: Lab, name: str = "c") -> None:
    """Create a ConfigMap in default."""
    lab.core.create_namespaced_config_map("default", {"metadata": {"name": name}})


@pytest.mark.parametrize(
    ("status", "reason"),
    [(500, "InternalError"), (503, "ServiceUnavailable"), (409, "Conflict"),
     (403, "Forbidden")],
)
def test_status_faults_reach_the_client_as_status_objects(
    lab: Lab, status: int, reason: str
) -> None:
    make_config_map(lab)
    rule = lab.server.faults.add(FaultRule(verb="get", resource="configmaps", status=status))
    with pytest.raises(ApiException) as exc:
        lab.core.read_namespaced_config_map("c", "default")
    assert exc.value.status == status
    body = json.loads(exc.value.body)
    assert body["kind"] == "Status" and body["reason"] == reason and body["code"] == status
    lab.server.faults.remove(rule)
    assert lab.core.read_namespaced_config_map("c", "default").metadata.name == "c"


def test_429_carries_retry_after(lab: Lab) -> None:
    lab.server.faults.add(FaultRule(verb="list", resource="services", status=429,
                                    retry_after=7))
    http = urllib3.PoolManager(retries=False)
    response = http.request("GET", f"{lab.server.url}/api/v1/services")
    assert response.status == 429
    assert response.headers["Retry-After"] == "7"
    body = json.loads(response.data)
    assert body["reason"] == "TooManyRequests" and body["details"]["retryAfterSeconds"] == 7


def test_the_client_honours_retry_after_and_retries(lab: Lab) -> None:
    rule = lab.server.faults.add(FaultRule(verb="list", resource="services", nth=1,
                                           status=429, retry_after=1))
    assert lab.core.list_service_for_all_namespaces().items == []
    assert rule.fired == 1 and rule.seen == 2


def test_nth_occurrence_only(lab: Lab) -> None:
    make_config_map(lab, "a")
    make_config_map(lab, "b")
    rule = lab.server.faults.add(FaultRule(verb="get", resource="configmaps", name="b", nth=2,
                                           status=500))
    outcomes = []
    for name in ("a", "b", "a", "b", "b"):
        try:
            lab.core.read_namespaced_config_map(name, "default")
            outcomes.append("ok")
        except ApiException as exc:
            outcomes.append(str(exc.status))
    assert outcomes == ["ok", "ok", "ok", "500", "ok"]
    assert rule.seen == 3 and rule.fired == 1


def test_write_verbs_and_subresources_match_separately(lab: Lab) -> None:
    lab.core.create_namespaced_service("default", {
        "metadata": {"name": "web"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    lab.server.faults.add(FaultRule(verb="patch", resource="services/status", status=409))
    lab.core.patch_namespaced_service("web", "default", {"metadata": {"labels": {"a": "b"}}},
                                      _content_type="application/merge-patch+json")
    with pytest.raises(ApiException) as exc:
        lab.core.patch_namespaced_service_status(
            "web", "default", {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}},
            _content_type="application/merge-patch+json")
    assert exc.value.status == 409
    assert lab.store.status_writes == []


def test_dropped_connection_raises_when_every_try_is_dropped(lab: Lab) -> None:
    make_config_map(lab)
    rule = lab.server.faults.add(FaultRule(verb="get", resource="configmaps", drop=True))
    with pytest.raises(urllib3.exceptions.MaxRetryError) as exc:
        lab.core.read_namespaced_config_map("c", "default")
    assert isinstance(exc.value.reason, urllib3.exceptions.ProtocolError)
    assert rule.fired == 4, "the client tried once and retried three times"


def test_a_single_dropped_connection_is_retried_by_the_client(lab: Lab) -> None:
    make_config_map(lab)
    rule = lab.server.faults.add(FaultRule(verb="get", resource="configmaps", nth=1,
                                           drop=True))
    assert lab.core.read_namespaced_config_map("c", "default").metadata.name == "c"
    assert rule.fired == 1


def test_dropped_connection_seen_on_a_raw_socket(lab: Lab) -> None:
    lab.server.faults.add(FaultRule(verb="list", resource="namespaces", drop=True))
    with socket.create_connection(("127.0.0.1", lab.server.port), timeout=5) as sock:
        sock.sendall(b"GET /api/v1/namespaces HTTP/1.1\r\nHost: lab\r\n\r\n")
        assert sock.recv(1024) == b"", "closed without a single byte of response"


def test_delay_holds_the_answer_back(lab: Lab) -> None:
    make_config_map(lab)
    lab.server.faults.add(FaultRule(verb="get", resource="configmaps", delay=0.5))
    answered = threading.Event()

    def read() -> None:
        lab.core.read_namespaced_config_map("c", "default")
        answered.set()

    thread = threading.Thread(target=read)
    thread.start()
    assert not answered.wait(0.1), "answered before the injected delay passed"
    thread.join(10)
    assert answered.is_set()


def test_delay_beyond_the_client_timeout_raises(lab: Lab) -> None:
    make_config_map(lab)
    lab.server.faults.add(FaultRule(verb="get", resource="configmaps", delay=1.0))
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        lab.core.read_namespaced_config_map("c", "default", _request_timeout=0.2)


def test_a_late_status_fault_answers_after_the_write_is_done(lab: Lab) -> None:
    """An API server that times out a request it goes on to complete: the client sees 504,
    the ConfigMap exists."""
    rule = lab.server.faults.add(FaultRule(verb="create", resource="configmaps", nth=1,
                                           status=504, after=True))
    with pytest.raises(ApiException) as exc:
        make_config_map(lab, "late")
    assert exc.value.status == 504
    assert json.loads(exc.value.body)["reason"] == "Timeout"
    assert rule.fired == 1
    assert lab.core.read_namespaced_config_map("late", "default").metadata.name == "late"


def test_a_late_drop_loses_the_answer_of_a_write_that_was_done(lab: Lab) -> None:
    lab.server.faults.add(FaultRule(verb="create", resource="configmaps", drop=True,
                                    after=True))
    with pytest.raises(urllib3.exceptions.ProtocolError):
        make_config_map(lab, "done")  # POST is not retried by the client
    assert lab.store.try_get("", "ConfigMap", "done", "default") is not None


def test_an_early_drop_never_reaches_the_store(lab: Lab) -> None:
    lab.server.faults.add(FaultRule(verb="create", resource="configmaps", drop=True))
    with pytest.raises(urllib3.exceptions.ProtocolError):
        make_config_map(lab, "lost")
    assert lab.store.try_get("", "ConfigMap", "lost", "default") is None


def test_clear_removes_every_rule(lab: Lab) -> None:
    lab.server.faults.add(FaultRule(status=503))
    with pytest.raises(ApiException):
        lab.core.list_namespace()
    lab.server.faults.clear()
    assert lab.server.faults.rules == []
    assert lab.core.list_namespace().items


def test_rule_validation() -> None:
    with pytest.raises(ValueError):
        FaultRule(verb="explode", status=500)
    with pytest.raises(ValueError):
        FaultRule(verb="get")
    with pytest.raises(ValueError):
        FaultRule(nth=0, status=500)


def test_a_stopped_server_closes_open_connections(lab_factory: LabFactory) -> None:
    lab = lab_factory()
    assert lab.core.list_namespace().items  # leaves a keep-alive connection in the pool
    lab.server.stop()
    with pytest.raises(urllib3.exceptions.MaxRetryError):
        lab.core.list_namespace()
