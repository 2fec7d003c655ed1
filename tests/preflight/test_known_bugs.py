"""The known bugs of mappings/known-bugs.yaml: each one is reported for a cluster at an affected
version that uses what it needs, and not at the release that fixes it (nor just before the
range starts); it follows the version of its own component; unknown versions say what may
apply."""

from __future__ import annotations

from typing import Any

import pytest

from migrate.errors import MigrateError
from migrate.model.findings import Severity
from migrate.preflight import CheckSeverity, run_preflight
from migrate.preflight.inventory import Version, parse_version, version_text
from migrate.preflight.known_bugs import (
    COMPONENTS,
    CONDITIONS,
    KnownBug,
    VersionRange,
    _entry,
    known_bugs,
)
from migrate.translate.mappings import known_versions
from migrate.translate.translator import translate
from tests.preflight import scenarios

Doc = dict[str, Any]
IMAGES = {
    "cilium-agent": ("DaemonSet", "cilium", "quay.io/cilium/cilium"),
    "cilium-operator": ("Deployment", "cilium-operator", "quay.io/cilium/operator-generic"),
    "metallb-controller": ("Deployment", "controller", "quay.io/metallb/controller"),
    "metallb-speaker": ("DaemonSet", "speaker", "quay.io/metallb/speaker"),
}
# A scenario in which the cluster uses what each condition needs.
CONDITION_SCENARIOS = {
    "always": (), "l2-announced": (), "metallb-restart": (),
    "shared-ip": ("shared-ip-proto-diff-off",),
    "sharing-key-several-ips": ("sharing-key-several-ips",),
    "etp-local": ("etp-local",),
}
SIBLING = {"cilium-agent": "cilium-operator", "cilium-operator": "cilium-agent",
           "metallb-controller": "metallb-speaker", "metallb-speaker": "metallb-controller"}


def set_version(docs: list[Doc], component: str, version: Version | None) -> list[Doc]:
    """The documents with the component's image at that version (None: untagged)."""
    kind, name, repository = IMAGES[component]
    workload = next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)
    container = workload["spec"]["template"]["spec"]["containers"][0]
    container["image"] = (f"{repository}:v{version_text(version)}" if version
                          else f"{repository}@sha256:0123abcd")
    return docs


def affected_version(bug: KnownBug) -> Version:
    """A released-looking version inside the bug's first range."""
    low, high = bug.affected[0].interval()
    for candidate in (high, (high[0], high[1], 0), low):
        if max(candidate) < 10**6 and bug.affected[0].contains(candidate):
            return candidate
    raise AssertionError(f"{bug.id}: no version inside {bug.affected[0].text}")


def clean_versions(bug: KnownBug) -> list[Version]:
    """Versions the bug is not in: the fixing release, and the one just before the range."""
    out = []
    if bug.fixed_in:
        fixed = parse_version(bug.fixed_in)
        assert fixed is not None
        out.append(fixed)
    low = min(r.interval()[0] for r in bug.affected)
    if low != (0, 0, 0):
        major, minor, patch = low
        out.append((major, minor, patch - 1) if patch else (major, minor - 1, 0))
    return out


def reported(bug: KnownBug, docs: list[Doc], version: Version) -> bool:
    """Whether the check that reports the bug cites it for these documents (the translation:
    for the Cilium minor of ``version``, or the newest it knows)."""
    snapshot = scenarios.snapshot(docs)
    if bug.reported_by == "translation":
        minor = f"{version[0]}.{version[1]}"
        translation = translate(snapshot, cilium=minor if minor in known_versions() else None)
        return any(bug.ref in f.message for f in translation.findings)
    return bug.ref in run_preflight(snapshot).check(bug.reported_by).found


def _documents(bug: KnownBug, version: Version | None, sibling: Version | None) -> list[Doc]:
    docs = scenarios.documents(*CONDITION_SCENARIOS[bug.when])
    set_version(docs, SIBLING[bug.component], sibling)
    return set_version(docs, bug.component, version)


def _without(condition: str) -> list[Doc]:
    """The base cluster, or without what the condition needs when the base has it."""
    docs = scenarios.documents()
    if condition == "l2-announced":  # no L2Advertisement: nothing to announce over L2
        docs = [d for d in docs if d["kind"] != "L2Advertisement"]
    return docs


def test_every_condition_has_a_scenario() -> None:
    assert set(CONDITION_SCENARIOS) == set(CONDITIONS)


@pytest.mark.parametrize("bug", known_bugs(), ids=lambda bug: bug.id)
def test_reported_at_an_affected_version_and_not_at_a_fixed_one(bug: KnownBug) -> None:
    bad = affected_version(bug)
    cleans = clean_versions(bug)
    sibling = cleans[0] if cleans else bad
    assert reported(bug, _documents(bug, bad, sibling), bad), f"{bug.id} at {version_text(bad)}"
    if bug.reported_by == "translation":
        return  # the translation reads the Cilium minor only, and the bug is open
    for clean in cleans:
        assert not reported(bug, _documents(bug, clean, bad), clean), (
            f"{bug.id} at {version_text(clean)}")


