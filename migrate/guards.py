"""Named switches for the safety measures real clusters need (issue 10, Build 5-11).

Each guard is on by default, and the code that carries it (translation, preflight, plan,
apply) reads its flag where the measure lives; the module sits at the top of the package so
that each of those may read it. Nothing in the tool turns one off: tests do, through
:func:`disabled`, to show on the asynchronous lab that the hazard a guard prevents really
happens without it (an IP lost or moved, two announcers, a rollback that never ends).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, fields


@dataclass
class Guards:
    """One flag per guard; the docstring of each says what it keeps from happening."""

    terminating_pods: bool = True
    """A wait for "no pod" counts Terminating pods: each still runs its process until it exits
    (migrate/apply/waits.py ``workload_pods``)."""
    metallb_released: bool = True
    """l2-cutover creates Cilium's policies only once MetalLB's speakers no longer announce
    (waits.py ``metallb_released_check``)."""
    arp_silence: bool = True
    """With ``--interface``, l2-cutover also waits until nobody answers ARP for the IPs it hands
    over before Cilium's policies appear (apply/executor.py); where MetalLB leaves no trace in
    the API (before 0.14.6) only the wire tells that a slow speaker still answers."""
    cilium_released: bool = True
    """A rollback of l2-cutover holds Cilium's leases itself and deletes the policies and
    recreates MetalLB's advertisements only once the agents that led stopped
    (apply/cilium_leases.py ``hold_check``); off: the policies go at once, the advertisements
    right after."""
    pin_prefix: bool = True
    """MetalLB's pin uses the annotation prefix its controller reads (plan/build.py
    ``metallb_pin_prefixes``); off: always ``metallb.io/``."""
    metallb_restart_finding: bool = True
    """Before MetalLB 0.14.0, the finding that rolling back freeze-metallb with pending
    Services can move an IP (plan/build.py)."""
    startup_race: bool = True
    """Before Cilium 1.18.2, the ERROR naming each Service that could take a pinned IP at
    LB-IPAM's start-up (plan/build.py ``startup_race``)."""
    recorded_readiness: bool = True
    """A rollback that scales a Deployment back waits for its recorded readiness, not for
    ``spec.replicas`` ready (waits.py ``replicas_check``)."""
    pool_devices: bool = True
    """Preflight finds the device carrying each pool's subnet among Cilium's restricted
    devices (preflight/cilium_checks.py ``check_l2_devices``)."""
    lease_load: bool = True
    """Preflight computes the lease load from the retry period; off: from the renew deadline
    (preflight/cilium_checks.py ``check_client_rate_limit``)."""
    known_bugs: bool = True
    """Preflight reports the known bugs of mappings/known-bugs.yaml for the cluster's versions
    (preflight/known_bugs.py ``check_known_bugs``)."""
    label_safe_names: bool = True
    """The translator maps a pool name that is no label value to one that is
    (translate/translator.py, migrate/model/names.py)."""


GUARDS = Guards()
"""The switches the code reads."""
NAMES = tuple(f.name for f in fields(Guards))


@contextmanager
def disabled(*names: str) -> Iterator[Guards]:
    """Turn the named guards off inside the block (tests only); always restored."""
    unknown = sorted(set(names) - set(NAMES))
    if unknown:
        raise ValueError(f"no such guard: {', '.join(unknown)}")
    saved = {name: getattr(GUARDS, name) for name in names}
    for name in names:
        setattr(GUARDS, name, False)
    try:
        yield GUARDS
    finally:
        for name, value in saved.items():
            setattr(GUARDS, name, value)
