"""The ``migrate`` command line: parse options, call one library function, render.

Imports of the library happen inside each command so that every command starts fast.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from migrate.entry import (
    EXIT_CHANGES_PENDING,
    EXIT_CODE_HELP,
    EXIT_ERROR,
    EXIT_OK,
    error_lines,
    exit_code_for,
    internal_error_line,
)
from migrate.errors import BlockedError, MigrateError, NothingToMigrateError, VerificationError


class MigrateGroup(click.Group):
    """A click group that turns MigrateError into a one-line message and an exit code."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MigrateError as error:
            debug = bool((ctx.obj or {}).get("debug"))
            if debug:
                import traceback

                traceback.print_exc(file=sys.stderr)
            for line in error_lines(error):  # the message, then what to do next (notes)
                click.echo(line, err=True)
            ctx.exit(exit_code_for(error))
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except Exception as error:  # a bug of ours: say so plainly, keep the details for --debug
            if (ctx.obj or {}).get("debug"):
                raise
            click.echo(internal_error_line(error), err=True)
            ctx.exit(EXIT_ERROR)


@click.group(cls=MigrateGroup, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXIT_CODE_HELP)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.version_option(package_name="migrate", prog_name="migrate")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Move a bare-metal cluster from MetalLB to Cilium LB-IPAM and L2 announcements,
    keeping every Service IP.
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug


def _check_cilium_version(text: str | None) -> None:
    """A --cilium-version the tables know (InputError naming the option otherwise)."""
    if text is not None:
        from migrate.translate.mappings import cilium_version

        cilium_version(text, strict=True)


def _cluster_options(function: Any) -> Any:
    """--kubeconfig, --context and --state-namespace, shared by the commands that talk to a
    cluster."""
    function = click.option("--state-namespace", default="kube-system", show_default=True,
                            help="Namespace of migrate's state ConfigMap and lock Lease.")(
        function)
    function = click.option("--context", "kube_context", default=None,
                            help="kubeconfig context to use.")(function)
    function = click.option("--kubeconfig", default=None, type=click.Path(),
                            help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, or"
                                 " in-cluster).")(function)
    return function


