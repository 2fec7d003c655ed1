"""The BGP checks beyond the one outcome each scenario trips: every other outcome a user can
meet, and which of them block the hand-over."""

from __future__ import annotations

from typing import Any

from migrate.preflight import CheckSeverity, run_preflight
from tests.preflight import scenarios

E, W, N, OK = (CheckSeverity.ERROR, CheckSeverity.WARNING, CheckSeverity.INFO,
               CheckSeverity.OK)


def _report(docs: list[dict[str, Any]], cilium: str | None = None) -> Any:
    return run_preflight(scenarios.snapshot(docs), cilium_version=cilium)


def _peer(docs: list[dict[str, Any]], name: str = "router") -> dict[str, Any]:
    return next(d for d in docs if d["kind"] == "BGPPeer" and d["metadata"]["name"] == name)


def test_no_bgp_passes_every_bgp_check() -> None:
    report = _report(scenarios.documents())
    for name in ("bgp-control-plane", "bgp-peers", "bgp-graceful-restart", "bgp-bfd"):
        assert report.check(name).severity is OK


def test_control_plane_on_is_ok_and_names_the_secrets_namespace() -> None:
    docs = scenarios.documents("bgp-control-plane-off")
    scenarios.cilium_config(docs).update({"enable-bgp-control-plane": "true",
                                          "bgp-secrets-namespace": "bgp-secrets"})
    _peer(docs)["spec"]["passwordSecret"] = {"name": "md5"}
    check = _report(docs).check("bgp-control-plane")
    assert check.severity is OK
    assert "Cilium reads their Secrets from bgp-secrets" in check.found


def test_status_report_off_and_old_cilium_are_said() -> None:
    docs = scenarios.documents("bgp-control-plane-off")
    scenarios.cilium_config(docs).update({"enable-bgp-control-plane": "true",
                                          "enable-bgp-control-plane-status-report": "false"})
    check = _report(docs).check("bgp-control-plane")
    assert check.severity is E and "status that tells whether" in check.found
    old = _report(scenarios.documents("bgp-control-plane-off"), cilium="1.15").check(
        "bgp-control-plane")
    assert "before 1.16 has no CiliumBGPClusterConfig" in old.found


def test_several_local_ases_on_one_node_set_are_a_note() -> None:
    docs = scenarios.documents("bgp-peers-conflict")
    again = _peer(docs, "router-again")
    again["spec"].update({"myASN": 64999, "peerAddress": "192.168.10.2"})
    check = _report(docs).check("bgp-peers")
    assert check.severity is N
    assert "speak AS 64512, 64999" in check.found


def test_graceful_restart_in_native_mode_blocks() -> None:
    docs = [d for d in scenarios.documents("bgp-graceful-restart")
            if not (d["kind"] == "DaemonSet" and d["metadata"]["name"] == "speaker")]
    docs += [d for d in scenarios.documents() if d["kind"] == "DaemonSet"
             and d["metadata"]["name"] == "speaker"]
    check = _report(docs).check("bgp-graceful-restart")
    assert check.severity is E and "refuses enableGracefulRestart" in check.found


def test_unused_bfd_profile_loses_nothing() -> None:
    docs = scenarios.documents("bgp-bfd")
    del _peer(docs)["spec"]["bfdProfile"]
    check = _report(docs).check("bgp-bfd")
    assert check.severity is OK and "1 BFDProfile(s) unused: nothing is lost" in check.found


def test_bgp_checks_block_what_would_make_the_handover_fail() -> None:
    """bgp-handover moves the sessions to Cilium: its BGP control plane off, or a router with
    two AS numbers, fails it; BFD's loss and graceful restart are only said."""
    blocking = {scenario: _report(scenarios.documents(scenario)).blocking
                for scenario in ("bgp-control-plane-off", "bgp-peers-conflict",
                                 "bgp-graceful-restart", "bgp-bfd")}
    assert blocking == {"bgp-control-plane-off": True, "bgp-peers-conflict": True,
                        "bgp-graceful-restart": False, "bgp-bfd": False}
