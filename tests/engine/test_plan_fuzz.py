"""Mutated and truncated plan files given to apply, rollback and verify against the lab: never
a crash, never a write (seeded, deterministic, bounded).

A plan is made for a lab cluster and its first stage applied, so that both apply (the next
stage) and rollback have work to do with the intact plan. Each plan file is then changed in
one field (or cut short) and given to ``migrate apply``, ``migrate rollback`` and ``migrate
verify``: each must fail with a one-line error naming the file, and the lab must see no write
request. A second pass re-signs each mutated plan (so that only its structure can stop it)
and checks the API verification, which only reads.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from migrate.apply.executor import apply_stage
from migrate.errors import MigrateError
from migrate.plan.api import make_plan, save_plan
from migrate.plan.model import Plan, content_digest
from migrate.sources.live import read_live
from migrate.verify import run_verify
from tests import fuzzing
from tests.engine.conftest import Cluster, ClusterFactory, fast_options
from tests.helpers import run_cli

MUTATED_PLANS = 120
RESIGNED_PLANS = 300
SEED = 7


class WriteCounter:
    """The write requests (anything but GET) the lab's API server served."""

    def __init__(self, cluster: Cluster) -> None:
        self.writes: list[tuple[str, str]] = []
        record = cluster.server.record

        def counting(method: str, path: str) -> None:
            if method != "GET":
                self.writes.append((method, path))
            record(method, path)

        cluster.server.record = counting  # type: ignore[method-assign]


def _parses_to(text: str, as_json: bool, original: dict[str, Any]) -> bool:
    try:
        return bool((json.loads(text) if as_json else yaml.safe_load(text)) == original)
    except ValueError:
        return False
    except yaml.YAMLError:
        return False


def _mutated_files(original: dict[str, Any], folder: Path) -> Iterator[tuple[str, Path]]:
    """Mutated plan files (YAML and JSON in turn), none that reads as the original."""
    corpus = [("plan", [original])]
    yaml_text = yaml.safe_dump_all([original], sort_keys=False)  # what a truncation cuts
    made = 0
    for mutation, data in fuzzing.mutations(corpus, MUTATED_PLANS * 2, SEED):
        as_json = made % 2 == 1
        if isinstance(data, str):  # the same share of the file's own text
            whole = json.dumps(original, indent=1) if as_json else yaml_text
            text = whole[:len(whole) * len(data) // len(yaml_text)]
        else:
            text = (json.dumps(data[0], indent=1) if as_json
                    else yaml.safe_dump(data[0], sort_keys=False))
        if _parses_to(text, as_json, original):
            continue
        path = folder / f"plan-{made}.{'json' if as_json else 'yaml'}"
        path.write_text(text)
        made += 1
        yield str(mutation), path
        if made == MUTATED_PLANS:
            return


def test_mutated_plan_files_are_refused_and_change_nothing(
    cluster_factory: ClusterFactory, tmp_path: Path,
) -> None:
    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    assert apply_stage(cluster.kube, plan, "pin", options=fast_options()).outcome == "applied"
    good = tmp_path / "plan.yaml"
    save_plan(plan, good)
    original = yaml.safe_load(good.read_text())
    kubeconfig = str(cluster.kubeconfig)
    counter = WriteCounter(cluster)
    crashes: list[str] = []
    runs = 0
    for what, path in _mutated_files(original, tmp_path):
        for args in (("apply", "--plan", str(path), "--stage", "freeze-metallb", "--yes"),
                     ("rollback", "--plan", str(path), "--yes"),
                     ("verify", "--plan", str(path))):
            result = run_cli(*args, "--kubeconfig", kubeconfig)
            runs += 1
            first = result.stderr.splitlines()[0] if result.stderr else ""
            if (result.exit_code != 1 or not first.startswith(f"Error: {path}")
                    or "internal error" in result.stderr or "Traceback" in result.stderr):
                crashes.append(f"{what} {args[0]}: exit {result.exit_code}\n{result.stderr}")
    assert runs == 3 * MUTATED_PLANS
    assert not crashes, f"{len(crashes)} of {runs} runs; first:\n" + "\n".join(crashes[:3])
    assert counter.writes == [], counter.writes[:5]
    # The intact plan still does what it did: the counter sees writes when there are some.
    undone = run_cli("rollback", "--plan", str(good), "--yes", "--kubeconfig", kubeconfig)
    assert undone.exit_code == 0, undone.stderr
    assert counter.writes


def test_resigned_mutated_plans_never_crash_verify(
    cluster_factory: ClusterFactory, tmp_path: Path,
) -> None:
    """A plan whose digest matches but whose structure is not a plan's (a bug of ours, or a
    plan someone re-signed): refused field by field, else verified; nothing crashes, and
    verifying writes nothing."""
    cluster = cluster_factory("guide-single-pool")
    plan = make_plan(read_live(cluster.kube))
    original = plan.to_file()
    counter = WriteCounter(cluster)
    crashes: list[str] = []
    outcomes = {"refused": 0, "verified": 0}
    corpus = [("plan", [copy.deepcopy(original)])]
    done = 0
    for mutation, data in fuzzing.mutations(corpus, RESIGNED_PLANS * 2, SEED + 1):
        if isinstance(data, str) or data[0] == original:
            continue
        body = data[0]
        if isinstance(body, dict):
            body["digest"] = content_digest({k: v for k, v in body.items() if k != "digest"})
        try:
            loaded = Plan.from_dict(body, origin="plan.yaml")
            run_verify(cluster.kube, loaded)
            outcomes["verified"] += 1
        except MigrateError:
            outcomes["refused"] += 1
        except Exception as error:  # a crash: what the test is about
            crashes.append(f"{mutation}: {type(error).__name__}: {error}")
        done += 1
        if done == RESIGNED_PLANS:
            break
    assert done == RESIGNED_PLANS
    assert not crashes, crashes[:5]
    assert outcomes["refused"] > RESIGNED_PLANS // 4, outcomes
    assert counter.writes == []

