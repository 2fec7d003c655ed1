"""Benchmark: the asynchronous lab's processes on a 1,000-Service cluster.

Builds the guide scenario's workloads (1 MetalLB controller, 3 speakers, 2 Cilium operators,
3 agents) with N Services, and prints:

* start-up: wall time to build the controllers (every process lists the cluster);
* virtual time: 60 s of lab time before any lease exists, then an L2 cutover (the MetalLB
  advertisement deleted, a Cilium policy created) and 60 s more: wall time, the lease API
  calls, announcement changes, the cutover silence per IP (median, max) and overlaps;
* real time (as ``serve`` runs): the CPU the model thread uses per second once every
  Service has a lease (renewals every retry period, candidates' retries). With a small
  ``--time-scale`` the load grows as 1/scale: the lab then falls behind its clock.

    python benchmarks/lab_processes.py [--services 1000] [--real-seconds 10] [--time-scale 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.engine_scale import generate
from migrate.lab.__main__ import run_controllers
from migrate.lab.models import Controllers, build_controllers
from migrate.lab.store import Clock, Store

POLICY = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
          "metadata": {"name": "all"}, "spec": {"loadBalancerIPs": True}}


def cutover(store: Store) -> None:
    """Break before make, at once (what an unsafe engine does)."""
    store.delete("metallb.io", "L2Advertisement", "all", "metallb-system")
    store.create(POLICY)


def lease_calls(controllers: Controllers, since: float) -> str:
    requests = controllers.requests
    gets = requests.count(verb="GET", resource="leases", since=since)
    updates = requests.count(verb="UPDATE", resource="leases", since=since)
    creates = requests.count(verb="CREATE", resource="leases", since=since)
    return f"{gets} GET, {updates} UPDATE, {creates} CREATE"


def virtual(folder: Path, services: int) -> None:
    start = time.perf_counter()
    store, _ = Store.from_snapshot([folder], Clock.manual())
    loaded = time.perf_counter() - start
    start = time.perf_counter()
    controllers = build_controllers(store, timing="realistic", seed=1)
    built = time.perf_counter() - start
    print(f"loaded {services} Services in {loaded:.2f} s; controllers started in {built:.2f} s")
    start = time.perf_counter()
    controllers.advance(60)
    print(f"virtual: 60 s before the cutover took {time.perf_counter() - start:.2f} s")
    since = controllers.now()
    start = time.perf_counter()
    cutover(store)
    controllers.advance(60)
    wall = time.perf_counter() - start
    record = controllers.record
    silences = list(record.cutover_silences().values())
    print(f"virtual: cutover + 60 s took {wall:.2f} s; lease calls "
          f"{lease_calls(controllers, since)}; {len(record)} announcement changes, "
          f"{len(record.overlaps())} overlaps")
    if silences:
        print(f"virtual: cutover silence per IP: median {statistics.median(silences):.2f} s, "
              f"max {max(silences):.2f} s over {len(silences)} IPs")
    controllers.close()


def real(folder: Path, seconds: float, scale: float) -> None:
    store, _ = Store.from_snapshot([folder], Clock.real())
    controllers = build_controllers(store, timing="realistic", seed=1, time_scale=scale)
    stop = threading.Event()
    worker = threading.Thread(target=run_controllers, args=(controllers, stop), daemon=True)
    cutover(store)
    worker.start()
    wanted = sum(1 for s in store.list("", "Service") if s["spec"].get("type") == "LoadBalancer")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(
            store.list("coordination.k8s.io", "Lease", "kube-system")) < wanted:
        time.sleep(0.5)  # every agent has seen the policy and every lease is taken
    since = controllers.now()
    process_before, wall_before = time.process_time(), time.perf_counter()
    time.sleep(seconds)
    used = time.process_time() - process_before
    wall = time.perf_counter() - wall_before
    stop.set()
    worker.join(timeout=5)
    leases = len(store.list("coordination.k8s.io", "Lease", "kube-system"))
    print(f"real time (time scale {scale:g}, retry period {2 * scale:g} s): {leases} leases; "
          f"model CPU {used / wall:.2f} s per s; lease calls {lease_calls(controllers, since)} "
          f"in {wall:.1f} s")
    controllers.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--real-seconds", type=float, default=10.0)
    parser.add_argument("--time-scale", type=float, default=1.0,
                        help="time scale of the real-time part (serve's --time-scale)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cluster"
        generate(folder, args.services, pools=10)
        virtual(folder, args.services)
        real(folder, args.real_seconds, args.time_scale)


if __name__ == "__main__":
    main()
