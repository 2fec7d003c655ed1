"""Reading Kubernetes objects from YAML/JSON files and folders.

This is the only place that parses files. It knows nothing of MetalLB: it returns every
mapping document it finds, each tagged with where it came from, so that the snapshot builder,
``migrate convert`` and the lab read exactly the same objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import yaml

from migrate.errors import InputError, InputProblems, InvalidDocument

# The C loader and dumper are several times faster; fall back where libyaml is missing.
_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: Any = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class _Loader(_BaseLoader):  # type: ignore[misc]
    """The safe loader without YAML 1.1's base-60 numbers: PyYAML reads ``64512:10`` as
    3870730, Kubernetes' reader (sigs.k8s.io/yaml) as the string it is, a BGP community."""

    yaml_implicit_resolvers: ClassVar[dict[str, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, re.compile(r"(?!.*:)" + regexp.pattern, re.X) if tag in _NUMBER_TAGS
                 else regexp) for tag, regexp in resolvers]
        for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
    }


def load_yaml(text: str) -> Any:
    """One YAML document, read as Kubernetes reads it (no base-60 numbers)."""
    return yaml.load(text, Loader=_Loader)


YAML_SUFFIXES = (".yaml", ".yml", ".json")


@dataclass(frozen=True)
class SourceDocument:
    """One mapping document read from a file, and where it was found."""

    origin: str
    """``path`` or ``path#N`` (N = 1-based document index when a file holds several)."""
    body: dict[str, Any]


def iter_files(paths: Sequence[str | Path]) -> Iterator[Path]:
    """Every YAML/JSON file named, or found (recursively, sorted) under a named folder."""
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in YAML_SUFFIXES
            )
            yield from found
        elif path.is_file() or str(raw) == "-":
            yield path
        else:
            raise InputError("no such file or folder", source=str(raw))


def _parse_stream(text: str, origin: str) -> list[Any]:
    try:
        return list(yaml.load_all(text, Loader=_Loader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{origin}:{mark.line + 1}" if mark is not None else origin
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        hint = ""
        if "{{" in text or "{%" in text:
            hint = " (the file looks like a Helm or Jinja template: render it first)"
        raise InputError(f"not valid YAML: {problem}{hint}", source=where) from None


def _flatten(doc: Any, origin: str) -> Iterator[SourceDocument]:
    """The mapping documents of one YAML document: itself, or the items of a ``kind: List``
    (items that are not mappings are passed over, as any non-mapping document is)."""
    if not isinstance(doc, dict):
        return
    kind, items = doc.get("kind"), doc.get("items")
    if kind == "List" or (
        isinstance(kind, str) and kind.endswith("List") and isinstance(items, list)
        and "apiVersion" in doc
    ):
        if items is not None and not isinstance(items, list):
            raise InvalidDocument(source=origin, field="items", expected="a list", found=items,
                                  kind="List")
        for index, item in enumerate(items or []):
            if isinstance(item, dict):
                yield SourceDocument(f"{origin} items[{index}]", item)
        return
    yield SourceDocument(origin, doc)


def parse_text(text: str, origin: str) -> list[SourceDocument]:
    """Parse a YAML/JSON stream into its mapping documents (``kind: List`` flattened); the
    origin of each is ``file#N`` (N counts from 1) when the stream holds several."""
    docs = _parse_stream(text, origin)
    several = sum(1 for d in docs if d is not None) > 1
    out: list[SourceDocument] = []
    for index, doc in enumerate(docs, start=1):
        tag = f"{origin}#{index}" if several else origin
        out.extend(_flatten(doc, tag))
    return out


def read_documents(paths: Sequence[str | Path]) -> tuple[list[SourceDocument], list[InputError]]:
    """Every mapping document of the given files and folders, in a stable order, and the
    problems of the files that could not be read (each naming its file), so that a run can
    report them all together."""
    out: list[SourceDocument] = []
    problems: list[InputError] = []
    for raw in paths:
        try:
            files = list(iter_files([raw]))
        except InputError as error:
            problems.append(error)
            continue
        for path in files:
            try:
                out.extend(load_file(path))
            except InputError as error:
                problems.append(error)
    return out, problems


def load_documents(paths: Sequence[str | Path]) -> list[SourceDocument]:
    """Read every mapping document from the given files and folders, in a stable order
    (InputProblems naming every file that cannot be read)."""
    out, problems = read_documents(paths)
    if problems:
        raise InputProblems(problems)
    return out


def load_file(path: Path) -> list[SourceDocument]:
    """Read one file (``-`` is standard input)."""
    if str(path) == "-":
        import sys

        return parse_text(sys.stdin.read(), "<stdin>")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError("not a UTF-8 text file", source=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", source=str(path)) from None
    return parse_text(text, str(path))


def dump_documents(objects: Iterable[dict[str, Any]]) -> str:
    """Render objects as a multi-document YAML stream, keys in the order given."""
    return yaml.dump_all(
        list(objects), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
        explicit_start=True,
    )
