"""The asynchronous lab: processes with their own delays, pods that take their time to start and
to stop, on virtual time (a manual clock the test moves), reproducible per seed."""

from __future__ import annotations

import time
from typing import Any

from migrate.lab.models import Controllers
from migrate.lab.store import Clock, Store
from tests.lab.models_support import (
    cilium_pool,
    daemonset,
    deployment,
    ips,
    l2_advertisement,
    l2_policy,
    load,
    new_store,
    pods,
    replace_workload,
    scale,
    service,
    start,
    start_realistic,
    writes_by,
)

OPERATOR_LABELS = {"io.cilium/app": "operator", "name": "cilium-operator"}
SPEAKER_LABELS = {"app": "metallb", "component": "speaker"}
PINNED_A = ("192.0.2.5", "lbipam.cilium.io/ips")
PINNED_B = ("198.51.100.5", "lbipam.cilium.io/ips")


def operator_cluster(replicas: int = 1, **extra: Any) -> Store:
    """Cilium with its operator (a pod template, a 60 s grace period) and two pinned Services
    whose IPs belong to two pools that do not exist yet."""
    store = new_store("cluster", "cilium", "cilium-agents")
    store.delete("apps", "Deployment", "cilium-operator", "kube-system")
    store.create(deployment("cilium-operator", "kube-system", OPERATOR_LABELS,
                            replicas=replicas, grace=60,
                            image="quay.io/cilium/operator-generic:v1.18.4", **extra))
    for name, (ip, key) in (("a", PINNED_A), ("b", PINNED_B)):
        store.create(service(name, ips=(ip,), annotations={key: ip}))
    return store


def operator_pods(store: Store) -> list[dict[str, Any]]:
    return pods(store, "kube-system", **{"io.cilium/app": "operator"})


def handover(store: Store, lab: Controllers) -> None:
    """What a careless handover does: operator to 0, the pools one after the other, at once."""
    scale(store, "kube-system", "cilium-operator", 0)
    lab.advance(0.05)
    store.create(cilium_pool("pool-a", "192.0.2.0/24"))
    lab.advance(0.6)
    store.create(cilium_pool("pool-b", "198.51.100.0/24"))
    lab.advance(0.6)


def test_a_terminating_operator_keeps_running_lbipam_and_strips_an_ip() -> None:
    """reference/real-clusters.md §1: the old leader handles the first pool alone."""
    store = operator_cluster()
    lab = start_realistic(store, seed=3, metallb_controller=False, metallb_speakers=False,
                          cilium_l2=False)
    (pod,) = operator_pods(store)
    handover(store, lab)
    terminating = store.get("", "Pod", pod["metadata"]["name"], "kube-system")
    assert terminating["metadata"]["deletionTimestamp"]  # still there, still running
    assert ips(store, "a") == ["192.0.2.5"]
    assert ("apps/b", ("198.51.100.5",), ()) in writes_by(store, "cilium-operator-lb-ipam")
    lab.advance(120)
    assert operator_pods(store) == []  # exited within its 60 s grace period


def test_the_instant_lab_has_no_such_window() -> None:
    """The same writes on the instant lab: the operator is gone before the pools come."""
    store = operator_cluster()
    lab = start(store, metallb_controller=False, metallb_speakers=False, cilium_l2=False)
    handover(store, lab)
    assert writes_by(store, "cilium-operator-lb-ipam") == []
    assert operator_pods(store) == []


def test_status_replicas_drops_to_zero_while_the_pod_still_runs() -> None:
    store = operator_cluster()
    lab = start_realistic(store, seed=1, metallb_controller=False, metallb_speakers=False,
                          cilium_l2=False)
    scale(store, "kube-system", "cilium-operator", 0)
    lab.advance(0.5)
    status = store.get("apps", "Deployment", "cilium-operator", "kube-system")["status"]
    assert not status.get("replicas") and not status.get("readyReplicas")  # FilterActivePods
    (pod,) = operator_pods(store)
    assert pod["metadata"]["deletionTimestamp"]
    assert lab.cilium_lbipam.leader is not None and lab.cilium_lbipam.leader.terminating
    lab.advance(60)
    assert operator_pods(store) == [] and lab.cilium_lbipam.leader is None