@pytest.mark.parametrize("bug", [b for b in known_bugs() if b.when not in
                                 ("always", "metallb-restart")
                                 and b.reported_by != "translation"], ids=lambda bug: bug.id)
def test_not_reported_when_the_cluster_does_not_use_what_it_needs(bug: KnownBug) -> None:
    docs = set_version(_without(bug.when), bug.component, affected_version(bug))
    assert bug.ref not in run_preflight(scenarios.snapshot(docs)).check(bug.reported_by).found


def test_unknown_versions_say_which_bugs_may_apply_without_blocking() -> None:
    docs = scenarios.documents("sharing-key-several-ips")
    set_version(docs, "cilium-agent", None)
    set_version(docs, "cilium-operator", None)
    report = run_preflight(scenarios.snapshot(docs))
    bugs = report.check("known-bugs")
    assert bugs.severity is CheckSeverity.WARNING  # an ERROR that may apply is a WARNING
    assert "WARNING may apply (version unknown): an operator restart drops" in bugs.found
    assert "cilium/cilium#46262" in bugs.found and "cilium/cilium#43131" in bugs.found
    assert "check the image tags" in bugs.remedy
    assert not report.blocking


def test_a_bug_follows_the_version_of_its_own_component() -> None:
    # The reshuffle bug is LB-IPAM's, in the operator: an old agent alone does not have it.
    docs = set_version(scenarios.documents(), "cilium-agent", (1, 17, 6))
    found = run_preflight(scenarios.snapshot(docs)).check("known-bugs").found
    assert found.startswith("Cilium agent 1.17.6, operator 1.18.4, MetalLB 0.15.2")
    assert "cilium/cilium#43131" not in found
    set_version(docs, "cilium-operator", (1, 17, 6))
    assert "cilium/cilium#43131" in run_preflight(scenarios.snapshot(docs)).check(
        "known-bugs").found


def test_pending_services_are_named_for_the_metallb_restart_bug() -> None:
    docs = set_version(scenarios.documents(), "metallb-controller", (0, 13, 12))
    docs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "waiting", "namespace": "web"},
                 "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    found = run_preflight(scenarios.snapshot(docs)).check("known-bugs").found
    assert "(pending now: web/waiting)" in found


def test_findings_of_known_bugs_reach_stage_zero() -> None:
    docs = scenarios.documents("sharing-key-several-ips")
    report = run_preflight(scenarios.snapshot(docs))
    finding = next(f for f in report.findings() if f.code == "preflight:known-bugs")
    assert finding.severity is Severity.ERROR
    assert finding.obj == "Deployment kube-system/cilium-operator"
    assert "Upgrade Cilium to 1.19.7" in finding.message


# -- the table itself ---------------------------------------------------------------------------
def test_every_entry_is_complete_and_cites_its_upstream_thread() -> None:
    bugs = known_bugs()
    assert len({bug.id for bug in bugs}) == len(bugs) >= 10
    for bug in bugs:
        assert bug.id == f"{bug.project}-{bug.issue}"
        assert bug.url.startswith(f"https://github.com/{bug.project}/{bug.project}/")
        assert bug.url.rstrip("/").endswith(str(bug.issue))
        assert bug.component in COMPONENTS and bug.component.startswith(bug.project)
        assert "[" not in bug.happens + bug.tool + bug.remedy  # no internal note tags
        if bug.fixed_in:
            fixed = parse_version(bug.fixed_in)
            assert fixed is not None and not bug.affects(fixed)


def test_version_ranges() -> None:
    window = VersionRange.parse(">=1.19.0, <1.19.7")
    assert window.contains((1, 19, 6)) and not window.contains((1, 19, 7))
    assert not window.contains((1, 18, 9))
    bug = next(b for b in known_bugs() if b.id == "cilium-46262")
    assert bug.affects((1, 19, 0), exact=False) is None  # 1.19.x: depends on the patch
    assert bug.affects((1, 18, 0), exact=False) is False
    shrink = next(b for b in known_bugs() if b.id == "cilium-41458")
    assert shrink.affects((1, 19, 0), exact=False) is True  # every 1.19 patch
    with pytest.raises(ValueError, match="comparator"):
        VersionRange.parse("1.19.x")


def test_a_malformed_entry_names_itself() -> None:
    good = {"id": "cilium-1", "project": "cilium", "issue": 1,
            "url": "https://github.com/cilium/cilium/issues/1", "component": "cilium-agent",
            "affected": ["<1.16.0"], "when": "always", "severity": "WARNING", "title": "t",
            "happens": "h", "tool": "t", "remedy": "r"}
    assert _entry(good, 0, "known-bugs.yaml").severity is CheckSeverity.WARNING
    with pytest.raises(MigrateError, match="cilium-1: when must be one of"):
        _entry({**good, "when": "sometimes"}, 0, "known-bugs.yaml")
    with pytest.raises(MigrateError, match=r"cilium-1: '<1\.16' is not a comparator"):
        _entry({**good, "affected": ["<1.16"]}, 0, "known-bugs.yaml")
    with pytest.raises(MigrateError, match=r"bugs\[0\] lacks remedy"):
        _entry({k: v for k, v in good.items() if k != "remedy"}, 0, "known-bugs.yaml")
