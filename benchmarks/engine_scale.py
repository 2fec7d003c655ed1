"""Benchmark the engine: `migrate plan` on 10,000 Services and the `pin` stage on 5,000.

* plan: whole-process wall time and peak RSS of `migrate plan --from DIR -o json` against
  `migrate convert -f DIR` (the translator alone) on the same files. Goal: plan <= 1.5x.
  The plan document holds every object before and after each stage, several times the size
  of convert's output, so `-o yaml` (pure emitting cost) is printed too, for information.
  Then `migrate plan` read live from the lab: wall time and request count.
* pin: `apply --stage pin` for N Services against the lab (`python -m migrate.lab serve`, in
  its own process), with bounded, configurable concurrency: wall time, requests, Services/s,
  peak RSS. Goal: >= 200 Services/s.

    python benchmarks/engine_scale.py [--services 10000] [--pin-services 5000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BASE = REPO / "testdata" / "clusters" / "guide-single-pool"


def generate(folder: Path, services: int, pools: int = 200) -> None:
    """A whole cluster: the guide scenario's workloads, `pools` /24 pools, N Services."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("nodes.yaml", "metallb-install.yaml"):
        shutil.copy(BASE / name, folder / name)
    # A client rate limit sized for this many leases, as preflight asks for: the busiest agent
    # tries every Service once per 2 s retry period, with 1.5x headroom.
    cilium = (BASE / "cilium.yaml").read_text()
    qps = max(20, -(-services * 3 // 4))
    cilium = cilium.replace('k8s-client-qps: "20"', f'k8s-client-qps: "{qps}"').replace(
        'k8s-client-burst: "40"', f'k8s-client-burst: "{qps * 2}"')
    (folder / "cilium.yaml").write_text(cilium)
    docs: list[dict[str, object]] = []
    for index in range(pools):
        docs.append({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool",
                     "metadata": {"name": f"pool-{index:03d}", "namespace": "metallb-system"},
                     "spec": {"addresses": [f"10.{index // 200}.{index % 200}.0/24"]}})
    docs.append({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement",
                 "metadata": {"name": "all", "namespace": "metallb-system"}})
    namespaces = sorted({f"ns-{i % 50}" for i in range(services)})
    docs.extend({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n}}
                for n in namespaces)
    for index in range(services):
        pool = index % pools
        docs.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{index:05d}", "namespace": f"ns-{index % 50}"},
            "spec": {"type": "LoadBalancer", "selector": {"app": f"a{index}"},
                     "ports": [{"port": 80, "protocol": "TCP"}]},
            "status": {"loadBalancer": {"ingress": [
                {"ip": f"10.{pool // 200}.{pool % 200}.{1 + index // pools}"}]}},
        })
    (folder / "objects.yaml").write_text(yaml.dump_all(docs, Dumper=yaml.CSafeDumper))


def timed(command: list[str]) -> tuple[float, float, str]:
    """Wall time (s), peak RSS (MiB) of the child, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if done.returncode not in (0, 2, 3):
        raise SystemExit(f"{' '.join(command[:4])}... failed ({done.returncode}):"
                         f" {done.stderr[-500:]}")
    return elapsed, max(peak, before) / 1024, done.stdout


class Lab:
    """`python -m migrate.lab serve` in its own process, stopped by pid."""

    def __init__(self, snapshot: Path, kubeconfig: Path, *, models: bool) -> None:
        command = [sys.executable, "-m", "migrate.lab", "serve", "--snapshot", str(snapshot),
                   "--port", "0", "--kubeconfig-out", str(kubeconfig)]
        if not models:
            command.append("--no-models")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        assert self.process.stdout is not None
        self.process.stdout.readline()  # "serving ..." once it accepts requests
        self.kubeconfig = kubeconfig

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


def bench_plan(folder: Path, services: int) -> None:
    migrate = [sys.executable, "-m", "migrate.cli"]
    translate, translate_mem, _ = timed([*migrate, "convert", "-f", str(folder)])
    plan, plan_mem, _ = timed([*migrate, "plan", "--from", str(folder), "-o", "json"])
    plan_yaml, plan_yaml_mem, _ = timed([*migrate, "plan", "--from", str(folder), "-o", "yaml"])
    ratio = plan / translate
    print(f"plan, {services} Services from files (whole process, output included):")
    print(f"  translator alone (convert, YAML)  {translate:6.2f}s {translate_mem:5.0f} MiB")
    print(f"  plan -o json                      {plan:6.2f}s {plan_mem:5.0f} MiB"
          f"  {ratio:.2f}x (goal <= 1.5x) -> {'met' if ratio <= 1.5 else 'NOT met'}")
    print(f"  plan -o yaml                      {plan_yaml:6.2f}s {plan_yaml_mem:5.0f} MiB"
          f"  {plan_yaml / translate:.2f}x (the plan document is ~5x the convert output;"
          " YAML emitting dominates)")


def bench_live_plan(folder: Path, tmp: Path) -> None:
    from migrate.kube import Kube
    from migrate.plan.api import make_plan
    from migrate.sources.live import read_live

    lab = Lab(folder, tmp / "kubeconfig-plan", models=False)
    try:
        kube = Kube.from_kubeconfig(str(lab.kubeconfig))
        start = time.perf_counter()
        snapshot = read_live(kube)
        read = time.perf_counter() - start
        requests = kube.requests
        make_plan(snapshot)
        print(f"reading the cluster live from the lab: {read:.2f}s, {requests} requests for"
              f" {len(snapshot.services)} Services (page size {kube.page_size}: the count"
              " grows only by one per page); with the plan:"
              f" {time.perf_counter() - start:.2f}s")
        kube.close()
    finally:
        lab.stop()


def bench_pin(tmp: Path, services: int, concurrency: int) -> None:
    from migrate.apply.executor import ApplyOptions, apply_stage
    from migrate.kube import Kube
    from migrate.plan.api import make_plan
    from migrate.sources.live import read_live

    folder = tmp / "pin"
    generate(folder, services)
    lab = Lab(folder, tmp / "kubeconfig-pin", models=False)
    try:
        kube = Kube.from_kubeconfig(str(lab.kubeconfig))
        plan = make_plan(read_live(kube))
        kube.requests = 0
        start = time.perf_counter()
        result = apply_stage(kube, plan, "pin", options=ApplyOptions(concurrency=concurrency))
        elapsed = time.perf_counter() - start
        rate = services / elapsed
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"pin stage, {services} Services, concurrency {concurrency}: {elapsed:.2f}s,"
              f" {kube.requests} requests, {result.writes} writes, {rate:.0f} Services/s"
              f" (goal >= 200) -> {'met' if rate >= 200 else 'NOT met'}; peak RSS of this"
              f" process {peak:.0f} MiB")
        kube.close()
    finally:
        lab.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10_000)
    parser.add_argument("--pin-services", type=int, default=5_000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        folder = tmp / "plan"
        generate(folder, args.services)
        bench_plan(folder, args.services)
        bench_live_plan(folder, tmp)
        bench_pin(tmp, args.pin_services, args.concurrency)


if __name__ == "__main__":
    main()