def test_new_pods_start_after_their_start_delay() -> None:
    store = operator_cluster()
    lab = start_realistic(store, seed=2, metallb_controller=False, metallb_speakers=False,
                          cilium_l2=False)
    scale(store, "kube-system", "cilium-operator", 0)
    lab.advance(61)
    scale(store, "kube-system", "cilium-operator", 1)
    lab.advance(1)
    (pod,) = operator_pods(store)
    assert pod["status"]["phase"] == "Pending"
    status = store.get("apps", "Deployment", "cilium-operator", "kube-system")["status"]
    assert status["replicas"] == 1 and not status.get("readyReplicas")
    lab.advance(30)  # the realistic operator starts within 5 to 20 s
    (pod,) = operator_pods(store)
    assert pod["status"]["phase"] == "Running"
    status = store.get("apps", "Deployment", "cilium-operator", "kube-system")["status"]
    assert status["readyReplicas"] == 1
    assert {c["type"]: c["status"] for c in status["conditions"]}["Available"] == "True"


def test_two_operator_replicas_elect_one_leader_which_keeps_leading_while_terminating() -> None:
    store = operator_cluster(replicas=2)
    lab = start_realistic(store, seed=4, metallb_controller=False, metallb_speakers=False,
                          cilium_l2=False)
    assert len(operator_pods(store)) == 2
    leader = lab.cilium_lbipam.leader
    assert leader is not None and len(lab.cilium_lbipam.running()) == 2
    scale(store, "kube-system", "cilium-operator", 1)
    lab.advance(0.5)
    # the ReplicaSet deletes the newest pod first; whichever goes, one process leads
    assert lab.cilium_lbipam.leader is not None
    lab.advance(70)
    assert len(operator_pods(store)) == 1
    assert lab.cilium_lbipam.leader is not None and lab.cilium_lbipam.leader.running


def test_a_snapshot_reporting_one_ready_of_two_keeps_that_capacity() -> None:
    """real-clusters.md §1: readyReplicas can stay below spec.replicas for good."""
    store = operator_cluster(replicas=2, status={"replicas": 2, "readyReplicas": 1})
    lab = start_realistic(store, seed=0, metallb_controller=False, metallb_speakers=False,
                          cilium_l2=False)
    status = store.get("apps", "Deployment", "cilium-operator", "kube-system")["status"]
    assert (status["replicas"], status["readyReplicas"]) == (2, 1)
    phases = sorted(p["status"]["phase"] for p in operator_pods(store))
    assert phases == ["Pending", "Running"]
    scale(store, "kube-system", "cilium-operator", 0)
    lab.advance(70)
    scale(store, "kube-system", "cilium-operator", 2)
    lab.advance(60)
    status = store.get("apps", "Deployment", "cilium-operator", "kube-system")["status"]
    assert (status["replicas"], status["readyReplicas"]) == (2, 1)


# --------------------------------------------------------------------------- speakers


def speaker_lab(seed: int, *, timing: str = "realistic") -> tuple[Store, Controllers]:
    store = new_store("cluster", "metallb")
    store.delete("apps", "DaemonSet", "speaker", "metallb-system")
    store.create(daemonset("speaker", "metallb-system", SPEAKER_LABELS, grace=30,
                           image="quay.io/metallb/speaker:v0.14.9"))
    for index in range(8):
        store.create(service(f"s{index}", ips=(f"192.0.2.{index}",)))
    lab = (start_realistic(store, seed=seed, cilium_lbipam=False, cilium_l2=False)
           if timing == "realistic" else start(store, cilium_lbipam=False, cilium_l2=False))
    lab.advance(5)
    return store, lab


def silenced_at(lab: Controllers, since: float) -> dict[str, float]:
    """node -> when it last stopped answering for something, after ``since``."""
    out: dict[str, float] = {}
    previous: dict[str, tuple[str, ...]] = {}
    for change in lab.record.changes:
        before = previous.get(change.ip, ())
        for node in set(before) - set(change.metallb):
            if change.time >= since:
                out[node] = max(out.get(node, 0.0), change.time)
        previous[change.ip] = change.metallb
    return out


