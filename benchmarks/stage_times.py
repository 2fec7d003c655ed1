"""Benchmark: each stage's wall time on a 1,000-Service cluster in the real-time lab, and the
cutover silence per IP.

Generates the cluster of ``engine_scale.py`` (the guide scenario's workloads, 200 MetalLB
pools, N LoadBalancer Services) and serves it from this process with the asynchronous models
(realistic timing on the real clock, as ``python -m migrate.lab serve`` runs them). Then, each as
a whole process from this checkout, as an operator runs them: ``migrate plan --out``, and
``migrate apply --stage S --yes`` for every stage. Prints per stage the wall time (and, at a
``--time-scale`` below 1, the figure scaled back to real time), then the cutover silence per IP
from the lab's announcement record (how long nobody answered between MetalLB's last answer and
Cilium's first): max, median, p95, next to what the plan states. Figures are printed, not
asserted.

Scaling back divides by the time scale: the models' delays (grace periods, reactions, the
lease retry period) scale, the engine's own polls (0.5 s) and the process start-ups do not, so
a scaled-back figure is an upper estimate. A small time scale also loads the lab itself (every
lease renewed 1/scale times as often, lab_processes.py), which slows the API server the stages
talk to. One run at time scale 1 takes about a minute and a half.

    python benchmarks/stage_times.py [--services 1000] [--time-scale 1] [--seed 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.engine_scale import generate  # noqa: E402  (the same generated cluster)
from migrate.lab.__main__ import run_controllers  # noqa: E402
from migrate.lab.models import build_controllers  # noqa: E402
from migrate.lab.server import LabServer  # noqa: E402
from migrate.lab.store import Clock, Store  # noqa: E402


def migrate(*args: str) -> float:
    """Run ``migrate ARGS`` from this checkout; its wall time (s)."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "migrate", *args], capture_output=True,
                          text=True, cwd=REPO, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"migrate {args[0]} failed ({done.returncode}): {done.stderr[-1500:]}")
    return elapsed


def p95(values: list[float]) -> float:
    """The 95th percentile (the largest value for fewer than two)."""
    return statistics.quantiles(values, n=20)[18] if len(values) > 1 else max(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="the lab's time scale (serve's --time-scale); 1 is real time")
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()
    scale = options.time_scale
    with tempfile.TemporaryDirectory(prefix="stage-times-") as scratch:
        tmp = Path(scratch)
        generate(tmp / "cluster", options.services)
        store, _ = Store.from_snapshot([tmp / "cluster"], Clock.real())
        controllers = build_controllers(store, timing="realistic", seed=options.seed,
                                        time_scale=scale)
        stop = threading.Event()
        worker = threading.Thread(target=run_controllers, args=(controllers, stop),
                                  name="lab-models", daemon=True)
        worker.start()
        server = LabServer(store).start()
        kubeconfig = str(server.write_kubeconfig(tmp / "kubeconfig"))
        try:
            time.sleep(max(2.0, 10 * scale))  # pods started, speakers announcing
            plan_file = tmp / "plan.json"
            planned = migrate("plan", "--kubeconfig", kubeconfig, "--out", str(plan_file),
                              "-o", "json")
            plan = json.loads(plan_file.read_text())
            stages = [s["name"] for s in plan["stages"]]
            print(f"cluster: {options.services} LoadBalancer Services, 200 pools, 3 nodes;"
                  f" lab timing realistic, time scale {scale:g}, seed {options.seed}")
            scaled = scale != 1.0
            print(f"  {'stage':<16} {'wall':>9}" + (f" {'scaled back':>12}" if scaled else ""))
            rows = [("plan", planned)]
            for stage in stages:
                rows.append((stage, migrate("apply", "--plan", str(plan_file), "--stage",
                                            stage, "--yes", "-q", "--kubeconfig", kubeconfig)))
            for name, wall in rows:
                print(f"  {name:<16} {wall:>8.2f}s" + (f" {wall / scale:>11.1f}s" if scaled
                                                       else ""))
            total = sum(wall for name, wall in rows if name != "plan")
            print(f"  {'every stage':<16} {total:>8.2f}s"
                  + (f" {total / scale:>11.1f}s" if scaled else ""))
            wanted = len(plan.get("expectedIPs") or {})
            deadline = time.monotonic() + max(30.0, 60 * scale)
            while time.monotonic() < deadline and len(
                    controllers.record.cutover_silences()) < wanted:
                time.sleep(0.2)  # the last datapaths programmed
            silences = list(controllers.record.cutover_silences().values())
            if silences:
                planned_range = (plan.get("context") or {}).get("cutoverSilence") or {}
                back = (f"; scaled back: max {max(silences) / scale:.2f}s, median"
                        f" {statistics.median(silences) / scale:.2f}s, p95"
                        f" {p95(silences) / scale:.2f}s") if scaled else ""
                print(f"cutover silence over {len(silences)} IPs: max {max(silences):.3f}s,"
                      f" median {statistics.median(silences):.3f}s, p95"
                      f" {p95(silences):.3f}s{back} (the plan states"
                      f" {planned_range.get('min')}-{planned_range.get('max')}s); overlaps"
                      f" {len(controllers.record.overlaps())}")
            else:
                print("cutover silence: no IP went from MetalLB to Cilium")
            print(f"the lab's models ran up to {controllers.lateness:.3f}s behind the clock"
                  " (a figure above that much is partly the lab's own lag)")
        finally:
            server.stop()
            stop.set()
            worker.join(timeout=10)
            controllers.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
