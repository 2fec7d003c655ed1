"""The ``migrate`` command line: parse options, call one library function, render.

Imports of the library happen inside each command so that every command starts fast.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

import click

from migrate.errors import (
    BlockedError,
    CapabilityError,
    ClusterError,
    InputError,
    MigrateError,
    NothingToMigrateError,
    VerificationError,
)

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_BLOCKED = 3
EXIT_VERIFY_FAILED = 4

_EXIT_CODES: dict[type[MigrateError], int] = {
    BlockedError: EXIT_BLOCKED,
    VerificationError: EXIT_VERIFY_FAILED,
    InputError: EXIT_ERROR,
    NothingToMigrateError: EXIT_ERROR,
    ClusterError: EXIT_ERROR,
    CapabilityError: EXIT_ERROR,
}


def exit_code_for(error: MigrateError) -> int:
    """The exit code of an error: the nearest class in the table, else EXIT_ERROR."""
    for cls in type(error).__mro__:
        if cls in _EXIT_CODES:
            return _EXIT_CODES[cls]
    return EXIT_ERROR


class MigrateGroup(click.Group):
    """A click group that turns MigrateError into a one-line message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MigrateError as error:
            debug = bool((ctx.obj or {}).get("debug"))
            if debug:
                traceback.print_exc(file=sys.stderr)
            click.echo(f"Error: {error}", err=True)
            ctx.exit(exit_code_for(error))
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as error:  # a bug of ours: say so plainly, keep the details for --debug
            if (ctx.obj or {}).get("debug"):
                raise
            click.echo(
                f"Error: internal error ({type(error).__name__}: {error}); run with --debug for"
                " the traceback and please report it",
                err=True,
            )
            ctx.exit(EXIT_ERROR)


@click.group(cls=MigrateGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="migrate", prog_name="migrate")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Move a bare-metal cluster from MetalLB to Cilium LB-IPAM and L2 announcements,
    keeping every Service IP.

    \b
    Exit codes: 0 success, 1 error, 2 usage error, 3 blocked by a check
    (ERROR finding, stale plan, lock, preflight), 4 verification failed.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


@main.command()
@click.option(
    "-f", "--filename", "paths", multiple=True, type=click.Path(),
    help="File or folder (read recursively) of manifests; repeatable; '-' reads stdin.",
)
@click.argument("more_paths", nargs=-1, type=click.Path())
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True, help="Output format.")
@click.option("--cilium-version", metavar="X.Y", default=None,
              help="Target Cilium version (default: the newest known).")
@click.option("--metallb-namespace", metavar="NS", default=None,
              help="MetalLB's namespace (default: the one its objects are in, else"
                   " metallb-system).")
def convert(
    paths: tuple[str, ...],
    more_paths: tuple[str, ...],
    output: str,
    cilium_version: str | None,
    metallb_namespace: str | None,
) -> None:
    """Translate MetalLB manifests into Cilium ones, offline.

    Writes the CiliumLoadBalancerIPPool and CiliumL2AnnouncementPolicy objects, then every
    input Service MetalLB serves with its pins, to stdout; findings go to stderr. Exits 3
    when a finding is an ERROR.
    """
    from migrate.model.findings import has_errors
    from migrate.render import convert_json, convert_yaml, findings_table, summary_line
    from migrate.sources.snapshot import read_snapshot
    from migrate.translate.translator import translate

    all_paths = [*paths, *more_paths]
    if not all_paths:
        raise click.UsageError("give at least one file or folder with -f")
    snapshot = read_snapshot(all_paths, metallb_namespace=metallb_namespace)
    if not snapshot.has_metallb:
        raise NothingToMigrateError(
            "nothing MetalLB-related found in "
            + ", ".join(all_paths)
            + " (no IPAddressPool, L2Advertisement, BGP object, legacy config, or Service with"
            " MetalLB annotations)"
        )
    translation = translate(snapshot, cilium=cilium_version)
    if output == "json":
        click.echo(convert_json(snapshot, translation), nl=False)
    else:
        click.echo(convert_yaml(snapshot, translation), nl=False)
        findings_table(translation.findings, sys.stderr)
    click.echo(summary_line(translation), err=True)
    if has_errors(translation.findings):
        raise BlockedError(
            "the translation has ERROR findings (above); fix them before migrating"
        )


if __name__ == "__main__":  # pragma: no cover
    main()
