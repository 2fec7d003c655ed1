"""Fixtures of the lab: an emulated API server started in-process on 127.0.0.1 (port 0).

``lab`` gives a running server over a fresh store with the official ``kubernetes`` client
configured from the kubeconfig the server wrote; ``lab_factory`` starts more (or one over a
store or snapshot of the test's choosing). Every server is stopped at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from migrate.lab.server import LabServer
from migrate.lab.store import Clock, Store


@dataclass
class Lab:
    """A running lab server and a client configured for it."""

    server: LabServer
    store: Store
    api_client: k8s.ApiClient
    kubeconfig: Path

    @property
    def core(self) -> k8s.CoreV1Api:
        """CoreV1Api on this lab."""
        return k8s.CoreV1Api(self.api_client)

    @property
    def apps(self) -> k8s.AppsV1Api:
        """AppsV1Api on this lab."""
        return k8s.AppsV1Api(self.api_client)

    @property
    def custom(self) -> k8s.CustomObjectsApi:
        """CustomObjectsApi on this lab."""
        return k8s.CustomObjectsApi(self.api_client)


LabFactory = Callable[..., Lab]


@pytest.fixture
def lab_factory(tmp_path: Path) -> Iterator[LabFactory]:
    """Start labs: ``lab_factory(store=None, snapshot=None)``; all are stopped at teardown."""
    started: list[Lab] = []

    def start(store: Store | None = None, snapshot: Sequence[str | Path] | None = None) -> Lab:
        if store is None:
            if snapshot is not None:
                store, _ = Store.from_snapshot(list(snapshot), Clock.real())
            else:
                store = Store(Clock.real())
        server = LabServer(store).start()
        kubeconfig = server.write_kubeconfig(tmp_path / f"kubeconfig-{len(started)}.yaml")
        api_client = k8s_config.new_client_from_config(config_file=str(kubeconfig))
        lab = Lab(server=server, store=store, api_client=api_client, kubeconfig=kubeconfig)
        started.append(lab)
        return lab

    try:
        yield start
    finally:
        for lab in started:
            lab.api_client.close()
            lab.server.stop()


@pytest.fixture
def lab(lab_factory: LabFactory) -> Lab:
    """A running lab over a fresh store (built-in kinds, MetalLB and Cilium CRDs)."""
    return lab_factory()
