"""No input makes migrate crash: mutated documents are translated and planned, or refused with
problems that each name a field of the document (seeded, deterministic, bounded).

Each input is one file of ``testdata/`` (or ``../shared/realworld/``) with one field changed
(a list where a string belongs, a number for a mapping, ``null`` for a list, a wrong scalar,
a string cut short, a key dropped) or its text truncated, read as the file reader reads it,
then checked, translated, rendered and planned as ``migrate convert`` and ``migrate plan
--from`` do.
"""

from __future__ import annotations

import pytest

from migrate.plan.api import make_plan
from migrate.render import convert_json, convert_yaml
from migrate.sources.files import SourceDocument
from migrate.sources.snapshot import build_snapshot
from migrate.translate.translator import translate
from tests import fuzzing
from tests.conftest import SHARED, TESTDATA

TESTDATA_INPUTS = 3500  # with REALWORLD_INPUTS: the 5,000 mutated documents of issue #11
REALWORLD_INPUTS = 1500
SEED = 20240611


def convert_and_plan(documents: list[SourceDocument]) -> None:
    """What ``migrate convert`` and ``migrate plan --from`` do with the documents."""
    snapshot = build_snapshot(documents)
    if not snapshot.has_metallb:
        return
    translation = translate(snapshot)
    convert_yaml(snapshot, translation)
    convert_json(snapshot, translation)
    make_plan(snapshot).to_file()


def _report(outcome: fuzzing.Outcome) -> str:
    return (f"{outcome.inputs} mutated inputs: {outcome.accepted} accepted, {outcome.refused}"
            f" refused, {len(outcome.crashes)} crashes, {len(outcome.unnamed)} problems naming"
            " no field of their document")


def _check(outcome: fuzzing.Outcome, inputs: int) -> None:
    assert outcome.inputs == inputs
    assert not outcome.crashes, _report(outcome) + "; first:\n" + "\n".join(outcome.crashes[:3])
    assert not outcome.unnamed, _report(outcome) + "; first:\n" + "\n".join(outcome.unnamed[:5])
    # The mutations are not all harmless, and not all fatal: both paths are exercised.
    assert outcome.refused > inputs // 4, _report(outcome)
    assert outcome.accepted > inputs // 10, _report(outcome)


def test_mutated_testdata_never_crashes() -> None:
    files = sorted(p for p in TESTDATA.rglob("*.yaml") if p.name != "invalid-cases.yaml")
    corpus = fuzzing.load_corpus(files)
    assert len(corpus) > 100
    outcome = fuzzing.run(fuzzing.mutations(corpus, TESTDATA_INPUTS, SEED), convert_and_plan)
    _check(outcome, TESTDATA_INPUTS)


def test_mutated_realworld_files_never_crash() -> None:
    folder = SHARED / "realworld"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    corpus = fuzzing.load_corpus(sorted(folder.glob("*.yaml")))
    assert corpus
    outcome = fuzzing.run(fuzzing.mutations(corpus, REALWORLD_INPUTS, SEED), convert_and_plan)
    _check(outcome, REALWORLD_INPUTS)


def test_the_mutations_are_deterministic() -> None:
    corpus = fuzzing.load_corpus([TESTDATA / "convert" / "single-pool" / "input.yaml"])
    first = [str(m) for m, _ in fuzzing.mutations(corpus, 50, SEED)]
    again = [str(m) for m, _ in fuzzing.mutations(corpus, 50, SEED)]
    assert first == again
    assert len(set(first)) > 25


def test_a_crash_is_caught_as_a_crash() -> None:
    """The harness tells a bug from a refusal (so a green run means something)."""
    corpus = fuzzing.load_corpus([TESTDATA / "convert" / "single-pool" / "input.yaml"])

    def buggy(documents: list[SourceDocument]) -> None:
        raise TypeError("'int' object is not iterable")

    outcome = fuzzing.run(fuzzing.mutations(corpus, 5, SEED), buggy)
    assert len(outcome.crashes) == 5


@pytest.mark.parametrize(("path", "exists"), [
    ("spec.ports[0].port", True),
    ("spec.ports[1].port", False),
    ("metadata.labels[app.kubernetes.io/name]", True),
    ("metadata.annotations[metallb.io/loadBalancerIPs][1]", True),
    ("metadata.annotations[metallb.io/loadBalancerIPs][2]", False),
    ("data.config.address-pools[0].addresses", True),
    ("data.config.peers", False),
    ("spec.type", False),
])
def test_field_paths_are_resolved_in_the_document(path: str, exists: bool) -> None:
    body = {
        "metadata": {"labels": {"app.kubernetes.io/name": "web"},
                     "annotations": {"metallb.io/loadBalancerIPs": "10.0.0.1,10.0.0.2"}},
        "spec": {"ports": [{"port": 80}]},
        "data": {"config": "address-pools:\n- addresses: [10.0.0.0/24]\n"},
    }
    assert fuzzing.path_exists(body, path) is exists

