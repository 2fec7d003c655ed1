"""Each preflight check, tripped alone by one scenario of testdata/preflight, with the finding
and remedy a user reads; and the clean base cluster passes every check."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from migrate.model.findings import Severity
from migrate.preflight import CheckSeverity, run_preflight
from tests.preflight import scenarios

E, W, N = CheckSeverity.ERROR, CheckSeverity.WARNING, CheckSeverity.INFO  # N: note


@dataclass(frozen=True)
class Case:
    scenario: str
    check: str
    severity: CheckSeverity
    found: tuple[str, ...]
    remedy: tuple[str, ...] = ()
    snippet: tuple[str, ...] = ()
    also: dict[str, CheckSeverity] = field(default_factory=dict)
    """Other checks that the same change trips, necessarily."""


CASES = [
    Case("no-operator", "cilium-installed", E, ("No Cilium operator Deployment",),
         ("Install Cilium",)),
    Case("no-agent", "cilium-installed", E, ("No Cilium agent DaemonSet",), ("Install Cilium",),
         also={"cilium-version": W}),
    Case("cilium-1.17", "known-bugs", W,
         ("Cilium 1.17.6", "cilium/cilium#43131, fixed in 1.18.2", "ipam-handover stage",
          "cilium/cilium#40358"),
         ("Upgrade Cilium to 1.18.2 or newer before migrating",)),
    Case("cilium-1.14", "cilium-version", E, ("Cilium 1.14.9", "too old"), ("Upgrade Cilium",),
         also={"known-bugs": W}),
    Case("kpr-off", "kube-proxy-replacement", E, ("kube-proxy-replacement is 'false'",),
         ("kubeProxyReplacement",), ("kubeProxyReplacement: true",)),
    Case("l2-off", "l2-announcements", E, ("enable-l2-announcements is not set",),
         ("Enable L2 announcements",), ("l2announcements:", "enabled: true")),
    Case("lbipam-off", "lb-ipam", E, ("enable-lb-ipam is 'false'",), ("LB-IPAM on",),
         ("enableLBIPAM: true",)),
    Case("default-ipam-nodeipam", "default-lb-service-ipam", E,
         ("default-lb-service-ipam is 'nodeipam'",), ("defaultLBServiceIPAM to lbipam",),
         ("defaultLBServiceIPAM: lbipam",)),
    Case("kube-proxy-daemonset", "kube-proxy", E, ("DaemonSet kube-system/kube-proxy",),
         ("remove kube-proxy",), ("kubectl -n kube-system delete daemonset kube-proxy",)),
    Case("kube-proxy-pods", "kube-proxy", E, ("Pod kube-system/kube-proxy-worker-1",),
         ("--disable-kube-proxy",)),
    Case("rate-limit-low", "client-rate-limit", E,
         ("2 Service(s) to announce", "retry period 0.5s", "renew deadline 1s is not above 1.2",
          "(worker-1, 2 election(s)) makes 4.0 lease requests/s",
          "k8s-client-qps 1 / burst 2"),
         ("qps 10 / burst 20",), ("k8sClientRateLimit:", "qps: 10", "burst: 20")),
    Case("device-missing", "l2-devices", E, ("Not among Cilium's devices: ens20",
                                             "L2Advertisement metallb-system/lan"),
         ("add the missing interfaces",), ("- eth0", "- ens20")),
    Case("device-subnet-missing", "l2-devices", E,
         ("restricted to eth0; MetalLB answers on every interface",
          "pool lan (192.168.10.64/27): on worker-1 its subnet 192.168.10.0/24 is on ens20",
          "answer on no interface of that subnet"),
         ("add the missing interfaces",), ("- eth0", "- ens20")),
    Case("device-subnet-unknown", "l2-devices", W,
         ("pool lan (192.168.10.64/27): cannot tell which device carries it on worker-1",
          "InternalIP 192.168.10.21"),
         ("device carrying the pool's subnet",), ("cilium-dbg shell -- db/show devices",)),
    Case("devices-auto", "l2-devices", W, ("auto-detects",), ("among the agent's devices",),
         ("cilium-dbg shell -- db/show devices",)),
    Case("ciliumnode-labels", "node-labels", E,
         ("cp-1 (would announce for L2Advertisement metallb-system/lan",),
         ("Give the CiliumNodes the Node labels",),
         ("kubectl label ciliumnode cp-1 --overwrite node-role.kubernetes.io/control-plane=",)),
    Case("no-ciliumnodes", "node-labels", W, ("No CiliumNode objects",),
         ("kubectl get ciliumnodes",)),
    Case("ipv6-pool", "ipv6", E, ("lan6", "Cilium 1.18 answers no NDP"),
         ("Upgrade Cilium to 1.19",)),
    Case("shared-ip-proto-diff-off", "shared-ip-protocols", E,
         ("192.168.10.70", "dns/dns-tcp, dns/dns-udp", "port 53 on TCP/UDP",
          "bpf-lb-proto-diff is 'false'"),
         ("protocol differentiation",), ("protocolDifferentiation:", "enabled: true")),
    Case("etp-local", "external-traffic-policy", W,
         ("web/site", "cilium/cilium#27800, fixed in 1.20.2", "dropped"),
         ("Switch those Services to externalTrafficPolicy Cluster",),
         ("kubectl -n web patch service site",)),
    Case("metallb-0.13", "known-bugs", W,
         ("MetalLB 0.13.12", "metallb/metallb#2443, fixed in 0.14.0",
          "no Service is pending now"),
         ("Upgrade MetalLB to 0.14.0 or newer before migrating",)),
    Case("sharing-key-several-ips", "known-bugs", E,
         ("Cilium 1.19.5", "ERROR an operator restart drops a Service's IP",
          "front (192.168.10.64, 192.168.10.66)", "cilium/cilium#46262, fixed in 1.19.7"),
         ("Upgrade Cilium to 1.19.7",)),
    Case("metallb-no-controller", "metallb", W, ("no MetalLB controller Deployment",),
         ("kubectl -n metallb-system get deployments",)),
    Case("metallb-lb-class", "metallb-lb-class", W,
         ("--lb-class=metallb.io/metallb", "infra/dns"), ("Recreate each of those Services",)),
    Case("metallb-frr-k8s", "metallb-frr", N, ("frr-k8s mode", "METALLB_BGP_TYPE=frr-k8s")),
    Case("bgp-control-plane-off", "bgp-control-plane", E,
         ("MetalLB peers with 1 BGP router(s)", "enable-bgp-control-plane is not set"),
         ("Enable Cilium's BGP control plane",), ("bgpControlPlane:", "enabled: true")),
    Case("bgp-peers-conflict", "bgp-peers", E,
         ("router 192.168.10.1:179 is given different AS numbers",
          "router (AS 64513), router-again (AS 64600)", "both peer with 192.168.10.1 from",
          "one session per neighbour address"),
         ("Give each router one AS number",)),
    Case("bgp-graceful-restart", "bgp-graceful-restart", N,
         ("1 BGPPeer(s) enable graceful restart (router)", "restartTimeSeconds 120"),
         ("keep a node's routes as stale for up to 120 s",), also={"metallb-frr": N}),
    Case("bgp-bfd", "bgp-bfd", W,
         ("router (profile fast: 150 ms, against a hold time of 30 s)", "has no BFD"),
         ("Lower the hold time",), also={"metallb-frr": N}),
    Case("metallb-webhook", "metallb-webhook", N,
         ("ValidatingWebhookConfiguration metallb-webhook-configuration", "failurePolicy Fail"),
         ("failurePolicy to Ignore",)),
    Case("foreign-lb-class", "foreign-lb-class", W,
         ("kube-vip.io/kube-vip-class", "edge/vip", "inside MetalLB pools"),
         ("Move those IPs out",)),
    Case("gitops-flux", "gitops", E,
         ("Flux Kustomization flux-system/infra (active) reconciles MetalLB",),
         ("Suspend reconciliation",), ("flux suspend kustomization infra -n flux-system",)),
    Case("gitops-argo", "gitops", W,
         ("Argo CD Application cilium (unknown) reconciles Cilium",),
         ("Suspend reconciliation",), ("argocd app set cilium --sync-policy none",)),
    Case("talos", "talos", N, ("2 Talos node(s) (Talos (v1.9.1))",),
         ("cluster.proxy.disabled",),
         ("talosctl patch machineconfig --nodes 192.168.10.11,192.168.10.21",
          "disabled: true", "name: none")),
]


def test_every_scenario_folder_has_a_case() -> None:
    assert sorted(case.scenario for case in CASES) == scenarios.scenario_names()


def test_clean_cluster_passes_every_check_but_reports_its_known_bugs() -> None:
    report = run_preflight(scenarios.snapshot(scenarios.documents()))
    assert [c.name for c in report.checks if not c.ok] == ["known-bugs"]
    bugs = report.check("known-bugs")
    # Cilium 1.18.4: the L2 responder bug (fixed in 1.20.0) and, for later, pool shrinking.
    assert bugs.severity is W
    assert bugs.found.startswith("Cilium 1.18.4, MetalLB 0.15.2: 2 known bug(s) apply.")
    assert "cilium/cilium#45068" in bugs.found and "cilium/cilium#41458" in bugs.found
    assert "delete the Cilium agent pod" in bugs.remedy
    assert not report.blocking
    assert [f.code for f in report.findings()] == ["preflight:known-bugs"]
    assert report.snippet_blocks == []
    assert report.cilium_version == "1.18.4"


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.scenario)
def test_scenario_trips_its_check_alone(case: Case) -> None:
    report = run_preflight(scenarios.snapshot(scenarios.documents(case.scenario)))
    tripped = scenarios.tripped(report)
    assert tripped == {case.check: case.severity, **case.also}
    result = report.check(case.check)
    for text in case.found:
        assert text in result.found
    for text in case.remedy:
        assert text in result.remedy
    for text in case.snippet:
        assert result.snippet is not None and text in result.snippet
    assert report.blocking == (CheckSeverity.ERROR in tripped.values())


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.scenario)
def test_findings_carry_the_check_for_stage_zero(case: Case) -> None:
    report = run_preflight(scenarios.snapshot(scenarios.documents(case.scenario)))
    findings = {f.code: f for f in report.findings()}
    assert set(findings) == {f"preflight:{c.name}" for c in report.checks if not c.ok}
    finding = findings[f"preflight:{case.check}"]
    assert finding.severity is Severity(case.severity.value)
    assert case.found[0] in finding.message
    assert finding.obj


def test_findings_name_the_config_key_to_change() -> None:
    report = run_preflight(scenarios.snapshot(scenarios.documents("kpr-off")))
    (finding,) = [f for f in report.findings() if f.code == "preflight:kube-proxy-replacement"]
    assert finding.obj == "ConfigMap kube-system/cilium-config"
    assert finding.field == "data.kube-proxy-replacement"


def test_no_metallb_at_all_blocks() -> None:
    docs = [d for d in scenarios.documents()
            if not str(d["apiVersion"]).startswith("metallb.io/")
            and (d.get("metadata") or {}).get("namespace") != "metallb-system"]
    report = run_preflight(scenarios.snapshot(docs))
    assert report.check("metallb").severity is E
    assert "Nothing to migrate" in report.check("metallb").remedy


# -- versions -------------------------------------------------------------------------------
def test_target_version_19_allows_ipv6_but_says_the_agent_differs() -> None:
    snap = scenarios.snapshot(scenarios.documents("ipv6-pool"))
    report = run_preflight(snap, cilium_version="1.19")
    assert report.check("ipv6").severity is N
    assert "answers NDP" in report.check("ipv6").found
    version = report.check("cilium-version")
    assert version.severity is W
    assert "runs 1.18.4" in version.found and "Upgrade Cilium to 1.19" in version.remedy
    assert not report.blocking


def test_requested_minor_of_the_running_agent_uses_its_patch_level() -> None:
    report = run_preflight(scenarios.snapshot(scenarios.documents()), cilium_version="1.18")
    assert report.check("cilium-version").ok
    assert report.cilium_version == "1.18.4"


def test_requested_minor_alone_cannot_rule_out_the_reshuffle_bug() -> None:
    docs = scenarios.documents()
    for doc in docs:
        if doc["kind"] in ("DaemonSet", "Deployment") and "cilium" in doc["metadata"]["name"]:
            container = doc["spec"]["template"]["spec"]["containers"][0]
            container["image"] = container["image"].split(":")[0] + "@sha256:0123abcd"
    report = run_preflight(scenarios.snapshot(docs), cilium_version="1.18")
    bugs = report.check("known-bugs")
    assert bugs.severity is W
    assert ("may apply (patch release unknown): an operator restart can re-address"
            in bugs.found)
    assert "--cilium-version X.Y.Z" in bugs.remedy
    # 1.18.4 is past the fix.
    exact = run_preflight(scenarios.snapshot(docs), cilium_version="1.18.4")
    assert "cilium/cilium#43131" not in exact.check("known-bugs").found


def test_untagged_image_leaves_the_version_unknown() -> None:
    docs = scenarios.documents("ipv6-pool")
    agent = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "cilium")
    agent["spec"]["template"]["spec"]["containers"][0]["image"] = (
        "mirror.local/cilium/cilium@sha256:0123abcd")
    report = run_preflight(scenarios.snapshot(docs))
    assert report.check("cilium-version").severity is W
    assert "--cilium-version" in report.check("cilium-version").remedy
    assert report.check("ipv6").severity is W  # cannot tell whether NDP is there
    assert report.cilium_version is None


def test_before_116_the_kube_proxy_replacement_value_is_strict() -> None:
    docs = scenarios.documents("kpr-off")
    agent = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "cilium")
    agent["spec"]["template"]["spec"]["containers"][0]["image"] = "quay.io/cilium/cilium:v1.15.7"
    report = run_preflight(scenarios.snapshot(docs))
    assert report.check("kube-proxy-replacement").helm_values == {"kubeProxyReplacement": "strict"}
    assert report.check("default-lb-service-ipam").ok


# -- rate limit --------------------------------------------------------------------------------
def _with_services(count: int) -> list[dict[str, Any]]:
    docs = scenarios.documents()
    pool = next(d for d in docs if d["kind"] == "IPAddressPool")
    pool["spec"]["addresses"] = ["10.20.0.0/24"]
    for index in range(count):
        docs.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{index}", "namespace": "many"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": f"10.20.0.{index + 1}"}]}},
        })
    return [d for d in docs if not (d["kind"] == "Service" and d["metadata"]["namespace"]
                                    in ("web", "infra"))]


def test_many_services_outgrow_the_default_rate_limit() -> None:
    report = run_preflight(scenarios.snapshot(_with_services(120)))
    result = report.check("client-rate-limit")
    assert result.severity is E
    # One agent (worker-1) runs all 120 elections: one request each per 2s retry period.
    assert "120 Service(s) to announce, 1 eligible agent(s), retry period 2s" in result.found
    assert "60.0 renewals/s" in result.found and "makes 60.0 lease requests/s" in result.found
    assert "the last waits about 10.0s" in result.found  # (120 - burst 20) / qps 10
    assert result.helm_values is not None
    limit = result.helm_values["k8sClientRateLimit"]
    assert limit["qps"] >= 120 / 2 * 1.5 and limit["burst"] > limit["qps"]


def test_little_headroom_is_a_warning() -> None:
    docs = _with_services(15)  # 7.5 lease requests per second against qps 10
    report = run_preflight(scenarios.snapshot(docs))
    assert report.check("client-rate-limit").severity is W


def test_services_outside_announced_pools_need_no_lease() -> None:
    docs = _with_services(120)
    ad = next(d for d in docs if d["kind"] == "L2Advertisement")
    ad["spec"]["ipAddressPools"] = ["other"]
    report = run_preflight(scenarios.snapshot(docs))
    assert report.check("client-rate-limit").ok
    assert "0 Service(s) to announce" in report.check("client-rate-limit").found


# -- GitOps ------------------------------------------------------------------------------------
def test_suspended_flux_kustomization_passes() -> None:
    docs = scenarios.documents("gitops-flux")
    kustomization = next(d for d in docs if d["kind"] == "Kustomization")
    kustomization["spec"]["suspend"] = True
    result = run_preflight(scenarios.snapshot(docs)).check("gitops")
    assert result.ok
    assert "flux-system/infra (paused)" in result.found


def test_argo_application_with_automated_sync_blocks() -> None:
    docs = scenarios.documents("gitops-argo")
    app: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "cilium", "namespace": "argocd"},
        "spec": {"syncPolicy": {"automated": {"selfHeal": True}}},
    }
    report = run_preflight(scenarios.snapshot([*docs, app]))
    assert report.check("gitops").severity is E
    del app["spec"]["syncPolicy"]["automated"]
    assert run_preflight(scenarios.snapshot([*docs, app])).check("gitops").ok


def test_helm_instance_label_alone_is_not_argo() -> None:
    docs = scenarios.documents()
    agent = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "cilium")
    agent["metadata"]["labels"]["app.kubernetes.io/instance"] = "cilium"
    assert run_preflight(scenarios.snapshot(docs)).check("gitops").ok
    app = {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
           "metadata": {"name": "cilium", "namespace": "argocd"}, "spec": {}}
    result = run_preflight(scenarios.snapshot([*docs, app])).check("gitops")
    assert result.ok and "Argo CD Application cilium (paused)" in result.found


def test_flux_helmrelease_of_the_metallb_chart_owns_metallb() -> None:
    release = {"apiVersion": "helm.toolkit.fluxcd.io/v2", "kind": "HelmRelease",
               "metadata": {"name": "metallb", "namespace": "metallb-system"},
               "spec": {"chart": {"spec": {"chart": "metallb", "version": "0.15.2"}}}}
    result = run_preflight(
        scenarios.snapshot([*scenarios.documents(), release])).check("gitops")
    assert result.severity is E
    assert result.snippet is not None
    assert "flux suspend helmrelease metallb -n metallb-system" in result.snippet


def test_argo_app_in_another_namespace() -> None:
    docs = scenarios.documents()
    service = next(d for d in docs if d["kind"] == "Service")
    service["metadata"]["labels"] = {"argocd.argoproj.io/instance": "apps_web"}
    result = run_preflight(scenarios.snapshot(docs)).check("gitops")
    assert result.severity is W
    assert "reconciles Services" in result.found
    assert result.snippet is not None
    assert "argocd app set apps/web --sync-policy none" in result.snippet


# -- Talos and kube-proxy ----------------------------------------------------------------------
def test_talos_with_kube_proxy_points_at_the_machine_config() -> None:
    docs = scenarios.documents("talos", "kube-proxy-daemonset")
    report = run_preflight(scenarios.snapshot(docs))
    assert report.check("kube-proxy").severity is E
    assert "machine config" in report.check("kube-proxy").remedy
    assert report.check("talos").severity is W


def test_kube_proxy_replacement_on_talos_uses_the_local_api_proxy() -> None:
    docs = scenarios.documents("talos")
    scenarios.cilium_config(docs)["kube-proxy-replacement"] = "false"
    result = run_preflight(scenarios.snapshot(docs)).check("kube-proxy-replacement")
    assert result.helm_values == {"kubeProxyReplacement": True, "k8sServiceHost": "localhost",
                                  "k8sServicePort": 7445}


def test_pods_of_a_listed_daemonset_are_not_listed_again() -> None:
    docs = scenarios.documents("kube-proxy-daemonset")
    docs.append({"apiVersion": "v1", "kind": "Pod",
                 "metadata": {"name": "kube-proxy-abcde", "namespace": "kube-system",
                              "labels": {"k8s-app": "kube-proxy"},
                              "ownerReferences": [{"kind": "DaemonSet", "name": "kube-proxy"}]}})
    result = run_preflight(scenarios.snapshot(docs)).check("kube-proxy")
    assert result.found == "kube-proxy still runs: DaemonSet kube-system/kube-proxy."


def test_node_without_ciliumnode_is_reported() -> None:
    docs = [d for d in scenarios.documents()
            if not (d["kind"] == "CiliumNode" and d["metadata"]["name"] == "worker-1")]
    result = run_preflight(scenarios.snapshot(docs)).check("node-labels")
    assert result.severity is W and "No CiliumNode for worker-1" in result.found


def test_excluded_node_label_must_be_on_the_ciliumnode_too() -> None:
    # MetalLB never announces from a node with the exclude label [M8]; Cilium's policy only
    # sees CiliumNode labels, so the label must be there as well.
    docs = scenarios.documents()
    node = next(d for d in docs if d["kind"] == "Node" and d["metadata"]["name"] == "worker-1")
    node["metadata"]["labels"]["node.kubernetes.io/exclude-from-external-load-balancers"] = ""
    result = run_preflight(scenarios.snapshot(docs)).check("node-labels")
    assert result.severity is E
    assert "worker-1 (would announce" in result.found
    assert result.snippet is not None
    assert "node.kubernetes.io/exclude-from-external-load-balancers=" in result.snippet


def test_foreign_class_outside_the_pools_is_only_noted() -> None:
    docs = scenarios.documents("foreign-lb-class")
    service = next(d for d in docs if d["metadata"]["name"] == "vip")
    service["status"]["loadBalancer"]["ingress"][0]["ip"] = "10.99.0.1"
    result = run_preflight(scenarios.snapshot(docs)).check("foreign-lb-class")
    assert result.severity is N and "left alone" in result.found


def test_without_cilium_config_the_defaults_apply() -> None:
    docs = [d for d in scenarios.documents() if d["kind"] != "ConfigMap"]
    report = run_preflight(scenarios.snapshot(docs))
    tripped = scenarios.tripped(report)
    # KPR and L2 announcements default to off, LB-IPAM to on; devices to auto-detection [C5].
    assert tripped == {"kube-proxy-replacement": E, "l2-announcements": E, "l2-devices": W}
    assert "cilium-config is not in the input" in report.check("l2-announcements").found


def test_snippets_come_in_the_order_to_apply_them() -> None:
    docs = scenarios.documents("kpr-off", "talos", "kube-proxy-daemonset")
    report = run_preflight(scenarios.snapshot(docs))
    assert [title for title, _ in report.snippet_blocks] == [
        "Cilium Helm values", "talos", "kube-proxy"]


def test_before_117_shared_tcp_and_udp_on_one_port_blocks() -> None:
    docs = scenarios.documents("shared-ip-proto-diff-off")
    agent = next(d for d in docs if d["kind"] == "DaemonSet" and d["metadata"]["name"] == "cilium")
    agent["spec"]["template"]["spec"]["containers"][0]["image"] = "quay.io/cilium/cilium:v1.16.9"
    check = run_preflight(scenarios.snapshot(docs)).check("shared-ip-protocols")
    assert check.severity == E
    assert "by number only" in check.found and "Upgrade Cilium to 1.17" in check.remedy


def test_shared_tcp_and_udp_pass_with_protocol_differentiation() -> None:
    docs = scenarios.documents("shared-ip-proto-diff-off")
    del next(d for d in docs if d["kind"] == "ConfigMap"
             and d["metadata"]["name"] == "cilium-config")["data"]["bpf-lb-proto-diff"]
    assert run_preflight(scenarios.snapshot(docs)).check("shared-ip-protocols").ok


# -- devices of restricted Cilium, for pools MetalLB announced on every interface ------------
def _everywhere(devices: str) -> list[dict[str, Any]]:
    """The device-subnet-unknown cluster (no interfaces named) with Cilium's devices set."""
    docs = scenarios.documents("device-subnet-unknown")
    scenarios.cilium_config(docs)["devices"] = devices
    return docs


