"""Benchmark: `migrate convert` on 200 pools and 10,000 Services vs a PyYAML round trip.

The floor for any translator is reading and writing the same YAML, so the figure that matters is
the ratio of `migrate convert` to a plain load+dump with libyaml's C loader and dumper, both in
a fresh process. Goal: ≤ 1.3×. Peak memory (max RSS) of each process is printed too.

    python benchmarks/convert_scale.py [--pools 200] [--services 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROUND_TRIP = """
import sys, yaml
from pathlib import Path
docs = []
for path in sorted(Path(sys.argv[1]).rglob("*.yaml")):
    docs.extend(yaml.load_all(path.read_text(), Loader=yaml.CSafeLoader))
sys.stdout.write(yaml.dump_all(docs, Dumper=yaml.CSafeDumper, sort_keys=False))
"""

MEASURE = """
import resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
elapsed = time.perf_counter() - start
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(elapsed, rss, done.returncode)
"""


def generate(folder: Path, pools: int, services: int) -> None:
    """Write a cluster dump: pools of /24s, one L2Advertisement, Services with status IPs."""
    base = int(ipaddress.IPv4Address("10.0.0.0"))
    metallb = []
    for index in range(pools):
        metallb.append({
            "apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
            "metadata": {"name": f"pool-{index:03d}", "namespace": "metallb-system"},
            "spec": {"addresses": [f"{ipaddress.IPv4Address(base + index * 256)}/24"],
                     "autoAssign": index % 5 != 0, "avoidBuggyIPs": index % 7 == 0},
        })
    metallb.append({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                    "metadata": {"name": "all", "namespace": "metallb-system"}})
    (folder / "metallb.yaml").write_text(yaml.dump_all(metallb, Dumper=yaml.CSafeDumper))
    items = []
    for index in range(services):
        pool = index % pools
        ip = ipaddress.IPv4Address(base + pool * 256 + 1 + index // pools)
        items.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{index:05d}", "namespace": f"ns-{index % 50}",
                         "labels": {"app": f"app-{index}"},
                         "annotations": {"metallb.io/address-pool": f"pool-{pool:03d}"}
                         if pool % 5 == 0 else {}},
            "spec": {"type": "LoadBalancer", "selector": {"app": f"app-{index}"},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP",
                                "targetPort": 8080}],
                     "externalTrafficPolicy": "Cluster"},
            "status": {"loadBalancer": {"ingress": [{"ip": str(ip)}]}},
        })
    (folder / "services.yaml").write_text(
        yaml.dump({"apiVersion": "v1", "kind": "List", "items": items}, Dumper=yaml.CSafeDumper)
    )


def measure(command: list[str], repeat: int) -> tuple[float, float]:
    """Median wall time (s) and peak RSS (MiB) of a command, each run in a fresh process."""
    times, peaks = [], []
    for _ in range(repeat):
        out = subprocess.run([sys.executable, "-c", MEASURE, *command], capture_output=True,
                             text=True, check=True).stdout.split()
        if out[2] not in ("0", "3"):
            raise SystemExit(f"{command} failed with exit code {out[2]}")
        times.append(float(out[0]))
        peaks.append(int(out[1]) / 1024)
    return statistics.median(times), max(peaks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pools", type=int, default=200)
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        started = time.perf_counter()
        generate(folder, args.pools, args.services)
        print(f"generated {args.pools} pools, {args.services} Services in"
              f" {time.perf_counter() - started:.2f}s")
        floor, floor_mem = measure([sys.executable, "-c", ROUND_TRIP, str(folder)], args.repeat)
        ours, ours_mem = measure(
            [sys.executable, "-m", "migrate.cli", "convert", "-f", str(folder)], args.repeat
        )
    print(f"{'':28}{'wall (median)':>14}{'peak RSS':>12}")
    print(f"{'PyYAML C load+dump':28}{floor:>13.2f}s{floor_mem:>10.0f}MiB")
    print(f"{'migrate convert':28}{ours:>13.2f}s{ours_mem:>10.0f}MiB")
    ratio = ours / floor
    print(f"ratio: {ratio:.2f}x (goal <= 1.30x) -> {'met' if ratio <= 1.3 else 'NOT met'}")


if __name__ == "__main__":
    main()