def test_speakers_stop_one_by_one_after_the_l2advertisement_goes() -> None:
    store, lab = speaker_lab(seed=5)
    announcing = {n for a in lab.announcements().values() for n in a.metallb_nodes}
    assert len(announcing) == 3
    statuses = store.list("metallb.io", "ServiceL2Status", "metallb-system")
    assert len(statuses) == 8
    deleted_at = lab.now()
    store.delete("metallb.io", "L2Advertisement", "l2-all", "metallb-system")
    lab.run_until_idle()
    assert lab.announcements(), "the deletion returns before any speaker reloaded"
    lab.advance(3)
    assert lab.announcements() == {}
    stops = silenced_at(lab, deleted_at)
    assert set(stops) == announcing and len(set(stops.values())) == 3  # each on its own
    assert store.list("metallb.io", "ServiceL2Status", "metallb-system") == []
    deletions = [r for r in lab.requests.select(verb="DELETE", resource="servicel2statuses")]
    by_speaker = {r.process for r in deletions}
    assert len(by_speaker) == 3  # every speaker deletes the objects of its own node


def test_on_the_instant_lab_every_speaker_stops_in_the_tick_of_the_deletion() -> None:
    store, lab = speaker_lab(seed=0, timing="instant")
    deleted_at = lab.now()
    store.delete("metallb.io", "L2Advertisement", "l2-all", "metallb-system")
    lab.run_until_idle()
    assert lab.announcements() == {}
    assert set(silenced_at(lab, deleted_at).values()) == {deleted_at}


def test_a_node_leaving_the_daemonsets_selector_is_announced_from_until_its_speaker_exits(
) -> None:
    store, lab = speaker_lab(seed=6)
    view = lab.announcements()
    ip_on_c = next(ip for ip, a in view.items() if a.metallb_nodes == ("node-c",))
    changed_at = lab.now()
    replace_workload(store, daemonset("speaker", "metallb-system", SPEAKER_LABELS, grace=30,
                                      image="quay.io/metallb/speaker:v0.14.9",
                                      node_selector={"zone": "east"}))
    lab.advance(1)
    (pod,) = [p for p in pods(store, "metallb-system", component="speaker")
              if p["spec"]["nodeName"] == "node-c"]
    assert pod["metadata"]["deletionTimestamp"]
    lab.advance(40)
    after = lab.announcements()[ip_on_c]
    assert after.metallb_nodes != ("node-c",)
    handed = next(c for c in lab.record.changes if c.ip == ip_on_c and c.time > changed_at
                  and "node-c" not in c.metallb)
    assert handed.time > changed_at + 1  # node-c kept answering while it terminated
    assert [p for p in pods(store, "metallb-system", component="speaker")
            if p["spec"]["nodeName"] == "node-c"] == []


def test_a_deleted_pod_is_replaced_after_its_start_delay() -> None:
    store, lab = speaker_lab(seed=7)
    (pod,) = [p for p in pods(store, "metallb-system", component="speaker")
              if p["spec"]["nodeName"] == "node-a"]
    store.delete("", "Pod", pod["metadata"]["name"], "metallb-system")
    lab.advance(1)
    (new,) = [p for p in pods(store, "metallb-system", component="speaker")
              if p["spec"]["nodeName"] == "node-a"]
    assert new["metadata"]["name"] != pod["metadata"]["name"]
    assert new["status"]["phase"] == "Pending"
    assert "node-a" not in lab.metallb_speaker.members()
    lab.advance(15)
    assert "node-a" in lab.metallb_speaker.members()


# --------------------------------------------------------------------------- seeds


def cutover_record(seed: int) -> list[Any]:
    store = new_store("cluster", "metallb", "cilium", "cilium-agents")
    for index in range(4):
        store.create(service(f"s{index}", ips=(f"192.0.2.{index}",)))
    lab = start_realistic(store, seed=seed, metallb_controller=False, cilium_lbipam=False)
    lab.advance(2)
    store.delete("metallb.io", "L2Advertisement", "l2-all", "metallb-system")
    store.create(l2_policy("all"))
    lab.advance(30)
    return list(lab.record.changes)


