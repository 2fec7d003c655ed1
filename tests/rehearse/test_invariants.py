"""The checks on the twin's records, on records made by hand."""

from __future__ import annotations

from types import SimpleNamespace

from migrate.rehearse import RehearseOptions, check_kept_up, verdict
from migrate.rehearse.invariants import (
    backup_problems,
    comparable_objects,
    cutover_of,
    doubled_problems,
    handover_silence,
    ip_problems,
    rollback_problems,
)
from migrate.rehearse.model import Answer, Problem, RehearsalReport, StageReport
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


def _report(*, problems: bool, behind: float | None) -> RehearsalReport:
    report = RehearsalReport(source="files", snapshot=None, seed=0,
                             time="real (time scale 0.05)", timing="realistic", behind=behind)
    found = [Problem("I2", "IP 10.0.10.4 (ns-10/svc-00610)", "answered by nobody at the end"
                     " of the stage", "Check the lease holder.", "apply l2-cutover")]
    report.stages = [StageReport("apply", "l2-cutover", "applied",
                                 problems=found if problems else [])]
    return report


def test_what_fails_in_a_twin_that_fell_behind_its_clock_is_inconclusive() -> None:
    late = verdict(_report(problems=True, behind=3.5))
    assert late.status == "inconclusive"
    assert late.summary.startswith("inconclusive: the twin ran up to 3.5s behind its clock,"
                                   " and I2 (one announcer) failed at apply l2-cutover")
    assert "rehearse on virtual time" in late.summary
    assert late.first is not None and late.first.subject.startswith("IP 10.0.10.4")
    assert verdict(_report(problems=True, behind=None)).status == "unsafe"
    assert verdict(_report(problems=False, behind=3.5)).status == "safe"


def test_a_twin_is_behind_only_past_a_modelled_second() -> None:
    def checked(late: float, *, scale: float, virtual: bool = False) -> RehearsalReport:
        report = _report(problems=False, behind=None)
        twin = SimpleNamespace(lag=0.0 if virtual else late)  # as Twin.lag
        options = RehearseOptions(time_scale=None if virtual else scale)
        check_kept_up(report, twin, options)  # type: ignore[arg-type]
        return report

    assert checked(0.09, scale=0.05).behind is None  # 1.8 modelled seconds: kept up
    assert checked(1.5, scale=1.0).behind is None
    late = checked(0.2, scale=0.05)  # 4 modelled seconds
    assert late.behind == 0.2
    assert late.fidelity == ["the twin's models ran up to 0.20s behind the real clock (4.0"
                             " modelled seconds at time scale 0.05): leases renewed late,"
                             " reactions came late; rehearse on virtual time (without"
                             " --time-scale) or at a larger time scale"]
    assert late.to_json()["behindSeconds"] == 0.2
    assert checked(30.0, scale=1.0, virtual=True).behind is None
