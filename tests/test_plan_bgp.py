"""The BGP stages of a plan: bgp-prepare before freeze-metallb, bgp-handover node by node after
ipam-handover, and decommission of MetalLB's BGP objects; a golden of the stages for bgp-kinds.
Set MIGRATE_UPDATE_GOLDEN=1 to rewrite the golden, then review the diff by eye."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from migrate.plan.api import load_plan, make_plan, save_plan
from migrate.plan.model import STAGE_NAMES, Plan
from migrate.sources.files import SourceDocument
from migrate.sources.snapshot import build_snapshot, read_snapshot
from tests.conftest import TESTDATA
from tests.helpers import run_cli

SCENARIO = TESTDATA / "clusters" / "bgp-kinds"
REPO_ROOT = Path(__file__).resolve().parents[1]
GOLDEN = TESTDATA / "plans" / "bgp-kinds-bgp-stages.yaml"
UPDATE = os.environ.get("MIGRATE_UPDATE_GOLDEN") == "1"
Obj = dict[str, Any]
HANDOVER = "lbmigrate.io/bgp-speaker"


def documents() -> list[Obj]:
    docs = []
    for path in sorted(SCENARIO.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def plan_of(docs: list[Obj], **kwargs: Any) -> Plan:
    snapshot = build_snapshot([SourceDocument(f"doc#{i}", d) for i, d in enumerate(docs)])
    return make_plan(snapshot, **kwargs)


def find(docs: list[Obj], kind: str, name: str) -> Obj:
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_bgp_stages_sit_where_the_webhook_and_the_pools_need_them() -> None:
    plan = make_plan(read_snapshot([str(SCENARIO)]))
    names = [s.name for s in plan.stages]
    assert names == ["preflight", "pin", "bgp-prepare", "freeze-metallb", "ipam-handover",
                     "bgp-handover", "l2-cutover", "decommission"]
    assert [n for n in STAGE_NAMES if n in names] == names  # STAGE_NAMES' order
    assert [s.number for s in plan.stages] == list(range(len(names)))
    assert not plan.blocked
    codes = {f.code for f in plan.findings}
    assert {"bgp-left-to-metallb", "decommission-keeps-bgp", "bgp-handover-label"} & codes == set()
    assert "bgp-handover" in codes


def test_the_handover_stops_metallb_then_starts_cilium_on_each_node_in_turn() -> None:
    plan = make_plan(read_snapshot([str(SCENARIO)]))
    stage = plan.stage("bgp-handover")
    steps = [(a.verb, a.target.kind, a.target.name, (a.patch or {}).get("metadata", {})
              .get("labels", {}).get(HANDOVER) if a.verb == "patch" else (a.wait or {})
              .get("for")) for a in stage.actions if a.verb in ("patch", "wait")]
    expected: list[tuple[str, str, str, str | None]] = [
        ("wait", "Secret", "*", "bgp-secrets")]
    for node in ("cp-1", "worker-1", "worker-2"):
        expected += [("patch", "Node", node, "none"),
                     ("wait", "ServiceBGPStatus", "*", "bgp-metallb-released"),
                     ("patch", "Node", node, "cilium"),
                     ("wait", "CiliumBGPNodeConfig", "*", "bgp-cilium-established")]
    assert steps == expected
    creates = [a for a in stage.actions if a.verb == "create"]
    assert [a.target.kind for a in creates][-1] == "CiliumBGPClusterConfig"  # selects last
    established = [a.wait for a in stage.actions if (a.wait or {}).get("for") ==
                   "bgp-cilium-established"]
    # The Local Service web/api is advertised from worker-1 and worker-2 only.
    assert [w["routes"] for w in established if w] == [
        {"cp-1": {"router": {"ipv4": 1}}}, {"worker-1": {"router": {"ipv4": 2}}},
        {"worker-2": {"router": {"ipv4": 2}}}]
    assert plan.context["bgp"]["batches"] == [["cp-1"], ["worker-1"], ["worker-2"]]


def test_bgp_prepare_requires_the_label_absent_on_every_peer_selector() -> None:
    docs = documents()
    find(docs, "BGPPeer", "router")["spec"]["nodeSelectors"] = [
        {"matchLabels": {"rack": "a"}}, {"matchExpressions": [
            {"key": "rack", "operator": "In", "values": ["b"]}]}]
    for node in (d for d in docs if d["kind"] == "Node"):
        node["metadata"]["labels"]["rack"] = "a"
    plan = plan_of(docs)
    (patch,) = [a for a in plan.stage("bgp-prepare").actions if a.verb == "patch"]
    absent = {"key": HANDOVER, "operator": "DoesNotExist"}
    assert patch.patch == {"spec": {"nodeSelectors": [
        {"matchLabels": {"rack": "a"}, "matchExpressions": [absent]},
        {"matchExpressions": [{"key": "rack", "operator": "In", "values": ["b"]}, absent]}]}}
    assert patch.target.api_version == "metallb.io/v1beta2"


def test_decommission_removes_metallb_s_bgp_objects_and_pools() -> None:
    plan = make_plan(read_snapshot([str(SCENARIO)]))
    deletes = {(a.target.kind, a.target.name) for a in plan.stage("decommission").actions
               if a.verb == "delete"}
    assert deletes == {("IPAddressPool", "lan"), ("IPAddressPool", "routed"),
                       ("BGPAdvertisement", "routed"), ("BGPPeer", "router"),
                       ("Community", "communities")}
    peer = next(a for a in plan.stage("decommission").actions if a.target.kind == "BGPPeer")
    # What bgp-prepare left on it is what decommission expects to find.
    assert peer.before is not None and peer.before["spec"]["nodeSelectors"]
    patches = {a.target.name for a in plan.stage("decommission").actions if a.verb == "patch"}
    assert patches == {"intranet", "public", "api"}  # BGP Services lose their MetalLB keys too


def test_a_plain_text_password_stays_out_of_the_plan_and_the_peer_is_kept(
        tmp_path: Path) -> None:
    docs = documents()
    spec = find(docs, "BGPPeer", "router")["spec"]
    del spec["passwordSecret"]
    spec["password"] = "do-not-print-me"
    plan = plan_of(docs)
    saved = tmp_path / "plan.yaml"
    save_plan(plan, saved)
    assert "do-not-print-me" not in saved.read_text()
    kinds = {a.target.kind for a in plan.stage("decommission").actions}
    assert "BGPPeer" not in kinds
    assert "decommission-keeps-bgppeer" in {f.code for f in plan.findings}


def test_a_plan_file_with_the_bgp_stages_loads_back(tmp_path: Path) -> None:
    plan = make_plan(read_snapshot([str(SCENARIO)]))
    for name in ("plan.yaml", "plan.json"):
        save_plan(plan, tmp_path / name)
        assert load_plan(tmp_path / name).to_dict() == plan.to_dict()
    data = plan.to_file()
    stage = next(s for s in data["stages"] if s["name"] == "bgp-handover")
    stage["actions"][0]["wait"]["for"] = "bgp-somthing"  # an unknown wait
    from migrate.errors import InputError
    from migrate.plan.model import content_digest

    data.pop("digest")
    data["digest"] = content_digest({k: v for k, v in data.items()})
    with pytest.raises(InputError):
        Plan.from_dict(data, origin="edited")


def test_a_local_service_with_one_endpoint_node_is_named() -> None:
    docs = documents()
    slices = find(docs, "EndpointSlice", "api-x7k2p")
    slices["endpoints"] = slices["endpoints"][:1]  # worker-1 only
    plan = plan_of(docs)
    (finding,) = [f for f in plan.findings if f.code == "bgp-single-next-hop"]
    assert finding.obj == "Service web/api"
    assert "203.0.113.2/32 is advertised from worker-1 only" in finding.message
    assert "externalTrafficPolicy Local" in finding.message


def test_batches_never_hold_every_next_hop_of_a_prefix() -> None:
    plan = make_plan(read_snapshot([str(SCENARIO)]), bgp_batch=2)
    # worker-1 and worker-2 are web/api's only next hops: they never go together.
    assert plan.context["bgp"]["batches"] == [["cp-1", "worker-1"], ["worker-2"]]
    three = make_plan(read_snapshot([str(SCENARIO)]), bgp_batch=3)
    assert three.context["bgp"]["batches"] == [["cp-1", "worker-1"], ["worker-2"]]


def test_native_mode_warns_that_the_peer_edit_resets_sessions() -> None:
    docs = documents()
    speaker = find(docs, "DaemonSet", "speaker")
    del speaker["spec"]["template"]["spec"]["containers"][0]["env"]
    docs = [d for d in docs if d["kind"] != "BFDProfile"]
    plan = plan_of(docs)
    assert "bgp-prepare-native-reset" in {f.code for f in plan.findings}


def test_plan_cli_takes_the_batch_size() -> None:
    result = run_cli("plan", "--from", str(SCENARIO), "--bgp-batch", "2", "-o", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["context"]["bgp"]["batches"][0] == ["cp-1", "worker-1"]
    assert run_cli("plan", "--from", str(SCENARIO), "--bgp-batch", "0").exit_code == 2


def test_bgp_stages_match_the_golden() -> None:
    plan = make_plan(read_snapshot([str(SCENARIO)]))
    document = {"stages": [s.to_dict() for s in plan.stages
                           if s.name in ("bgp-prepare", "bgp-handover")],
                "context": copy.deepcopy(plan.context["bgp"]),
                "findings": [f.to_dict() for f in plan.findings if f.code.startswith("bgp-")]}
    # Findings name their source file: relative to the repository, whatever the checkout.
    text = yaml.safe_dump(document, sort_keys=False, width=100).replace(
        str(REPO_ROOT) + "/", "")
    if UPDATE:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_the_bgppeer_bgp_prepare_writes_validates_against_metallb_s_crd(
        shared_dir: Path) -> None:
    import jsonschema

    from migrate.plan.model import merge_patch

    crd = shared_dir / "crds" / "metallb" / "bgppeers.metallb.io.yaml"
    schema = next(v["schema"]["openAPIV3Schema"]
                  for doc in yaml.safe_load_all(crd.read_text()) if doc
                  for v in doc["spec"]["versions"] if v["name"] == "v1beta2")
    plan = make_plan(read_snapshot([str(SCENARIO)]))
    for action in plan.stage("bgp-prepare").actions:
        body = find(documents(), "BGPPeer", action.target.name)
        written = merge_patch(body, action.patch)
        written["apiVersion"] = action.target.api_version
        jsonschema.validate(written, schema)
