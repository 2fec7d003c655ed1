"""Every Cilium object the translator writes validates against Cilium's own CRDs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import TESTDATA
from tests.helpers import crd_schemas

GOLDENS = sorted((TESTDATA / "convert").glob("*/expected.yaml"))


def _cilium_objects() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for path in GOLDENS:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and str(doc.get("apiVersion", "")).startswith("cilium.io/"):
                out.append((f"{path.parent.name}/{doc['kind']}/{doc['metadata']['name']}", doc))
    return out


OBJECTS = _cilium_objects()


@pytest.fixture(scope="module")
def schemas(shared_dir: Path) -> dict[tuple[str, str], dict[str, Any]]:
    crds = shared_dir / "crds" / "cilium"
    if not crds.is_dir():
        pytest.skip(f"{crds} is absent")
    return crd_schemas(crds)


def test_goldens_hold_cilium_objects() -> None:
    kinds = {doc["kind"] for _, doc in OBJECTS}
    assert kinds == {"CiliumLoadBalancerIPPool", "CiliumL2AnnouncementPolicy",
                     "CiliumBGPClusterConfig", "CiliumBGPPeerConfig", "CiliumBGPAdvertisement",
                     "CiliumBGPNodeConfigOverride"}
    versions = {doc["apiVersion"] for _, doc in OBJECTS if "BGP" in doc["kind"]}
    assert versions == {"cilium.io/v2", "cilium.io/v2alpha1"}


def test_peer_configs_keep_cilium_timer_rule() -> None:
    """The CEL rule jsonschema cannot check: keepAliveTimeSeconds <= holdTimeSeconds, after
    the CRD's defaults (30 / 90) fill what is unset."""
    timers = [doc["spec"].get("timers") for _, doc in OBJECTS
              if doc["kind"] == "CiliumBGPPeerConfig" and "timers" in doc["spec"]]
    assert timers
    for timer in timers:
        assert timer.get("keepAliveTimeSeconds", 30) <= timer.get("holdTimeSeconds", 90)


@pytest.mark.parametrize(("name", "obj"), OBJECTS, ids=[n for n, _ in OBJECTS])
def test_object_validates_against_crd(
    name: str, obj: dict[str, Any], schemas: dict[tuple[str, str], dict[str, Any]]
) -> None:
    schema = schemas[(obj["apiVersion"], obj["kind"])]
    jsonschema.validate(obj, schema, cls=jsonschema.Draft7Validator)


def test_schema_check_catches_a_bad_object(
    schemas: dict[tuple[str, str], dict[str, Any]],
) -> None:
    bad = {
        "apiVersion": "cilium.io/v2",
        "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": "x"},
        "spec": {"blocks": [{"cidr": "10.0.0.0/24"}], "allowFirstLastIPs": "Maybe"},
    }
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schemas[("cilium.io/v2", "CiliumLoadBalancerIPPool")])
