"""The translator writes only labels the API server stores, whatever the MetalLB pool names.

A pool's name is any DNS-1123 subdomain of up to 253 characters (the API server's rule for
custom resource names; the IPAddressPool CRD adds nothing to it), while a label value has at
most 63 characters. The properties here hold for every such set of pool names: every label key
and value the translator writes validates, each pool has a value of its own, the pinned
Services match their pool's selector and no other, and every object written passes the lab's
API server as it validates (names, labels, annotations and the CRD schemas), on a dry run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migrate.lab.store import ApiError, Store
from migrate.model.names import (
    dns1123_subdomain_errors,
    is_label_value,
    label_safe_value,
    label_safe_values,
    label_value_errors,
    qualified_name_errors,
    subdomain_safe,
)
from migrate.model.selectors import matches
from migrate.render import convert_documents
from migrate.sources.files import SourceDocument
from migrate.sources.snapshot import build_snapshot
from migrate.translate.translator import translate

ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


@st.composite
def dns_label(draw: st.DrawFn) -> str:
    """One dot-free part of a DNS-1123 subdomain (the subdomain rule does not bound its length)."""
    first = draw(st.sampled_from(ALNUM))
    middle = draw(st.text(alphabet=ALNUM + "-", max_size=60))
    last = draw(st.sampled_from(ALNUM))
    return first if draw(st.booleans()) and not middle else first + middle + last


@st.composite
def pool_name(draw: st.DrawFn) -> str:
    """A name the API server accepts for an IPAddressPool: a DNS-1123 subdomain ≤ 253."""
    name = ".".join(draw(st.lists(dns_label(), min_size=1, max_size=4)))
    assert len(name) <= 253 and not dns1123_subdomain_errors(name)
    return name


def test_pool_names_are_not_constrained_by_the_crd_schema(shared_dir: Path) -> None:
    """The CRD's schema has no rule on metadata.name: the API server's subdomain rule is all."""
    crd = yaml.safe_load((shared_dir / "crds" / "metallb" / "ipaddresspools.metallb.io.yaml")
                         .read_text())
    for version in crd["spec"]["versions"]:
        metadata = version["schema"]["openAPIV3Schema"]["properties"]["metadata"]
        assert metadata == {"type": "object"}


# --------------------------------------------------------------------------- the mapping


def test_a_valid_value_stands_for_itself() -> None:
    for name in ("web-pool", "a", "x" * 63, "pool.example.com"):
        assert label_safe_value(name) == name


def test_a_long_name_keeps_a_readable_prefix_and_a_stable_hash() -> None:
    name = "reserved-for-the-payment-platform-ingress-gateways-in-datacenter-one-eu"
    value = label_safe_value(name)
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    assert value == f"reserved-for-the-payment-platform-ingress-gateways-in-{digest}"
    assert len(value) <= 63 and is_label_value(value)
    assert label_safe_value(name) == value, "deterministic"


def test_a_verbatim_name_and_a_shortened_one_never_meet() -> None:
    long_name = "p" * 80
    squatter = label_safe_value(long_name)  # another pool is literally named like that
    values = label_safe_values([long_name, squatter])
    assert values[squatter] == squatter
    assert values[long_name] != squatter and is_label_value(values[long_name])


def _hash_collision() -> tuple[str, str]:
    """Two names with the same prefix whose sha256 agree on their first 8 hex digits."""
    seen: dict[str, str] = {}
    for index in range(1_000_000):
        name = f"{'a' * 60}-{index}"
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        if digest in seen:
            return seen[digest], name
        seen[digest] = name
    raise AssertionError("no collision found")  # pragma: no cover


def test_names_whose_short_hashes_collide_still_get_distinct_values() -> None:
    first, second = _hash_collision()
    assert label_safe_value(first) == label_safe_value(second)
    values = label_safe_values([second, first])
    assert values[first] != values[second]
    assert all(is_label_value(v) for v in values.values())
    assert values == label_safe_values([first, second]), "independent of the order"


def test_policy_names_stay_valid_names_when_an_advertisement_splits() -> None:
    """An L2Advertisement with two node selectors becomes two policies, NAME-1 and NAME-2:
    with a 253-character NAME, those are shortened (with a hash) to valid names."""
    name = ".".join(["a" * 62] * 4) + "bc"
    assert len(name) == 253 and not dns1123_subdomain_errors(name)
    docs = _documents(["pool"], 1)
    docs[-1].body["metadata"]["name"] = name
    docs[-1].body["spec"]["nodeSelectors"] = [{"matchLabels": {"zone": "a"}},
                                              {"matchLabels": {"zone": "b"}}]
    policies = [p["metadata"]["name"] for p in translate(build_snapshot(docs)).policies]
    assert len(policies) == 2 and len(set(policies)) == 2
    for policy in policies:
        assert not dns1123_subdomain_errors(policy), policy
    assert policies == [subdomain_safe(f"{name}-1"), subdomain_safe(f"{name}-2")]
    assert subdomain_safe("short-1") == "short-1"


# --------------------------------------------------------------------------- the translator


def _documents(names: list[str], announced: int) -> list[SourceDocument]:
    """One reserved pool (autoAssign false: its Cilium pool selects by the pool label) and one
    Service per name; one L2Advertisement announces the first ``announced`` pools only."""
    docs = []
    for index, name in enumerate(names):
        docs.append(SourceDocument(f"pool#{index}", {
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": name, "namespace": "metallb-system"},
            "spec": {"addresses": [f"10.9.{index}.0/24"], "autoAssign": False}}))
        docs.append(SourceDocument(f"svc#{index}", {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{index}", "namespace": "apps",
                         "annotations": {"metallb.io/address-pool": name}},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
            "status": {"loadBalancer": {"ingress": [{"ip": f"10.9.{index}.7"}]}}}))
    docs.append(SourceDocument("ad", {
        "apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
        "metadata": {"name": "some", "namespace": "metallb-system"},
        "spec": {"ipAddressPools": names[:announced]}}))
    return docs


def _selectors(obj: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = obj.get("spec") or {}
    for key in ("serviceSelector", "nodeSelector"):
        if spec.get(key):
            yield spec[key]


def _label_problems(labels: dict[str, str]) -> list[str]:
    return [*(p for key in labels for p in qualified_name_errors(key)),
            *(p for value in labels.values() for p in label_value_errors(value))]


def _selector_problems(selector: dict[str, Any]) -> list[str]:
    problems = _label_problems(selector.get("matchLabels") or {})
    for expr in selector.get("matchExpressions") or []:
        problems += qualified_name_errors(expr["key"])
        problems += [p for value in expr.get("values") or [] for p in label_value_errors(value)]
    return problems


@pytest.fixture(scope="module")
def store() -> Store:
    """A lab store (the MetalLB and Cilium CRDs) that every written object must pass."""
    return Store()


@settings(max_examples=120, deadline=None, suppress_health_check=[
    HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(names=st.lists(pool_name(), min_size=1, max_size=4, unique=True),
       announced=st.integers(min_value=1, max_value=4))
def test_every_label_the_translator_writes_validates(store: Store, names: list[str],
                                                     announced: int) -> None:
    announced = min(announced, len(names))
    snapshot = build_snapshot(_documents(names, announced))
    translation = translate(snapshot)
    assert not [f for f in translation.findings if f.severity.value == "ERROR"]
    values = translation.pool_labels
    assert set(values) == set(names)
    assert len(set(values.values())) == len(names), "one value per pool"
    for name, value in values.items():
        assert is_label_value(value)
        assert value == name or any(
            f.code == "pool-label-value" and value in f.message and name in f.obj
            for f in translation.findings)
    for obj in translation.objects():
        assert not _label_problems(obj["metadata"].get("labels") or {}), obj
        for selector in _selectors(obj):
            assert not _selector_problems(selector), selector
    pools = {pool["metadata"]["name"]: pool for pool in translation.pools}
    for pin in translation.pins:
        assert not _label_problems(pin.labels)
        assert pin.pool is not None
        view = {**pin.labels, "io.kubernetes.service.namespace": pin.namespace,
                "io.kubernetes.service.name": pin.name}
        selected_by = {name for name, pool in pools.items()
                       if matches(pool["spec"].get("serviceSelector"), view)}
        assert selected_by == {pin.pool}, "the Service matches its own pool only"
        announced_by = [p for p in translation.policies
                        if matches(p["spec"].get("serviceSelector"), view)]
        assert bool(announced_by) == (pin.pool in names[:announced])
    for obj in convert_documents(snapshot, translation):
        try:
            store.create(obj, dry_run=True)
        except ApiError as exc:  # pragma: no cover - the assertion shows it
            raise AssertionError(
                f"the API server would refuse {obj['kind']}: {exc.message}") from None


def test_convert_json_and_the_plan_record_the_value_of_each_pool() -> None:
    from migrate.plan.api import make_plan
    from migrate.sources.snapshot import read_snapshot
    from tests.conftest import TESTDATA
    from tests.helpers import run_cli

    case = TESTDATA / "convert" / "long-pool-name" / "input.yaml"
    payload = json.loads(run_cli("convert", "-f", str(case), "-o", "json").stdout)
    labels = payload["poolLabels"]
    assert labels["general"] == "general"
    long_names = [name for name in labels if len(name) > 63]
    assert len(long_names) == 2
    for name in long_names:
        assert labels[name] == label_safe_value(name)
        pins = [p for p in payload["pins"] if p["pool"] == name]
        assert pins and all(p["labels"]["lbmigrate.io/pool"] == labels[name] for p in pins)
    plan = make_plan(read_snapshot([case]), preflight=False)
    assert plan.context["poolLabels"] == labels
