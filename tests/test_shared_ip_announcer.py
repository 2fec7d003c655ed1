"""Services sharing an IP are announced through one of them (cilium/cilium#48419): the
translation labels the others followers and every L2 policy leaves them out, or says why not."""

from __future__ import annotations

from pathlib import Path

from migrate.model.selectors import matches
from migrate.sources.snapshot import read_snapshot
from migrate.translate.translator import ANNOUNCED_WITH_ANNOTATION, Translation, translate

FOLLOWER = "lbmigrate.io/shared-ip-follower"

POOL = """
apiVersion: metallb.io/v1beta1
kind: IPAddressPool
metadata: {name: dns, namespace: metallb-system}
spec: {addresses: [10.90.0.0/28, "fd00::/120"]}
"""


def service(name: str, ips: list[str], *, labels: str = "{}", key: str = "k") -> str:
    ingress = ", ".join(f"{{ip: '{ip}'}}" for ip in ips)
    return f"""
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: dns
  labels: {labels}
  annotations: {{metallb.io/allow-shared-ip: {key}}}
spec:
  type: LoadBalancer
  selector: {{app: dns}}
  ports: [{{name: {name}, port: {53 if name.endswith('udp') else 80 + len(name)}, protocol: TCP}}]
status: {{loadBalancer: {{ingress: [{ingress}]}}}}
"""


def translated(tmp_path: Path, *documents: str) -> Translation:
    path = tmp_path / "input.yaml"
    path.write_text("---".join(documents))
    return translate(read_snapshot([str(path)]), cilium="1.18")


def selected(translation: Translation, name: str) -> bool:
    """True when some L2 policy selects the pinned Service dns/NAME."""
    pin = next(p for p in translation.pins if p.name == name)
    labels = {**pin.labels, "io.kubernetes.service.namespace": "dns",
              "io.kubernetes.service.name": name}
    return any(matches(p["spec"].get("serviceSelector"), labels) for p in translation.policies)


AD = """
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {name: dns, namespace: metallb-system}
"""


def test_the_first_sharer_announces_and_the_others_follow(tmp_path: Path) -> None:
    translation = translated(tmp_path, POOL, AD, service("b-udp", ["10.90.0.2"]),
                             service("a-tcp", ["10.90.0.2"]), service("c-web", ["10.90.0.2"]))
    pins = {pin.name: pin for pin in translation.pins}
    assert FOLLOWER not in pins["a-tcp"].labels and selected(translation, "a-tcp")
    for name in ("b-udp", "c-web"):
        assert pins[name].labels[FOLLOWER] == "true"
        assert pins[name].annotations[ANNOUNCED_WITH_ANNOTATION] == "dns/a-tcp"
        assert not selected(translation, name)
    (finding,) = [f for f in translation.findings if f.code == "shared-ip-one-announcer"]
    assert finding.obj == "Service dns/a-tcp"
    assert "Deleting dns/a-tcp stops the announcement of 10.90.0.2" in finding.message


def test_the_sharer_with_more_ips_leads(tmp_path: Path) -> None:
    translation = translated(tmp_path, POOL, AD, service("a-v4", ["10.90.0.2"]),
                             service("b-dual", ["10.90.0.2", "fd00::2"]))
    pins = {pin.name: pin for pin in translation.pins}
    assert FOLLOWER in pins["a-v4"].labels and FOLLOWER not in pins["b-dual"].labels


def test_a_sharer_with_an_ip_of_its_own_stays_announced_with_a_warning(tmp_path: Path) -> None:
    translation = translated(tmp_path, POOL, AD, service("a-dual", ["10.90.0.2", "fd00::2"]),
                             service("b-dual", ["10.90.0.2", "fd00::3"]))
    assert all(FOLLOWER not in pin.labels for pin in translation.pins)
    assert selected(translation, "a-dual") and selected(translation, "b-dual")
    (warning,) = [f for f in translation.findings if f.code == "shared-ip-two-announcers"]
    assert warning.obj == "Service dns/b-dual"
    assert "it also holds an IP it does not share" in warning.message
    assert "cilium/cilium#48419" in warning.message


def test_sharers_selected_by_different_policies_stay_announced(tmp_path: Path) -> None:
    ads = [f"""
apiVersion: metallb.io/v1beta1
kind: L2Advertisement
metadata: {{name: {name}, namespace: metallb-system}}
spec:
  ipAddressPools: [dns]
  serviceSelectors: [{{matchLabels: {{tier: {name}}}}}]
  interfaces: [{interface}]
""" for name, interface in (("front", "eth0"), ("back", "eth1"))]
    translation = translated(tmp_path, POOL, *ads,
                             service("a-tcp", ["10.90.0.2"], labels="{tier: front}"),
                             service("b-udp", ["10.90.0.2"], labels="{tier: back}"))
    assert all(FOLLOWER not in pin.labels for pin in translation.pins)
    (warning,) = [f for f in translation.findings if f.code == "shared-ip-two-announcers"]
    assert "the L2 policies select it differently from dns/a-tcp" in warning.message


def test_without_shared_ips_the_policies_are_unchanged(tmp_path: Path) -> None:
    translation = translated(tmp_path, POOL, AD, service("a-tcp", ["10.90.0.2"]),
                             service("b-udp", ["10.90.0.3"], key="other"))
    assert all("serviceSelector" not in p["spec"] for p in translation.policies)
    assert not [f for f in translation.findings if f.code.startswith("shared-ip")]
