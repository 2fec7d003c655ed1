"""The ``migrate`` executable: the click CLI, with a lean lane for the cluster-free ARP check.

``migrate verify --arp --interface IF --ip ...`` needs no cluster and is what people and
scripts run, often and over many IPs. Importing click alone takes longer than probing a
thousand IPs, so this module recognises exactly that invocation (no other option, nothing it
cannot parse the way click would) and runs it with the standard library only. Every other
command line, ``--help`` and every malformed one included, goes to ``migrate.cli`` unchanged,
which remains the one definition of the interface; tests hold both to the same output, exit
code and messages.

The exit codes and the one-line error report live here so that both share them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from migrate.errors import (
    BlockedError,
    CapabilityError,
    ClusterError,
    InputError,
    InputProblems,
    MigrateError,
    NothingToMigrateError,
    VerificationError,
    current_document,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2  # click's own code for a usage error
EXIT_BLOCKED = 3
EXIT_VERIFY_FAILED = 4
EXIT_CHANGES_PENDING = 5
"""``plan --detailed-exitcode``: changes are pending. Terraform says so with 2, which click
already gives usage errors: a script must tell a typo from a pending change."""

EXIT_CODE_HELP = ("Exit codes: 0 success, 1 error, 2 usage error, 3 blocked by a check (ERROR"
                  " finding, stale plan, lock, preflight), 4 verification failed, 5 changes"
                  " pending (plan --detailed-exitcode).")
"""The exit-code table in one sentence, for ``--help``."""

_EXIT_CODES: dict[type[MigrateError], int] = {
    BlockedError: EXIT_BLOCKED,
    VerificationError: EXIT_VERIFY_FAILED,
    InputError: EXIT_ERROR,
    NothingToMigrateError: EXIT_ERROR,
    ClusterError: EXIT_ERROR,
    CapabilityError: EXIT_ERROR,
}


COMPLETE_VAR = "_MIGRATE_COMPLETE"
"""The environment variable click's shell completion reads (its name follows the program's)."""


def exit_code_for(error: MigrateError) -> int:
    """The exit code of an error: the nearest class in the table, else EXIT_ERROR."""
    for cls in type(error).__mro__:
        if cls in _EXIT_CODES:
            return _EXIT_CODES[cls]
    return EXIT_ERROR


MAX_PROBLEM_LINES = 50
"""At most this many problems of the input are printed, then how many more there are."""


def error_lines(error: MigrateError) -> list[str]:
    """What the CLI prints on stderr for ``error``: ``Error: ...`` (one line per problem of
    the input when there are several) and its notes (what next)."""
    problems = error.lines() if isinstance(error, InputProblems) else [str(error)]
    lines = [f"Error: {line}" for line in problems[:MAX_PROBLEM_LINES]]
    if len(problems) > MAX_PROBLEM_LINES:
        lines.append(f"Error: ... and {len(problems) - MAX_PROBLEM_LINES} more problems")
    if len(problems) > 1:
        lines.append(f"{len(problems)} problems in the input; nothing was changed.")
    return [*lines, *getattr(error, "__notes__", ())]


def internal_error_line(error: Exception) -> str:
    """The one line printed for an exception that is a bug of ours (details with --debug),
    naming the document being read when it happened."""
    where = getattr(error, "migrate_document", None) or current_document.get()
    while_reading = f" while reading {where}" if where else ""
    return (f"Error: internal error ({type(error).__name__}: {error}){while_reading}; run with"
            " --debug for the traceback and please report it")


class ArpCheck:
    """A cluster-free ``migrate verify --arp`` invocation, as click would have parsed it."""

    def __init__(self, interface: str, ip_specs: Sequence[str], node_macs: Sequence[str],
                 output: str = "table") -> None:
        self.interface = interface
        self.ip_specs = tuple(ip_specs)
        self.node_macs = tuple(node_macs)
        self.output = output


_REPEATABLE = {"--ip": "ip", "--node-mac": "node-mac"}
_SINGLE = {"--interface": "interface", "--output": "output", "-o": "output"}


def parse_arp_check(args: Sequence[str]) -> ArpCheck | None:
    """The ArpCheck that ``args`` (``sys.argv[1:]``) asks for, or None for anything else.

    Accepted: ``verify`` then, in any order, ``--arp``, ``--interface IF``, ``--ip SPEC``
    (repeatable), ``--node-mac NODE=MAC`` (repeatable) and ``-o table|json``; values as the next
    argument or after ``=`` (``-ojson`` too). Anything else, or a value that is empty, starts
    with ``-`` or repeats a single option, returns None: click then parses and reports it.
    """
    if not args or args[0] != "verify":
        return None
    single: dict[str, str] = {}
    repeated: dict[str, list[str]] = {"ip": [], "node-mac": []}
    arp = False
    rest = list(args[1:])
    while rest:
        token = rest.pop(0)
        if token == "--arp":
            arp = True
            continue
        if token.startswith("--"):
            name, has_value, value = token.partition("=")
        elif token.startswith("-o") and len(token) > 2:
            name, has_value, value = "-o", "=", token[2:]
        else:
            name, has_value, value = token, "", ""
        key = _SINGLE.get(name) or _REPEATABLE.get(name)
        if key is None:
            return None
        if not has_value:
            if not rest:
                return None
            value = rest.pop(0)
        if not value or value.startswith("-"):
            return None
        if name in _REPEATABLE:
            repeated[key].append(value)
        elif key in single:
            return None
        else:
            single[key] = value
    output = single.get("output", "table")
    if not (arp and repeated["ip"] and "interface" in single and output in ("table", "json")):
        return None
    return ArpCheck(single["interface"], repeated["ip"], repeated["node-mac"], output)


def run_arp_check(check: ArpCheck) -> int:
    """Probe, print what ``migrate verify`` prints, return its exit code."""
    try:
        from migrate.verify import run_verify
        from migrate.verify.arp import node_pairs

        result = run_verify(None, None, interface=check.interface, ip_specs=check.ip_specs,
                            node_macs=node_pairs(check.node_macs, "MAC"))
        if check.output == "json":
            import json

            sys.stdout.write(json.dumps(result.to_json(), indent=2) + "\n")
            sys.stdout.flush()
        else:
            from migrate.render import verify_tables

            verify_tables(result)
        if result.problems:
            raise VerificationError("; ".join(result.problems))
    except MigrateError as error:
        sys.stderr.write("".join(f"{line}\n" for line in error_lines(error)))
        return exit_code_for(error)
    except KeyboardInterrupt:
        sys.stderr.write("\nAborted!\n")  # as click says it
        return EXIT_ERROR
    except Exception as error:  # a bug of ours, reported as the CLI reports it
        sys.stderr.write(internal_error_line(error) + "\n")
        return EXIT_ERROR
    return EXIT_OK


def main(args: Sequence[str] | None = None) -> int:
    """Run ``migrate`` with ``args`` (default: ``sys.argv[1:]``); returns the exit code."""
    arguments = list(sys.argv[1:] if args is None else args)
    # Shell completion (``_MIGRATE_COMPLETE=bash_source migrate``, then every Tab) is click's.
    completing = COMPLETE_VAR in os.environ
    check = None if completing else parse_arp_check(arguments)
    if check is not None:
        return run_arp_check(check)
    from migrate.cli import main as cli

    return int(cli.main(args=arguments, prog_name="migrate", complete_var=COMPLETE_VAR,
                        standalone_mode=True) or 0)
