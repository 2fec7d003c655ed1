"""Mutation fuzzing of the tool's inputs: seeded, deterministic, bounded.

A corpus of files (each a list of YAML documents) is mutated one field at a time, as a user's
hand or a bad merge would: a list where a string belongs, a number for a mapping, ``null`` for
a list, a wrong scalar type, a string cut short, a key dropped; or the file's text is truncated.
Each mutated input is run through a pipeline; what it raises is sorted into accepted
(``MigrateError``) and crashes (anything else), and every problem reported must name a field
path that exists in the mutated document.
"""

from __future__ import annotations

import copy
import random
import re
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from migrate.errors import InputError, InputProblems, MigrateError
from migrate.sources.files import SourceDocument, parse_text

Path_ = tuple[Any, ...]
"""A path into a document: keys and list indexes."""

REPLACEMENTS: list[Any] = [
    ["x", 1], {"x": 1}, 80, "text", None, True, 1.5, [], {}, [[1]], [{"a": None}], "80",
    -1, 2 ** 40, "10.0.0.0/24", "",
]
"""Values put where another belongs (lists, mappings, numbers, strings, null, booleans)."""


@dataclass(frozen=True)
class Mutation:
    """One change to one document of a file, or a truncation of the file's text."""

    file: str
    document: int
    path: Path_
    what: str
    value: Any = None

    def __str__(self) -> str:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in self.path)
        return f"{self.file}#{self.document + 1}{where}: {self.what} {self.value!r}"[:300]


@dataclass
class Outcome:
    """What a fuzz run found."""

    inputs: int = 0
    accepted: int = 0
    refused: int = 0
    crashes: list[str] = field(default_factory=list)
    unnamed: list[str] = field(default_factory=list)
    """Problems whose field path does not exist in the mutated document."""


