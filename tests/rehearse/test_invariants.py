"""The checks on the twin's records, on records made by hand."""

from __future__ import annotations

from migrate.rehearse.invariants import (
    backup_problems,
    comparable_objects,
    cutover_of,
    doubled_problems,
    handover_silence,
    ip_problems,
    rollback_problems,
)
from migrate.rehearse.model import Answer
from migrate.rehearse.records import AnnouncementChange, Request, StatusChange

IP = "192.0.2.10"


def change(at: float, metallb: tuple[str, ...] = (), cilium: tuple[str, ...] = (),
           ip: str = IP) -> AnnouncementChange:
    return AnnouncementChange(at, ip, metallb, cilium)


def test_the_handover_silence_runs_from_metallb_letting_go_to_cilium_answering() -> None:
    assert handover_silence([Answer(0, ("a",), ()), Answer(1.0, (), ()),
                             Answer(1.5, (), ("b",))]) == 0.5
    assert handover_silence([Answer(0, ("a",), ()), Answer(1.0, ("a",), ("b",)),
                             Answer(2.0, (), ("b",))]) == 0.0
    assert handover_silence([Answer(0, ("a",), ()), Answer(1.0, (), ())]) is None
    # On the instant lab a whole hand-over happens at one moment.
    assert handover_silence([Answer(0, ("a",), ()), Answer(0, (), ()),
                             Answer(0, (), ("b",))]) == 0.0


def test_cutover_answers_are_relative_to_the_window_and_start_with_who_answered() -> None:
    before = [change(1.0, ("w1",)), change(2.0, ("w2",), ip="192.0.2.11")]
    during = [change(10.5), change(11.0, cilium=("w3",)),
              change(11.0, ("w2",), ("w1",), ip="192.0.2.11")]
    found = {c.ip: c for c in cutover_of(before, during, [IP, "192.0.2.11"], 10.0, 20.0,
                                         {IP: ["shop/web"]})}
    web = found[IP]
    assert web.services == ["shop/web"] and web.seconds == 10.0
    assert [(a.at, a.metallb, a.cilium) for a in web.answers] == [
        (0.0, ("w1",), ()), (0.5, (), ()), (1.0, (), ("w3",))]
    assert web.silence == 0.5 and web.longest_silence == 0.5 and web.doubled == 0.0
    other = found["192.0.2.11"]
    assert other.silence == 0.0 and other.doubled == 9.0


def test_two_announcers_are_named_once_per_ip_with_the_right_remedy() -> None:
    problems = doubled_problems([change(1, ("a",), ("b",)), change(2, ("a",), ("b",)),
                                 change(3, cilium=("a", "b"), ip="192.0.2.11")],
                                {IP: ["shop/web"]})
    assert [p.subject for p in problems] == [f"IP {IP} (shop/web)", "IP 192.0.2.11"]
    assert problems[0].detail == "answered by MetalLB on a and Cilium on b at once"
    assert "break before make" in problems[0].remedy
    assert "cilium/cilium#48419" in problems[1].remedy
    assert doubled_problems([change(1, ("a",)), change(2, cilium=("b",))], {}) == []


def test_only_a_write_that_changes_a_kept_ip_breaks_i1() -> None:
    expected = {"shop/web": ["192.0.2.10"]}
    writes = [
        StatusChange(1, "shop/web", "metallb-controller", (), ("192.0.2.10",)),  # allocation
        StatusChange(2, "shop/web", "lbmigrate", ("192.0.2.10",), ("192.0.2.10",)),
        StatusChange(3, "shop/other", "x", ("192.0.2.99",), ()),  # not the plan's
        StatusChange(4, "shop/web", "cilium-operator-lb-ipam", ("192.0.2.10",), ()),
    ]
    problems = ip_problems(writes, expected)
    assert len(problems) == 1
    assert problems[0].subject == "Service shop/web"
    assert problems[0].detail == ("cilium-operator-lb-ipam changed its IPs from 192.0.2.10"
                                  " to none")
    assert "LB-IPAM" in problems[0].remedy


def test_rollback_differences_name_the_object_and_the_field() -> None:
    def service(annotations: dict[str, str]) -> dict[str, object]:
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "web", "namespace": "shop", "annotations": annotations,
                             "resourceVersion": "7"}, "spec": {"clusterIP": "10.0.0.1"}}

    before = comparable_objects([service({"a": "1"}), {
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "gone", "namespace": "x"}}])
    after = comparable_objects([service({"a": "2"}), {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "lbmigrate-state", "namespace": "kube-system"}}])
    problems = {p.subject: p.detail for p in rollback_problems(before, after)}
    assert problems == {"Service shop/web": "differs after the rollback at"
                                            " metadata.annotations.a",
                        "ConfigMap x/gone": "gone after the rollback"}
    assert rollback_problems(before, before) == []


def test_a_backup_must_come_before_the_first_change_and_hold_what_was() -> None:
    pool = {"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": "p", "namespace": "m"}, "spec": {"addresses": ["a"]}}
    backup = {"objects": [{"target": {"kind": "IPAddressPool", "name": "p", "namespace": "m"},
                           "object": pool}]}
    before = {"IPAddressPool m/p": pool}
    assert backup_problems("decommission", 10, 12, backup, before) == []
    assert backup_problems("decommission", None, None, None, before) == []  # nothing written
    late = backup_problems("decommission", 13, 12, backup, before)
    assert [p.detail for p in late] == ["an object was changed before the stage's backup was"
                                        " recorded"]
    changed = {"IPAddressPool m/p": {**pool, "spec": {"addresses": ["b"]}}}
    assert [p.subject for p in backup_problems("decommission", 10, 12, backup, changed)] == [
        "IPAddressPool m/p"]


def test_request_resources_and_writes() -> None:
    assert Request("PATCH", "/api/v1/namespaces/shop/services/web?fieldManager=x").resource \
        == "services"
    assert Request("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
                   "?limit=500").resource == "leases"
    assert Request("GET", "/api/v1/namespaces/kube-system").resource == "namespaces"
    assert Request("GET", "/version").resource == ""
    assert Request("DELETE", "/x").is_write and not Request("GET", "/x").is_write