def test_the_same_seed_gives_the_same_record_another_seed_another_timing() -> None:
    first, again, other = cutover_record(11), cutover_record(11), cutover_record(12)
    assert first == again
    assert [(c.ip, c.metallb, c.cilium) for c in first] != [] and first != other
    assert [c.time for c in first] != [c.time for c in other]


def test_the_record_tells_the_cutover_silence_and_the_overlaps() -> None:
    store = new_store("cluster", "metallb", "cilium", "cilium-agents")
    store.create(service("web", ips=("192.0.2.3",)))
    lab = start_realistic(store, seed=1, metallb_controller=False, cilium_lbipam=False)
    lab.advance(2)
    store.delete("metallb.io", "L2Advertisement", "l2-all", "metallb-system")
    lab.advance(5)
    store.create(l2_policy("all"))
    lab.advance(10)
    silence = lab.record.cutover_silences()["192.0.2.3"]
    assert 3.0 < silence < 7.0  # break before make: nobody answered in between
    assert lab.record.overlaps() == []
    spans = lab.record.silences("192.0.2.3")
    assert spans and abs(spans[0].length(lab.now()) - silence) < 1e-9
    # make before break: both stacks answer (from one node or two)
    store.create(l2_advertisement("l2-all"))
    lab.advance(10)
    both = lab.record.overlaps(same_node_counts=True)
    assert both and both[-1].end is None and both[-1].ip == "192.0.2.3"


def _park(store: Store, parked: bool) -> None:
    selector = {"lbmigrate.io/paused": "true"} if parked else None
    replace_workload(store, daemonset("speaker", "metallb-system", SPEAKER_LABELS, grace=30,
                                      image="quay.io/metallb/speaker:v0.14.9",
                                      node_selector=selector))


def test_speakers_started_with_their_configuration_announce_an_ip_from_two_nodes_at_first(
) -> None:
    """A speaker that starts alone is the whole memberlist and announces everything until it
    hears of the others: un-parking speakers whose configuration is in place puts two
    announcers on the wire (what a legacy rollback must avoid). The DaemonSet's status
    follows its pods as the DaemonSet controller writes it."""
    store, lab = speaker_lab(seed=8)
    _park(store, True)
    lab.advance(40)
    assert pods(store, "metallb-system", component="speaker") == []
    status = store.get("apps", "DaemonSet", "speaker", "metallb-system")["status"]
    assert (status["desiredNumberScheduled"], status["numberReady"]) == (0, 0)
    unparked_at = lab.now()
    _park(store, False)
    lab.advance(1)
    status = store.get("apps", "DaemonSet", "speaker", "metallb-system")["status"]
    assert status["desiredNumberScheduled"] == 3 and status["numberReady"] < 3
    lab.advance(30)
    status = store.get("apps", "DaemonSet", "speaker", "metallb-system")["status"]
    assert (status["numberReady"], status["numberAvailable"]) == (3, 3)
    twice = [s for s in lab.record.overlaps() if s.start >= unparked_at]
    assert twice, "speakers that start one by one each announce alone for a moment"
    assert all(len(a.metallb_nodes) == 1 for a in lab.announcements().values())


def test_on_a_real_clock_the_lab_measures_how_far_its_models_fell_behind() -> None:
    """A callback that holds the models up makes the next one run late: ``lateness`` says by
    how much (what a rehearsal at a small time scale reports); a manual clock is never late."""
    store = Store(Clock.real())
    load(store, "cluster")
    controllers = start(store)
    scheduler = controllers.runtime.scheduler
    now = store.clock.now()
    scheduler.at(now, lambda: time.sleep(0.3), label="a model busy for 0.3 s")
    ran: list[float] = []
    scheduler.at(now + 0.05, lambda: ran.append(store.clock.now()), label="due 50 ms later")
    time.sleep(0.06)
    controllers.run_until_idle()
    assert ran and 0.2 < controllers.lateness < 1.0, controllers.lateness
    virtual = start(new_store("cluster"))
    virtual.runtime.scheduler.at(5.0, lambda: None, label="due at 5 s")
    virtual.advance(10.0)
    assert virtual.lateness == 0.0