def load_corpus(paths: list[Path]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(name, mapping documents) of every file that parses as YAML."""
    corpus = []
    for path in paths:
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        docs = [d for d in docs if isinstance(d, dict)]
        if docs:
            corpus.append((str(path), docs))
    return corpus


def _sites(value: Any, prefix: Path_ = ()) -> Iterator[tuple[Path_, Any]]:
    yield prefix, value
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _sites(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _sites(item, (*prefix, index))


def _set(doc: Any, path: Path_, value: Any) -> None:
    for part in path[:-1]:
        doc = doc[part]
    doc[path[-1]] = value


def _drop(doc: Any, path: Path_) -> None:
    for part in path[:-1]:
        doc = doc[part]
    del doc[path[-1]]


def mutations(corpus: list[tuple[str, list[dict[str, Any]]]], count: int, seed: int) -> Iterator[
    tuple[Mutation, list[dict[str, Any]] | str]
]:
    """``count`` mutated inputs: (what was done, the mutated documents or truncated text)."""
    rng = random.Random(seed)
    sites = [(name, index, path, value) for name, docs in corpus
             for index, doc in enumerate(docs) for path, value in _sites(doc) if path]
    texts = {name: yaml.safe_dump_all(docs, sort_keys=False) for name, docs in corpus}
    for _ in range(count):
        roll = rng.random()
        if roll < 0.06:
            name = rng.choice(sorted(texts))
            text = texts[name]
            cut = rng.randrange(len(text))
            yield Mutation(name, 0, (), "truncate at", cut), text[:cut]
            continue
        name, index, path, value = rng.choice(sites)
        docs = copy.deepcopy(dict(corpus)[name])
        if roll < 0.14 and path:
            _drop(docs[index], path)
            yield Mutation(name, index, path, "drop"), docs
            continue
        if isinstance(value, str) and value and roll < 0.3:
            new: Any = value[:rng.randrange(len(value))]
            what = "cut to"
        else:
            new = copy.deepcopy(rng.choice(REPLACEMENTS))
            what = "replace with"
        _set(docs[index], path, new)
        yield Mutation(name, index, path, what, new), docs


# -- does a field path exist in a document? ---------------------------------------------------
_INDEX = re.compile(r"\[(\d+)\]")


def path_exists(value: Any, path: str) -> bool:
    """Whether a field path (``spec.ports[0].port``, ``metadata.labels[a/b]``) names a value
    of the document; a string holding YAML (``data.config``) or a comma-separated list (an
    annotation) is looked into."""
    if not path:
        return True
    path = path.removeprefix(".")
    if isinstance(value, dict):
        for key in value:
            text = str(key)
            for form in (text, f"[{text}]"):
                if path.startswith(form) and (
                    len(path) == len(form) or path[len(form)] in ".["
                ) and path_exists(value[key], path[len(form):]):
                    return True
        return False
    match = _INDEX.match(path)
    if isinstance(value, list):
        return bool(match) and int(match[1]) < len(value) and path_exists(
            value[int(match[1])], path[match.end():])
    if isinstance(value, str):
        if match and path[match.end():] == "":
            return int(match[1]) < len(value.split(","))
        try:
            inner = yaml.safe_load(value)
        except yaml.YAMLError:
            return False
        return isinstance(inner, dict | list) and path_exists(inner, path)
    return False


def names_existing_field(problem: InputError, documents: dict[str, Any]) -> bool:
    """A problem names its document (by origin) and a field of it: the field itself, or, for
    one that is required and missing, its parent. Problems of a whole file (YAML that does
    not parse) name no field."""
    if problem.field is None:
        return problem.message.startswith(("not valid YAML", "not a UTF-8"))
    body = documents.get(problem.source or "")
    if body is None:
        return False
    if path_exists(body, problem.field):
        return True
    if problem.message.startswith(("is required", "is missing")):
        parent = re.sub(r"(^|\.)[^.\[\]]+$|\[[^\]]*\]$", "", problem.field)
        return parent != problem.field and path_exists(body, parent)
    return False


_DUMPER: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def as_text(data: list[dict[str, Any]] | str) -> str:
    """A mutated file's text (mutated documents are written as YAML)."""
    return data if isinstance(data, str) else yaml.dump_all(data, Dumper=_DUMPER,
                                                            sort_keys=False)


def documents_by_origin(text: str, name: str) -> dict[str, Any]:
    """Every document of a file by the origin the file reader gives it (``file#N``), the
    items of a ``kind: List`` too (``file items[i]``)."""
    try:
        raw = list(yaml.load_all(text, Loader=_LOADER))
    except yaml.YAMLError:
        return {}
    several = sum(1 for d in raw if d is not None) > 1
    out: dict[str, Any] = {}
    for index, doc in enumerate(raw, start=1):
        origin = f"{name}#{index}" if several else name
        out[origin] = doc
        items = doc.get("items") if isinstance(doc, dict) else None
        for number, item in enumerate(items if isinstance(items, list) else []):
            out[f"{origin} items[{number}]"] = item
    return out


def run(inputs: Iterator[tuple[Mutation, list[dict[str, Any]] | str]],
        pipeline: Callable[[list[SourceDocument]], object],
        outcome: Outcome | None = None) -> Outcome:
    """Read every input as a file and run its documents through ``pipeline``, then sort out
    what happened: accepted, refused (a MigrateError: each of its problems must name an
    existing field of its document) or a crash (anything else)."""
    outcome = outcome or Outcome()
    for mutation, data in inputs:
        outcome.inputs += 1
        documents: dict[str, Any] = {}
        try:
            text = as_text(data)
            documents = documents_by_origin(text, mutation.file)
            pipeline(parse_text(text, mutation.file))
            outcome.accepted += 1
        except MigrateError as error:
            outcome.refused += 1
            problems = error.problems if isinstance(error, InputProblems) else (
                [error] if isinstance(error, InputError) and error.source else [])
            for problem in problems:
                if not names_existing_field(problem, documents):
                    outcome.unnamed.append(f"{mutation}\n    -> {problem}")
        except Exception:
            outcome.crashes.append(f"{mutation}\n{traceback.format_exc(limit=-4)}")
    return outcome
