"""Benchmark `migrate rehearse` on a 1,000-Service cluster.

Generates the cluster of ``engine_scale.py`` (the guide scenario's workloads, 200 MetalLB
pools, N LoadBalancer Services), then runs, each as a whole process from this checkout:

- ``migrate rehearse --from DIR --time-scale 0.05 -o json``: the twin on a real clock, its
  delays times 0.05;
- ``migrate rehearse --from DIR -o json``: the twin on virtual time (what the tests use).

Prints for each: wall time and peak RSS of the process, the verdict (and on the real clock how
far the twin's models fell behind it, when they did), per stage of the first apply (and the
rollback) the requests, the time in the twin and the expected time on a real cluster, and the
cutover silence per IP (max and median). Figures are printed, not asserted.

    python benchmarks/rehearse_scale.py [--services 1000] [--time-scale 0.05]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from engine_scale import generate  # noqa: E402  (the same generated cluster)


def rehearse(folder: Path, *extra: str) -> tuple[float, float, dict[str, object], str]:
    """Wall time (s), peak RSS (MiB), the JSON report, stderr."""
    command = [sys.executable, "-m", "migrate", "rehearse", "--from", str(folder), "-o",
               "json", *extra]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, check=False)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    if done.returncode not in (0, 3, 4):
        raise SystemExit(f"rehearse failed ({done.returncode}): {done.stderr[-1500:]}")
    return elapsed, peak, json.loads(done.stdout), done.stderr


def show(title: str, elapsed: float, peak: float, report: dict[str, object]) -> None:
    print(f"\n{title}: {elapsed:.1f}s wall, peak RSS {peak:.0f} MiB")
    verdict = report["verdict"]
    assert isinstance(verdict, dict)
    print(f"  verdict: {verdict['summary']}")
    if report.get("behindSeconds") is not None:
        print(f"  the twin's models ran up to {report['behindSeconds']}s behind the real clock")
    first = verdict.get("first")
    if isinstance(first, dict):
        print(f"  first failure: {first.get('check')} {first.get('object')}: {first.get('detail')}")
    print(f"  {'phase':<9} {'stage':<15} {'requests':>8} {'twin':>9} {'expected':>9}")
    stages = report["stages"]
    assert isinstance(stages, list)
    for row in stages:
        if row["phase"] in ("apply", "rollback"):
            print(f"  {row['phase']:<9} {row['stage']:<15} {row['requests']:>8}"
                  f" {row['twinSeconds']:>8.2f}s {row['expectedSeconds']:>8.2f}s")
    cutover = report["cutover"]
    assert isinstance(cutover, list)
    silences = [item["silence"] for item in cutover if item["silence"] is not None]
    if silences:
        print(f"  cutover silence over {len(silences)} IPs: max {max(silences):.3f}s,"
              f" median {statistics.median(silences):.3f}s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--time-scale", type=float, default=0.05)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rehearse-scale-") as scratch:
        folder = Path(scratch) / "cluster"
        generate(folder, options.services)
        print(f"cluster: {options.services} LoadBalancer Services, 200 pools, 3 nodes")
        elapsed, peak, report, _ = rehearse(folder, "--time-scale", str(options.time_scale))
        show(f"rehearse --time-scale {options.time_scale:g} (real clock)", elapsed, peak,
             report)
        elapsed, peak, report, _ = rehearse(folder)
        show("rehearse on virtual time", elapsed, peak, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
