"""``python -m migrate.lab serve --snapshot DIR [--port N|0] --kubeconfig-out FILE
[--timing realistic|instant] [--time-scale S] [--seed N]``.

Loads the snapshot into a store, serves the emulated API on 127.0.0.1, writes a kubeconfig for
it once it accepts requests, and serves until killed (SIGTERM / SIGINT). When the module
``migrate.lab.models`` exposes ``build_controllers(store)``, the controller models run in a
background thread on the real clock: every process reacts after its own delay (the realistic
timing, or ``--timing instant``: in the tick of the change), every modelled duration
multiplied by ``--time-scale`` (1: real durations; 0.05: a 30 s grace period takes 1.5 s), the
delays drawn from ``--seed``.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from migrate.errors import MigrateError
from migrate.lab.server import LabServer
from migrate.lab.store import Clock, Store

MODELS_TICK = 0.2
"""Longest wait between two rounds of the controller models under ``serve`` (a round also
starts when something is due earlier, or when a write arrives)."""


def load_controllers(store: Store, **options: Any) -> Any | None:
    """``migrate.lab.models.build_controllers(store, **options)`` when that exists, else
    None."""
    try:
        models = importlib.import_module("migrate.lab.models")
    except ModuleNotFoundError as exc:
        if exc.name == "migrate.lab.models":
            return None
        print(f"migrate.lab: controller models unavailable: {exc}", file=sys.stderr)
        return None
    build = getattr(models, "build_controllers", None)
    if not callable(build):
        return None
    try:
        return build(store, **options)
    except Exception as exc:  # serve the API even when a model cannot start
        print(f"migrate.lab: controller models failed to start: {exc!r}", file=sys.stderr)
        return None


def run_controllers(controllers: Any, stop: threading.Event) -> None:
    """Drive the models in real time: run what is due, then wait until the next thing is due,
    a write arrives, or a tick has passed."""
    wake = controllers.wake
    while not stop.is_set():
        try:
            controllers.run_until_idle()
            controllers.advance(0.0)
            due = controllers.runtime.scheduler.next_due()
        except Exception as exc:  # a model bug must not take the API server down
            print(f"migrate.lab: controller models failed: {exc!r}", file=sys.stderr, flush=True)
            due = None
        timeout = MODELS_TICK
        if due is not None:
            timeout = min(MODELS_TICK, max(0.0, due - time.time()))
        if stop.is_set():
            break
        wake.wait(timeout)
        wake.clear()


def serve(snapshot: Sequence[str], port: int, kubeconfig_out: str, *, models: bool,
          timing: str = "realistic", time_scale: float = 1.0, seed: int = 0) -> int:
    """Run the lab until a signal arrives; returns the exit code."""
    store, skipped = Store.from_snapshot(list(snapshot), Clock.real())
    for line in skipped:
        print(f"migrate.lab: skipped {line}", file=sys.stderr)
    try:
        server = LabServer(store, port=port)
    except OSError as exc:
        print(f"migrate.lab: cannot listen on 127.0.0.1:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    stop = threading.Event()
    controllers = load_controllers(store, timing=timing, time_scale=time_scale,
                                   seed=seed) if models else None
    worker: threading.Thread | None = None
    if controllers is not None:
        worker = threading.Thread(target=run_controllers, args=(controllers, stop),
                                  name="lab-models", daemon=True)
        worker.start()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    server.write_kubeconfig(kubeconfig_out)
    running = (f"running, {timing} timing, time scale {time_scale:g}, seed {seed}"
               if controllers is not None else "off")
    print(f"migrate.lab: serving {server.url} (kubeconfig {kubeconfig_out}; models {running})",
          flush=True)
    try:
        while not stop.is_set():
            stop.wait(0.5)
    finally:
        server.stop()
        if worker is not None:
            worker.join(timeout=2)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m migrate.lab``."""
    parser = argparse.ArgumentParser(prog="python -m migrate.lab",
                                     description="The emulated Kubernetes cluster of migrate.")
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("serve", help="serve a snapshot folder over the Kubernetes API")
    run.add_argument("--snapshot", action="append", required=True, metavar="DIR",
                     help="snapshot folder or file (repeatable)")
    run.add_argument("--port", type=int, default=0, help="TCP port on 127.0.0.1 (0: any free)")
    run.add_argument("--kubeconfig-out", required=True, metavar="FILE",
                     help="where to write the kubeconfig for the server")
    run.add_argument("--no-models", action="store_true",
                     help="do not run the controller models")
    run.add_argument("--timing", choices=("realistic", "instant"), default="realistic",
                     help="realistic: every process reacts after its own delay, pods take "
                     "their time to start and stop (default); instant: every reaction in the "
                     "tick of its cause")
    run.add_argument("--time-scale", type=float, default=1.0, metavar="S",
                     help="multiply every modelled duration by S (default 1: real time)")
    run.add_argument("--seed", type=int, default=0, metavar="N",
                     help="seed of the modelled delays (same seed, same run)")
    args = parser.parse_args(argv)
    if args.time_scale <= 0:
        parser.error("--time-scale must be positive")
    for path in args.snapshot:
        if not Path(path).exists():
            parser.error(f"no such snapshot: {path}")
    try:
        return serve(args.snapshot, args.port, args.kubeconfig_out, models=not args.no_models,
                     timing=args.timing, time_scale=args.time_scale, seed=args.seed)
    except MigrateError as exc:
        print(f"migrate.lab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
