"""Benchmark: median request latency against the lab's API server, through the official client.

Starts an in-process lab (127.0.0.1, port 0) holding N LoadBalancer Services, then times each
kind of request the migration makes: get, list (one page of 500 and the whole set paged),
merge patch, status patch, create + delete, and a 10,000-object paged list's request count.

    python benchmarks/lab_latency.py [--services 2000] [--repeat 200]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from migrate.lab.server import LabServer
from migrate.lab.store import Clock, Store

MERGE = "application/merge-patch+json"


def service(index: int) -> dict[str, object]:
    """A LoadBalancer Service with an ingress IP."""
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": f"svc-{index:05d}", "namespace": "default",
                     "labels": {"app": f"app-{index % 10}"}},
        "spec": {"type": "LoadBalancer", "ports": [{"name": "http", "port": 80}]},
        "status": {"loadBalancer": {"ingress": [
            {"ip": f"10.{index // 65536}.{index // 256 % 256}.{index % 256}"}]}},
    }


def timed(label: str, repeat: int, action: Callable[[int], object]) -> None:
    """Run an action ``repeat`` times and print its median and p95 in milliseconds."""
    samples = []
    for index in range(repeat):
        start = time.perf_counter()
        action(index)
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
    print(f"{label:<40} median {statistics.median(samples):8.2f} ms   p95 {p95:8.2f} ms"
          f"   (n={repeat})")


def main() -> None:
    """Parse options, load the store, serve, measure."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--services", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()

    store = Store(Clock.real())
    start = time.perf_counter()
    for index in range(args.services):
        store.create(service(index), manager="benchmark")
    print(f"loaded {args.services} Services into the store in "
          f"{time.perf_counter() - start:.2f} s")

    with LabServer(store) as server, tempfile.TemporaryDirectory() as tmp:
        kubeconfig = server.write_kubeconfig(Path(tmp) / "kubeconfig")
        api_client = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        core = k8s.CoreV1Api(api_client)
        core.list_namespace()  # warm the client's lazy imports and the connection pool
        n = args.services
        repeat = args.repeat

        timed("GET /version (raw round trip)", repeat,
              lambda i: k8s.VersionApi(api_client).get_code())
        timed("get service", repeat,
              lambda i: core.read_namespaced_service(f"svc-{i % n:05d}", "default"))
        timed("list services, one page of 500", max(10, repeat // 10),
              lambda i: core.list_namespaced_service("default", limit=500))
        timed("list services, label selector", max(10, repeat // 10),
              lambda i: core.list_namespaced_service("default", label_selector="app=app-3"))
        timed("merge patch service labels", repeat,
              lambda i: core.patch_namespaced_service(
                  f"svc-{i % n:05d}", "default", {"metadata": {"labels": {"seen": str(i)}}},
                  _content_type=MERGE))
        timed("merge patch service status", repeat,
              lambda i: core.patch_namespaced_service_status(
                  f"svc-{i % n:05d}", "default",
                  {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}}},
                  _content_type=MERGE))

        def create_delete(i: int) -> None:
            body = service(n + i)
            core.create_namespaced_service("default", body)
            core.delete_namespaced_service(f"svc-{n + i:05d}", "default")

        timed("create + delete service", repeat, create_delete)

        before = server.request_count
        start = time.perf_counter()
        token = None
        items = 0
        while True:
            page = core.list_service_for_all_namespaces(limit=500, _continue=token)
            items += len(page.items)
            token = page.metadata.var_continue
            if not token:
                break
        print(f"paged list of all {items} Services: {server.request_count - before} requests, "
              f"{time.perf_counter() - start:.2f} s")
        api_client.close()


if __name__ == "__main__":
    main()