def _annotate(docs: list[dict[str, Any]], node: str, interfaces: str) -> None:
    body = next(d for d in docs if d["kind"] == "Node" and d["metadata"]["name"] == node)
    body["metadata"].setdefault("annotations", {})["lab.lbmigrate.io/interfaces"] = interfaces


def test_a_pool_on_one_of_ciliums_devices_passes() -> None:
    docs = _everywhere("eth+")  # a prefix, as Cilium's devices option allows
    _annotate(docs, "worker-1", "eth1=192.168.10.21/24,ens20")
    result = run_preflight(scenarios.snapshot(docs)).check("l2-devices")
    assert result.ok
    assert "pool lan (192.168.10.64/27) is reached through worker-1 (eth1)" in result.found


def test_a_pool_far_from_every_node_address_cannot_be_placed() -> None:
    docs = _everywhere("eth0")
    next(d for d in docs if d["kind"] == "IPAddressPool")["spec"]["addresses"] = [
        "10.50.0.0/28"]
    for service in (d for d in docs if d["kind"] == "Service"):
        ip = service["status"]["loadBalancer"]["ingress"][0]["ip"]
        service["status"]["loadBalancer"]["ingress"][0]["ip"] = "10.50.0." + ip.split(".")[-1][-1]
    result = run_preflight(scenarios.snapshot(docs)).check("l2-devices")
    assert result.severity is W
    assert "near none of its addresses" in result.found


