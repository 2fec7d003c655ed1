"""No text a user sees cites the project's internal notes ("[M8]", "[C1.4]", ../shared/...).

What the suite produces at run time is checked by the plugin in ``tests/user_text.py``; these
tests check what is written down: the README and CHANGELOG, every command's help, the golden
files and other test data, the mapping tables, and every string literal of the package (its
docstrings and comments may cite the notes: they are for developers).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from migrate.cli import main
from migrate.model.findings import Finding, Severity
from tests.conftest import REPO, TESTDATA
from tests.helpers import run_cli
from tests.user_text import COLLECTOR, internal_references


@pytest.mark.parametrize("text, found", [
    ("LB-IPAM strips it [C1.4].", ["[C1.4]"]),
    ("speakers keep answering [M8]; see [C2: leases]", ["[M8]", "[C2: leases]"]),
    ("a rule [M6 rule 3]", ["[M6 rule 3]"]),
    ("see ../shared/design.md §2", ["../shared/", "design.md"]),
    ("read reference/cilium.md", ["reference/cilium"]),
    ("I1 violated (a Service IP changed)", ["I1 violated"]),
    ("after: I1: no Service IP changed; ARP (invariant I2)", ["I1:", "invariant I2"]),
    ("cilium/cilium#48419, [bold]Stage 1[/], [M] and [C], 10.0.0.[1]", []),
], ids=["tag", "tags", "tag-with-words", "notes-path", "reference-path", "invariant",
        "invariants", "ordinary"])
def test_the_pattern_tells_internal_references_from_ordinary_text(text: str,
                                                                  found: list[str]) -> None:
    assert internal_references(text) == found


def test_the_collector_records_what_the_suite_produces() -> None:
    before = len(COLLECTOR.seen)
    Finding(Severity.INFO, "x", "Service a/b", None, "kept as is [M8]")
    run_cli("--version")
    recorded = COLLECTOR.seen[before:]
    del COLLECTOR.seen[before:]  # the finding above is this test's own: not a failure
    assert [seen.kind for seen in recorded][:1] == ["finding"]
    assert internal_references(recorded[0].text) == ["[M8]"]
    assert "test_the_collector_records_what_the_suite_produces" in recorded[0].test
    assert any(seen.kind == "CLI output" and "migrate" in seen.text for seen in recorded)


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name)


@pytest.mark.parametrize("command", list(_commands(main)), ids=lambda c: " ".join(c) or "main")
def test_help_cites_no_internal_note(command: tuple[str, ...]) -> None:
    result = run_cli(*command, "--help")
    assert result.exit_code == 0
    assert internal_references(result.stdout) == []


def _text_files() -> Iterator[Path]:
    yield REPO / "README.md"
    yield REPO / "CHANGELOG.md"
    yield from sorted((REPO / "mappings").glob("*.yaml"))
    for path in sorted(TESTDATA.rglob("*")):
        if path.is_file() and path.suffix in (".yaml", ".yml", ".json", ".txt", ".md"):
            yield path


def test_docs_golden_files_and_mappings_cite_no_internal_note() -> None:
    offending = {
        str(path.relative_to(REPO)): internal_references(path.read_text())
        for path in _text_files()
    }
    assert {path: refs for path, refs in offending.items() if refs} == {}


def _literals(tree: ast.AST) -> Iterator[ast.Constant]:
    docstrings = {id(node.value) for node in ast.walk(tree)
                  if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant)}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings):
            yield node


def test_string_literals_of_the_package_cite_no_internal_note() -> None:
    offending = [
        f"{path.relative_to(REPO)}:{node.lineno}: {node.value[:120]!r}"
        for path in sorted((REPO / "migrate").rglob("*.py"))
        for node in _literals(ast.parse(path.read_text()))
        if internal_references(node.value)
    ]
    assert offending == []
