"""Print the README's set-up commands, one per line: the shell block after the
``<!-- set-up`` marker, without its comments. `.ci/run` runs what this prints, and
``tests/test_readme_setup.py`` runs the same commands on a clean clone, so the README, CI and
the test cannot drift apart. Exits 1 unless the block holds exactly two commands."""

from __future__ import annotations

import sys
from pathlib import Path

MARKER = "<!-- set-up"
EXPECTED = 2


def setup_commands(readme: str) -> list[str]:
    """The commands of the README's set-up block (empty when there is no such block)."""
    lines = readme.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith(MARKER)]
    if len(starts) != 1 or starts[0] + 1 >= len(lines) or not lines[starts[0] + 1].startswith(
            "```"):
        return []
    commands = []
    for line in lines[starts[0] + 2:]:
        if line.startswith("```"):
            return commands
        if line.strip() and not line.lstrip().startswith("#"):
            commands.append(line.strip())
    return []  # the block never ends


def main() -> int:
    readme = Path(__file__).resolve().parents[1] / "README.md"
    commands = setup_commands(readme.read_text(encoding="utf-8"))
    if len(commands) != EXPECTED:
        print(f"{readme}: expected {EXPECTED} commands in the block after {MARKER!r}, found"
              f" {len(commands)}", file=sys.stderr)
        return 1
    print("\n".join(commands))
    return 0


if __name__ == "__main__":
    sys.exit(main())