def test_an_interface_without_an_address_in_the_pool_subnet_is_not_a_carrier() -> None:
    docs = _everywhere("eth0")
    _annotate(docs, "worker-1", "eth0=10.0.0.21/24,ens20")  # ens20 has no address
    result = run_preflight(scenarios.snapshot(docs)).check("l2-devices")
    assert result.severity is W
    assert "no interface of the node has an address in its subnet" in result.found


def test_talos_machine_config_tells_the_interfaces_of_its_node() -> None:
    docs = _everywhere("eth0")
    config = {
        "version": "v1alpha1",
        "machine": {"type": "worker", "network": {"hostname": "worker-1", "interfaces": [
            {"interface": "eth0", "addresses": ["10.0.0.21/24"],
             "vlans": [{"vlanId": 20, "addresses": ["192.168.10.21/24"]}]},
            {"deviceSelector": {"driver": "virtio"}, "addresses": ["172.16.0.5/24"]},
        ]}},
        "cluster": {"proxy": {"disabled": True}, "network": {"cni": {"name": "none"}}},
    }
    report = run_preflight(scenarios.snapshot([*docs, config]))
    result = report.check("l2-devices")
    assert result.severity is E
    assert "on worker-1 its subnet 192.168.10.0/24 is on eth0.20" in result.found
    assert result.helm_values == {"devices": ["eth0", "eth0.20"]}


def test_named_interfaces_and_open_advertisements_are_both_checked() -> None:
    docs = scenarios.documents("device-subnet-missing")
    docs.append({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                 "metadata": {"name": "mgmt", "namespace": "metallb-system"},
                 "spec": {"ipAddressPools": ["lan"], "interfaces": ["bond0"]}})
    result = run_preflight(scenarios.snapshot(docs)).check("l2-devices")
    assert result.severity is E
    assert "Not among Cilium's devices: bond0" in result.found
    assert "is on ens20" in result.found
    assert result.helm_values == {"devices": ["eth0", "bond0", "ens20"]}


def test_devices_are_not_checked_per_pool_when_cilium_auto_detects() -> None:
    docs = _everywhere("")
    del scenarios.cilium_config(docs)["devices"]
    result = run_preflight(scenarios.snapshot(docs)).check("l2-devices")
    assert result.ok and "Cilium will announce on all of its devices" in result.found