def _complete_stage(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[str]:
    """Shell completion of a stage name."""
    from migrate.plan.model import STAGE_NAMES

    return [name for name in STAGE_NAMES if name.startswith(incomplete)]


def _kube(kubeconfig: str | None, kube_context: str | None) -> Any:
    from migrate.kube import Kube

    return Kube.from_kubeconfig(kubeconfig, kube_context)


def _reporter(quiet: bool) -> Any:
    """The reporter of apply and rollback: steps and waits on stderr (nothing with --quiet)."""
    from migrate.render import ProgressReporter

    return ProgressReporter(quiet=quiet)


_QUIET = click.option("-q", "--quiet", is_flag=True,
                      help="Print only the outcome and errors: no steps, no progress.")


@main.command()
@click.option(
    "-f", "--filename", "paths", multiple=True, type=click.Path(),
    help="File or folder (read recursively) of manifests; repeatable; '-' reads stdin.",
)
@click.argument("more_paths", nargs=-1, type=click.Path())
@click.option("-o", "--output", type=click.Choice(["yaml", "json"]), default="yaml",
              show_default=True, help="Output format.")
@click.option("--cilium-version", metavar="X.Y", default=None,
              help="Target Cilium version, 1.15 to 1.20 (default: the version of the Cilium"
                   " agent in the input, else 1.20, the newest known).")
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

    Writes the CiliumLoadBalancerIPPool and CiliumL2AnnouncementPolicy objects, the Cilium
    BGP objects (CiliumBGPAdvertisement, CiliumBGPPeerConfig, CiliumBGPNodeConfigOverride,
    CiliumBGPClusterConfig) when MetalLB announces over BGP, then every input Service MetalLB
    serves with its pins, to stdout; findings go to stderr. Exits 3 when a finding is an
    ERROR.
    """
    from migrate.model.findings import has_errors
    from migrate.render import convert_json, convert_yaml, findings_table, summary_line
    from migrate.sources.snapshot import read_snapshot
    from migrate.translate.translator import translate

    all_paths = [*paths, *more_paths]
    if not all_paths:
        raise click.UsageError("give at least one file or folder with -f")
    _check_cilium_version(cilium_version)
    snapshot = read_snapshot(all_paths, metallb_namespace=metallb_namespace)
    if not snapshot.has_metallb:
        raise NothingToMigrateError(
            "nothing MetalLB-related found in "
            + ", ".join(all_paths)
            + " (no IPAddressPool, L2Advertisement, BGP object, legacy config, or Service with"
            " MetalLB annotations)"
        )
    from migrate.plan.api import cilium_version_of

    translation = translate(snapshot, cilium=cilium_version or cilium_version_of(snapshot))
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


def _watch(interface: str, ip_specs: tuple[str, ...], plan: Any, node_macs: dict[str, str],
           seconds: float, output: str, kube: Any) -> None:
    """``verify --arp --watch``: stream the wire's changes, then sum them up."""
    import json

    from migrate.render import watch_line, watch_summary
    from migrate.verify.watching import start_watch

    report, events = start_watch(kube, plan, interface, seconds, ip_specs=ip_specs,
                                 node_macs=node_macs)
    if output != "json":
        click.echo(f"Watching {len(report.ips)} IP(s) on {interface} for {seconds:g}s"
                   " (Ctrl-C stops early)", err=True)
    try:
        for event in events:
            click.echo(json.dumps(event.to_json()) if output == "json" else watch_line(event))
    except KeyboardInterrupt:
        events.close()
    report.finish()
    click.echo(json.dumps(report.to_json()) if output == "json" else watch_summary(report),
               nl=output == "json")
    if report.problems:
        raise VerificationError("; ".join(report.problems))


@main.command()
@click.option("--from", "from_paths", multiple=True, type=click.Path(), metavar="DIR",
              help="File or folder of the cluster's objects (a kubectl dump); repeatable.")
@click.option("--cilium-version", metavar="X.Y[.Z]", default=None,
              help="Cilium version to check against (default: the agent image's).")
@click.option("--metallb-namespace", metavar="NS", default=None,
              help="MetalLB's namespace (default: the one its objects are in).")
@click.option("--cilium-namespace", metavar="NS", default="kube-system", show_default=True,
              help="Namespace Cilium runs in (live clusters).")
@click.option("--kubeconfig", default=None, type=click.Path(),
              help="kubeconfig file, to read a live cluster instead of --from.")
@click.option("--context", "kube_context", default=None, help="kubeconfig context to use.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
def preflight(
    from_paths: tuple[str, ...],
    cilium_version: str | None,
    metallb_namespace: str | None,
    cilium_namespace: str,
    kubeconfig: str | None,
    kube_context: str | None,
    output: str,
) -> None:
    """Check that the cluster is ready to move to Cilium (stage 0, read-only).

    Prints each check with what was found and the remedy, then the exact Cilium Helm values,
    Talos patch or commands to apply. Exits 3 while an ERROR remains.
    """
    from migrate.preflight import run_preflight
    from migrate.render import preflight_json, preflight_table

    if from_paths:
        from migrate.sources.snapshot import read_snapshot

        snapshot = read_snapshot(list(from_paths), metallb_namespace=metallb_namespace)
    else:
        from migrate.sources.live import read_live

        kube = _kube(kubeconfig, kube_context)
        try:
            snapshot = read_live(kube, metallb_namespace=metallb_namespace,
                                 cilium_namespace=cilium_namespace)
        finally:
            kube.close()
    report = run_preflight(snapshot, cilium_version=cilium_version)
    if output == "json":
        click.echo(preflight_json(report), nl=False)
    else:
        preflight_table(report, sys.stdout)
    if report.blocking:
        raise BlockedError("preflight: an ERROR check blocks the migration (see above)")


@main.command()
@click.option("--plan", "plan_path", type=click.Path(exists=True), default=None,
              help="A plan saved by migrate plan --out: check the cluster against it (and, with"
                   " --arp, probe its IPs).")
@_cluster_options
@click.option("--arp", is_flag=True, help="Probe the IPs over ARP (needs CAP_NET_RAW).")
@click.option("--interface", metavar="IF", help="Interface to probe on; nothing is sent elsewhere.")
@click.option("--ip", "ip_specs", multiple=True, metavar="IP|CIDR|A-B",
              help="IPs to check (instead of the plan's; no cluster needed); repeatable.")
@click.option("--node-mac", "node_macs", multiple=True, metavar="NODE=MAC",
              help="Name the node behind a MAC; repeatable.")
@click.option("--failover", "failover_service", metavar="NS/NAME", default=None,
              help="Delete the Cilium agent pod on this Service's lease holder and watch another"
                   " node take over (needs --yes).")
@click.option("--yes", is_flag=True, help="Confirm --failover (it deletes a pod).")
@click.option("--timeout", type=float, default=60.0, show_default=True,
              help="Seconds --failover waits for another node to take over.")
@click.option("--cilium-namespace", metavar="NS", default=None,
              help="Cilium's namespace for --failover (default: the plan's, else kube-system).")
@click.option("--watch", "watch_seconds", type=float, default=None, metavar="SECONDS",
              help="With --arp: follow the wire for SECONDS, a line per change (run it while"
                   " another terminal applies l2-cutover); exits 4 if an IP ever had two"
                   " MACs or is silent at the end.")
@click.option("--bgp", is_flag=True,
              help="With --plan: check the BGP hand-over too (each node's Cilium sessions"
                   " Established with their routes, every BGP Service advertised, no MetalLB"
                   " ServiceBGPStatus left).")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True, help="Output format.")
def verify(
    plan_path: str | None,
    kubeconfig: str | None,
    kube_context: str | None,
    state_namespace: str,
    arp: bool,
    interface: str | None,
    ip_specs: tuple[str, ...],
    node_macs: tuple[str, ...],
    failover_service: str | None,
    yes: bool,
    timeout: float,
    cilium_namespace: str | None,
    watch_seconds: float | None,
    bgp: bool,
    output: str,
) -> None:
    """Check the migration: API objects, ARP on the wire (one MAC per IP), a forced failover.

    \b
    With --plan: every Service has its plan IPs, no pool in conflict, LB-IPAM refuses no
    Service, and after l2-cutover (for the canary pool: after l2-canary) every announced
    Service has a lease held by an eligible node and no MetalLB L2Advertisement is left for
    it. With --arp --interface IF: each IP (the plan's IPv4 ones, or --ip) answered by exactly
    one MAC, that of the lease holder (after cutover) or of MetalLB's announcing node
    (before). With --bgp: each node handed over has its Cilium BGP sessions Established with
    their routes advertised, no other node has a Cilium BGP configuration, and after
    bgp-handover every BGP Service is advertised and no ServiceBGPStatus is left. Exits 4
    when anything fails.
    """
    from migrate.verify import run_verify
    from migrate.verify.arp import node_pairs

    if not (plan_path or ip_specs or failover_service):
        raise click.UsageError("give --plan FILE (API checks; with --arp, its IPs), --ip to"
                               " probe IPs without a cluster, or --failover NS/NAME")
    if ip_specs and not arp:
        raise click.UsageError("--ip needs --arp (and --interface IF)")
    if interface and not arp:
        raise click.UsageError("--interface needs --arp")
    if arp and not interface:
        raise click.UsageError("--arp needs --interface IF")
    if arp and not (ip_specs or plan_path or failover_service):
        raise click.UsageError("give the IPs with --ip, or a plan with --plan")
    if failover_service and not yes:
        raise click.UsageError(f"--failover deletes the Cilium agent pod on the node holding"
                               f" {failover_service}'s lease: confirm with --yes")
    if watch_seconds is not None and (not arp or failover_service):
        raise click.UsageError("--watch needs --arp --interface IF, and no --failover")
    if bgp and not plan_path:
        raise click.UsageError("--bgp needs --plan FILE")
    given_macs = node_pairs(node_macs, "MAC")
    loaded = None
    if plan_path:
        from migrate.plan.api import load_plan

        loaded = load_plan(plan_path)
    if watch_seconds is not None:
        assert interface is not None
        _watch(interface, ip_specs, loaded, given_macs, watch_seconds, output,
               _kube(kubeconfig, kube_context) if loaded else None)
        return
    kube = _kube(kubeconfig, kube_context) if plan_path or failover_service else None
    result = run_verify(
        kube, loaded, interface=interface if arp else None, ip_specs=ip_specs,
        node_macs=given_macs, failover=failover_service, timeout=timeout,
        cilium_namespace=cilium_namespace, state_namespace=state_namespace,
        on_event=lambda message: click.echo(f"  {message}", err=True), bgp=bgp)
    if output == "json":
        import json

        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        from migrate.render import verify_tables

        verify_tables(result)
    if result.problems:
        raise VerificationError("; ".join(result.problems))


@main.command()
@click.option("--from", "from_paths", multiple=True, type=click.Path(exists=True),
              help="Plan from files/folders (a cluster snapshot) instead of a live cluster.")
@_cluster_options
@click.option("--out", "out_path", type=click.Path(), default=None,
              help="Save the plan to this file (for migrate apply).")
@click.option("-o", "--output", type=click.Choice(["table", "yaml", "json"]), default="table",
              show_default=True)
@click.option("--detailed-exitcode", is_flag=True,
              help=f"Exit {EXIT_OK} when there is nothing to do, {EXIT_CHANGES_PENDING} when"
                   " changes are pending (not Terraform's 2: that is a usage error here).")
@click.option("--cilium-version", metavar="X.Y", default=None,
              help="Target Cilium version, 1.15 to 1.20 (default: the version of the cluster's"
                   " Cilium agent, from its image; else 1.20, the newest known).")
@click.option("--metallb-namespace", metavar="NS", default=None)
@click.option("--cilium-namespace", metavar="NS", default="kube-system", show_default=True)
@click.option("--canary", metavar="POOL", default=None,
              help="Hand this MetalLB pool's ARP answers to Cilium first, in a stage of its own"
                   " (l2-canary) before l2-cutover.")
@click.option("--bgp-batch", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="How many nodes bgp-handover moves from MetalLB's BGP to Cilium's at once"
                   " (never all the next hops of a prefix in one batch).")
def plan(from_paths: tuple[str, ...], kubeconfig: str | None, kube_context: str | None,
         state_namespace: str, out_path: str | None, output: str, detailed_exitcode: bool,
         cilium_version: str | None, metallb_namespace: str | None,
         cilium_namespace: str, canary: str | None, bgp_batch: int) -> None:
    """Show the staged migration plan, with a diff of every object each stage touches."""
    from migrate.plan.api import make_plan, save_plan
    from migrate.render import plan_document, plan_text

    _check_cilium_version(cilium_version)
    if from_paths:
        from migrate.sources.snapshot import read_snapshot

        snapshot = read_snapshot(list(from_paths), metallb_namespace=metallb_namespace)
        snapshot.facts["source"] = "files: " + ", ".join(from_paths)
    else:
        from migrate.sources.live import read_live

        kube = _kube(kubeconfig, kube_context)
        snapshot = read_live(kube, metallb_namespace=metallb_namespace,
                             cilium_namespace=cilium_namespace)
    if not snapshot.has_metallb:
        raise NothingToMigrateError("nothing MetalLB-related found: there is nothing to migrate")
    result = make_plan(snapshot, cilium=cilium_version, cilium_namespace=cilium_namespace,
                       canary=canary, bgp_batch=bgp_batch)
    if out_path:
        save_plan(result, out_path)
    if output == "table":
        plan_text(result, sys.stdout)
        if out_path:
            click.echo(f"Saved to {out_path}; apply it one stage at a time with"
                       f" `migrate apply --plan {out_path} --stage pin`.")
    else:
        click.echo(plan_document(result, output), nl=False)
    if result.blocked:
        raise BlockedError("the plan has ERROR findings; fix them before applying")
    if detailed_exitcode:
        sys.exit(EXIT_CHANGES_PENDING if result.has_changes else EXIT_OK)


@main.command()
@click.option("--plan", "plan_path", required=True, type=click.Path(exists=True),
              help="A plan saved by migrate plan --out.")
@click.option("--stage", "stage", required=True, shell_complete=_complete_stage,
              help="Stage name or number.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Send every write with the server's dry run.")
@click.option("--timeout-scale", type=float, default=1.0, show_default=True,
              help="Multiply every wait's timeout.")
@click.option("--concurrency", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Service patches in flight at once.")
@click.option("--interface", "arp_interface", metavar="IF", default=None,
              help="At the L2 hand-over, also wait until nobody answers ARP for the IPs on IF"
                   " before Cilium starts (needs CAP_NET_RAW; nothing is sent elsewhere).")
@_QUIET
@_cluster_options
def apply(plan_path: str, stage: str, yes: bool, dry_run: bool, timeout_scale: float,
          concurrency: int, arp_interface: str | None, quiet: bool, kubeconfig: str | None,
          kube_context: str | None, state_namespace: str) -> None:
    """Carry out one stage of a saved plan, then check every Service kept its IPs."""
    from migrate.apply.executor import ApplyOptions, apply_stage
    from migrate.apply.waits import WaitOptions
    from migrate.plan.api import load_plan
    from migrate.render import plan_text

    loaded = load_plan(plan_path)
    chosen = loaded.stage(stage)
    if not yes and not dry_run:
        single = type(loaded)(**{**loaded.__dict__, "stages": [chosen]})
        plan_text(single, sys.stderr)
        if not sys.stdin.isatty():
            raise click.UsageError("not a terminal: confirm with --yes")
        click.confirm(f"Apply stage {chosen.number} ({chosen.name})?", abort=True, err=True)
    kube = _kube(kubeconfig, kube_context)
    options = ApplyOptions(dry_run=dry_run, state_namespace=state_namespace,
                           waits=WaitOptions(timeout_scale=timeout_scale),
                           concurrency=concurrency, arp_interface=arp_interface)
    if not quiet:
        click.echo(f"Stage {chosen.number}: {chosen.name}", err=True)
    with _reporter(quiet) as reporter:
        result = apply_stage(kube, loaded, chosen.name, options=options, reporter=reporter)
    messages = {
        "applied": f"Stage {result.stage} applied ({result.writes} write(s)); every Service"
                   " kept its IPs.",
        "already-applied": f"Stage {result.stage} was already applied; nothing to do."
                           + (f" ({result.notes[0]})" if result.notes else ""),
        "dry-run": f"Dry run of stage {result.stage}: {result.writes} write(s) accepted by the"
                   " server, nothing changed.",
    }
    click.echo(messages[result.outcome])


@main.command()
@click.option("--plan", "plan_path", default=None, type=click.Path(exists=True),
              help="The plan the stages were applied with (default: the copy apply recorded"
                   " in the cluster).")
@click.option("--to", "to_stage", default=None, shell_complete=_complete_stage,
              help="Undo the stages after this one (default: every stage).")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Show what would be undone; change nothing.")
@click.option("--interface", "arp_interface", metavar="IF", default=None,
              help="Undoing the L2 hand-over, also wait until nobody answers ARP for the IPs on"
                   " IF before MetalLB's advertisements return (needs CAP_NET_RAW).")
@_QUIET
@_cluster_options
def rollback(plan_path: str | None, to_stage: str | None, yes: bool, dry_run: bool,
             arp_interface: str | None, quiet: bool, kubeconfig: str | None,
             kube_context: str | None, state_namespace: str) -> None:
    """Undo applied stages from the recorded backups, newest first."""
    from migrate.apply.executor import ApplyOptions
    from migrate.apply.rollback import rollback as run_rollback
    from migrate.plan.api import load_plan

    loaded = load_plan(plan_path) if plan_path else None
    kube = _kube(kubeconfig, kube_context)
    with _reporter(quiet) as reporter:
        preview = run_rollback(kube, loaded, to=to_stage,
                               options=ApplyOptions(dry_run=True,
                                                    state_namespace=state_namespace),
                               reporter=reporter)
    if not preview.undone:
        click.echo("Nothing to roll back.")
        return
    if dry_run:
        click.echo(f"Dry run: would undo {', '.join(preview.undone)}.")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("not a terminal: confirm with --yes")
        click.confirm(f"Undo {', '.join(preview.undone)}?", abort=True, err=True)
    with _reporter(quiet) as reporter:
        result = run_rollback(kube, loaded, to=to_stage,
                              options=ApplyOptions(state_namespace=state_namespace,
                                                   arp_interface=arp_interface),
                              reporter=reporter)
    click.echo(f"Rolled back {', '.join(result.undone)}; every Service kept its IPs.")


@main.command()
@click.option("--from", "from_paths", multiple=True, type=click.Path(exists=True), metavar="DIR",
              help="Rehearse on files/folders (a snapshot) instead of a live cluster.")
@click.option("--kubeconfig", default=None, type=click.Path(),
              help="kubeconfig file of the cluster to rehearse (read-only).")
@click.option("--context", "kube_context", default=None, help="kubeconfig context to use.")
@click.option("--canary", metavar="POOL", default=None,
              help="Rehearse the plan with this pool handed over first (l2-canary).")
@click.option("--cilium-version", metavar="X.Y", default=None,
              help="Target Cilium version (default: detected from the cluster, else newest).")
@click.option("--metallb-namespace", metavar="NS", default=None)
@click.option("--cilium-namespace", metavar="NS", default="kube-system", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the twin's timings and of the chaos runs: the same seed gives the"
                   " same report.")
@click.option("--time-scale", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="X", help="Run the twin on a real clock, its delays times X (default:"
                                " virtual time, no wall time spent waiting).")
@click.option("--wire", is_flag=True,
              help="The twin's nodes answer ARP in network namespaces of ours and a prober"
                   " watches every IP (root; real time).")
@click.option("--chaos", type=click.IntRange(min=0), default=0, metavar="N",
              help="N more runs, each with one fault at a seeded point (API 500, 409, timeout,"
                   " dropped connection, or a SIGKILL of the apply then resume or rollback).")
@click.option("--chaos-seed", "chaos_seeds", type=int, multiple=True, metavar="SEED",
              help="Replay the chaos run of this seed (as the report names it); repeatable.")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              metavar="FILE.html", help="Also write a self-contained HTML report (stage table,"
                                        " a timeline per IP of the cutover).")
@click.option("--save-snapshot", type=click.Path(file_okay=False), default=None, metavar="DIR",
              help="Save the snapshot rehearsed on (loadable by --from and by `python -m"
                   " migrate.lab serve --snapshot`).")
@_QUIET
def rehearse(from_paths: tuple[str, ...], kubeconfig: str | None, kube_context: str | None,
             canary: str | None, cilium_version: str | None, metallb_namespace: str | None,
             cilium_namespace: str, seed: int, time_scale: float | None, wire: bool,
             chaos: int, chaos_seeds: tuple[int, ...], output: str, report_path: str | None,
             save_snapshot: str | None, quiet: bool) -> None:
    """Rehearse the whole migration, and its rollback, on a twin of the cluster first.

    \b
    Reads the cluster as `migrate plan` does (read-only, never a Secret) and runs on an
    emulated twin of it, in-process: every stage, verify, a full rollback (the start state
    must come back exactly), every stage again, verify. Per stage: outcome, writes, time in
    the twin and expected on the cluster, invariants I1-I6, leases; per IP the cutover
    silence; then the verdict. Exits 0 when safe, 3 when an ERROR finding blocks the plan,
    4 when an invariant failed (or a stage could not finish) in the twin.
    """
    from migrate.rehearse import RehearseOptions
    from migrate.rehearse import rehearse as run_rehearsal
    from migrate.rehearse.report import report_html, report_json, report_table

    if from_paths and (kubeconfig or kube_context):
        raise click.UsageError("give --from or a cluster (--kubeconfig/--context), not both")
    options = RehearseOptions(canary=canary, cilium_version=cilium_version,
                              cilium_namespace=cilium_namespace,
                              metallb_namespace=metallb_namespace, seed=seed,
                              time_scale=time_scale, wire=wire, chaos=chaos,
                              chaos_seeds=chaos_seeds)
    with _reporter(quiet) as reporter:
        if from_paths:
            result = run_rehearsal(options, reporter, from_paths=from_paths,
                                   save_snapshot=save_snapshot)
        else:
            kube = _kube(kubeconfig, kube_context)
            try:
                result = run_rehearsal(options, reporter, kube=kube,
                                       save_snapshot=save_snapshot,
                                       source=f"cluster (context {kube_context})"
                                       if kube_context else "cluster")
            finally:
                kube.close()
    if output == "json":
        click.echo(report_json(result), nl=False)
    else:
        report_table(result, sys.stdout)
    if report_path:
        from pathlib import Path

        Path(report_path).write_text(report_html(result), encoding="utf-8")
        click.echo(f"HTML report written to {report_path}", err=True)
    if result.verdict.status == "blocked":
        raise BlockedError(result.verdict.summary)
    if result.verdict.status in ("unsafe", "inconclusive"):
        raise VerificationError(result.verdict.summary)


@main.command()
@_cluster_options
def status(kubeconfig: str | None, kube_context: str | None, state_namespace: str) -> None:
    """The stages applied to the cluster, by whom and when, and the lock."""
    from migrate.apply.lock import LOCK_NAME, lock_holder
    from migrate.apply.state import StateStore
    from migrate.render import status_text

    kube = _kube(kubeconfig, kube_context)
    state = StateStore(kube, state_namespace).load()
    lease = kube.try_get("coordination.k8s.io/v1", "Lease", LOCK_NAME, state_namespace)
    status_text(state, lock_holder(lease), state_namespace, sys.stdout)


@main.command()
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@_QUIET
@_cluster_options
def unlock(yes: bool, quiet: bool, kubeconfig: str | None, kube_context: str | None,
           state_namespace: str) -> None:
    """Free the migration lock of a run that died (as terraform force-unlock).

    Shows who holds the lock and until when, watches it for one and a half renew intervals,
    refuses if its holder still renews it (the run is alive), and frees it after confirmation.
    """
    from migrate.apply.lock import await_no_renewal, free_lock, read_lock
    from migrate.render import lock_lines

    kube = _kube(kubeconfig, kube_context)
    lock = read_lock(kube, state_namespace)
    if lock is None:
        click.echo(f"The migration lock in namespace {state_namespace} is free: nothing to"
                   " unlock.")
        return
    if not yes and not sys.stdin.isatty():
        raise click.UsageError("not a terminal: confirm with --yes")
    for line in lock_lines(lock):
        click.echo(line)
    with _reporter(quiet) as reporter:
        seen = await_no_renewal(kube, lock, reporter)
    if seen is None:
        click.echo("Its holder released the lock meanwhile: nothing to unlock.")
        return
    if not yes:
        click.confirm(f"{seen.holder} has not renewed the lock for {seen.watch_seconds:.0f}s:"
                      " free it?", abort=True, err=True)
    free_lock(kube, seen)
    click.echo(f"Freed the migration lock held by {seen.holder}. A stage it was running may be"
               " part-way (see `migrate status`): `migrate apply` of that stage resumes it,"
               " `migrate rollback` undoes it.")


if __name__ == "__main__":  # pragma: no cover
    main()
