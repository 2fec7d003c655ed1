"""API checks of ``migrate verify``: what the cluster's objects say about the migration.

``verify_api(kube, plan)`` reads the cluster once and checks, for the stage the migration is
at (the stages recorded by ``migrate apply``):

- I1: every Service of the plan has exactly the plan's IPs;
- once ``ipam-handover`` is applied (or Cilium pools exist): no pool with
  ``cilium.io/PoolConflict`` True, and no Service refused by LB-IPAM — its
  ``IPAMRequestSatisfied`` condition is not False and every IP lies in an enabled,
  non-conflicting pool whose ``cilium.io/IPsUsed`` count covers the plan's IPs in it. LB-IPAM
  writes no ``IPAMRequestSatisfied`` for IPs it imports, only from ``satisfyService``, so
  True cannot be required [C1.3][C1.4];
- before ``l2-cutover``: no Service MetalLB announces (ServiceL2Status [M5]) also has a
  Cilium lease holder, which would answer ARP too (I2) [C2];
- once ``l2-cutover`` (or ``l2-canary``, for its pool) is applied: no ServiceL2Status left for
  a migrated Service (a speaker still announcing it);
- once ``l2-cutover`` is applied: a lease ``cilium-l2announce-<ns>-<name>`` held by a node
  the policies select for every announced Service [C2], one holder per shared IP (Cilium
  elects per Service, cilium/cilium#48419), and no MetalLB L2Advertisement left; once
  ``l2-canary`` is, the same for the canary pool's Services.

It also records who should answer ARP for each IP (the lease holder after cutover, MetalLB's
ServiceL2Status node before [M5]) so that ``announcers.match_announcers`` can hold the wire
to it (I2).
Pure data out: ``ApiReport.to_json()``.
"""

from __future__ import annotations

from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_address, ip_network
from typing import TYPE_CHECKING, Any, Literal

from migrate.plan.views import ingress_ips

if TYPE_CHECKING:
    from migrate.kube import Kube
    from migrate.plan.model import Plan

Obj = dict[str, Any]
CheckStatus = Literal["ok", "failed"]
Phase = Literal["metallb", "canary", "cilium"]

POOL_CONFLICT = "cilium.io/PoolConflict"
IPS_USED = "cilium.io/IPsUsed"
SATISFIED = ("cilium.io/IPAMRequestSatisfied", "io.cilium/lb-ipam-request-satisfied")
"""The condition's name since 1.15 and before [C1.3]."""
LEASE_PREFIX = "cilium-l2announce-"
STATE_NAMESPACE = "kube-system"


def lease_name(service: str) -> str:
    """The Cilium lease of a ``namespace/name`` Service [C2]."""
    namespace, _, name = service.partition("/")
    return f"{LEASE_PREFIX}{namespace}-{name}"


@dataclass(frozen=True)
class Check:
    """One API check on one object."""

    name: str
    subject: str
    ok: bool
    detail: str

    @property
    def status(self) -> CheckStatus:
        """``ok`` or ``failed``."""
        return "ok" if self.ok else "failed"

    def to_json(self) -> dict[str, Any]:
        """``{"name", "object", "status", "detail"}``."""
        return {"name": self.name, "object": self.subject, "status": self.status,
                "detail": self.detail}


@dataclass(frozen=True)
class ApiReport:
    """The API checks, and who the API says answers ARP for each IP."""

    checks: tuple[Check, ...]
    phase: Phase
    """``cilium`` once l2-cutover is applied (Cilium's lease holders answer), ``canary`` once
    l2-canary is (they answer for the canary pool, MetalLB for the others), else ``metallb``."""
    announcers: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """IP → the nodes that should answer for it (empty: unknown)."""
    applied: tuple[str, ...] = ()
    """The stages the cluster's state records as applied."""

    @property
    def ok(self) -> bool:
        """True when every check passed."""
        return all(check.ok for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        """The checks that failed."""
        return [check for check in self.checks if not check.ok]

    def to_json(self) -> dict[str, Any]:
        """``{"api": [{"name", "object", "status", "detail"}, ...]}``."""
        return {"api": [check.to_json() for check in self.checks]}


# --------------------------------------------------------------------------- reading


def _condition(obj: Mapping[str, Any] | None, kind: str) -> Mapping[str, Any] | None:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if isinstance(c, dict) and c.get("type") == kind), None)


def _list_or_empty(kube: Kube, api_version: str, kind: str,
                   namespace: str | None = None) -> list[Obj]:
    """Every object of a kind; empty when the API does not serve the kind (CRD absent)."""
    from migrate.kube import KubeError

    try:
        return kube.list(api_version, kind, namespace=namespace)
    except KubeError as error:
        if error.status == 404:
            return []
        raise


def _key(obj: Mapping[str, Any]) -> str:
    metadata = obj.get("metadata") or {}
    return f"{metadata.get('namespace')}/{metadata.get('name')}"


def _name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name") or "")


def applied_stages(kube: Kube, state_namespace: str = STATE_NAMESPACE) -> tuple[str, ...]:
    """The stages migrate's state in the cluster records as applied, in order."""
    from migrate.apply.state import StateStore

    state = StateStore(kube, state_namespace).load()
    return tuple(record.name for record in state.stages if record.status == "applied")


def node_internal_ips(kube: Kube) -> dict[str, IPv4Address]:
    """Node name → its first IPv4 InternalIP (to learn the node's MAC over ARP)."""
    found: dict[str, IPv4Address] = {}
    for node in kube.iter_list("v1", "Node"):
        for address in (node.get("status") or {}).get("addresses") or []:
            if address.get("type") != "InternalIP":
                continue
            try:
                parsed = ip_address(str(address.get("address")))
            except ValueError:
                continue
            if isinstance(parsed, IPv4Address):
                found[_name(node)] = parsed
                break
    return found


def _pool_contains(pool: Mapping[str, Any], ip: str) -> bool:
    """Whether one of the pool's blocks (CIDR or start/stop) holds ``ip`` [C1]."""
    address = ip_address(ip)
    for block in (pool.get("spec") or {}).get("blocks") or []:
        try:
            if block.get("cidr"):
                if address in ip_network(str(block["cidr"]), strict=False):
                    return True
            elif block.get("start"):
                start = ip_address(str(block["start"]))
                stop = ip_address(str(block.get("stop") or block["start"]))
                if start.version == address.version and start <= address <= stop:  # type: ignore[operator]
                    return True
        except ValueError:
            continue
    return False


def _used(pool: Mapping[str, Any]) -> int | None:
    """The pool's ``cilium.io/IPsUsed`` count (the number is in the message) [C1]."""
    condition = _condition(pool, IPS_USED)
    try:
        return int(str((condition or {}).get("message")))
    except ValueError:
        return None


# --------------------------------------------------------------------------- checks


def _ip_checks(plan: Plan, services: Mapping[str, Obj]) -> list[Check]:
    """I1: every planned Service has exactly the plan's IPs."""
    checks = []
    for key, expected in sorted(plan.expected_ips.items()):
        service = services.get(key)
        if service is None:
            checks.append(Check("service-ips", f"Service {key}", False, "the Service is gone"))
            continue
        current = ingress_ips(service)
        if sorted(current) == sorted(expected):
            checks.append(Check("service-ips", f"Service {key}", True,
                                f"has its IPs {', '.join(expected)}"))
        else:
            checks.append(Check("service-ips", f"Service {key}", False,
                                f"has {', '.join(current) or 'no IP'} instead of"
                                f" {', '.join(expected)}"))
    return checks


def _pool_checks(pools: Sequence[Obj]) -> list[Check]:
    """No pool in conflict [C1]."""
    checks = []
    for pool in sorted(pools, key=_name):
        conflict = _condition(pool, POOL_CONFLICT)
        bad = conflict is not None and conflict.get("status") == "True"
        detail = (f"in conflict: {conflict.get('message') or conflict.get('reason')}"
                  if bad and conflict is not None else "no conflict")
        checks.append(Check("pool-conflict", f"CiliumLoadBalancerIPPool {_name(pool)}",
                            not bad, detail))
    return checks


def _lbipam_checks(plan: Plan, services: Mapping[str, Obj], pools: Sequence[Obj]) -> list[Check]:
    """No Service refused by LB-IPAM, and every planned IP imported by a healthy pool [C1.3]."""
    def healthy(pool: Obj) -> bool:
        conflict = _condition(pool, POOL_CONFLICT)
        return not (pool.get("spec") or {}).get("disabled") and not (
            conflict is not None and conflict.get("status") == "True")

    planned_in_pool: dict[str, set[str]] = {}
    pool_of_ip: dict[str, Obj | None] = {}
    for ips in plan.expected_ips.values():
        for ip in ips:
            # A conflicting pool's ranges are disabled; the older pool holds the IP [C1].
            holding = sorted((p for p in pools if _pool_contains(p, ip)),
                             key=lambda p: (not healthy(p), _name(p)))
            holder = holding[0] if holding else None
            pool_of_ip[ip] = holder
            if holder is not None:
                planned_in_pool.setdefault(_name(holder), set()).add(ip)
    checks = []
    for key, expected in sorted(plan.expected_ips.items()):
        problems = []
        service = services.get(key)
        for condition_type in SATISFIED:
            condition = _condition(service, condition_type)
            if condition is not None and condition.get("status") == "False":
                problems.append(f"{condition_type} is False ({condition.get('reason')}:"
                                f" {condition.get('message')})")
        held_by = []
        for ip in expected:
            pool = pool_of_ip.get(ip)
            if pool is None:
                problems.append(f"no Cilium pool holds {ip}")
                continue
            name = _name(pool)
            held_by.append(name)
            conflict = _condition(pool, POOL_CONFLICT)
            if (pool.get("spec") or {}).get("disabled"):
                problems.append(f"pool {name} holding {ip} is disabled")
            elif conflict is not None and conflict.get("status") == "True":
                problems.append(f"pool {name} holding {ip} is in conflict")
            else:
                used, wanted = _used(pool), len(planned_in_pool.get(name, ()))
                if used is None or used < wanted:
                    problems.append(f"pool {name} uses {used if used is not None else 'no'}"
                                    f" IPs, fewer than the {wanted} planned in it")
        detail = "; ".join(problems) if problems else (
            f"imported by pool {', '.join(dict.fromkeys(held_by))}")
        checks.append(Check("lbipam", f"Service {key}", not problems, detail))
    return checks


def _lease_checks(plan: Plan, leases: Mapping[str, Obj], only: Container[str] | None = None
                  ) -> tuple[list[Check], dict[str, str]]:
    """A lease held by an eligible node for every announced Service (of ``only`` when given)
    [C2]; also the holders."""
    announced: Mapping[str, Sequence[str] | None] = plan.context.get("announced") or {}
    checks = []
    holders: dict[str, str] = {}
    for key, eligible in sorted(announced.items()):
        if only is not None and key not in only:
            continue
        name = lease_name(key)
        lease = leases.get(name)
        subject = f"Service {key}"
        if lease is None:
            checks.append(Check("lease", subject, False,
                                f"no lease {plan.cilium_namespace}/{name}"))
            continue
        holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
        if not holder:
            checks.append(Check("lease", subject, False, f"lease {name} has no holder"))
            continue
        holders[key] = holder
        if eligible is not None and holder not in eligible:
            checks.append(Check("lease", subject, False,
                                f"held by {holder}, which no policy selects for it"
                                f" (eligible: {', '.join(eligible) or 'none'})"))
        else:
            checks.append(Check("lease", subject, True, f"held by {holder}"))
    return checks, holders


def _shared_ip_checks(plan: Plan, leases: Mapping[str, Obj]) -> list[Check]:
    """One lease holder per shared IP: Cilium elects one per Service, and two holders of
    Services sharing an IP both answer ARP for it (I2) (cilium/cilium#48419). Every sharer's
    lease counts, a follower's too (one should have none)."""
    checks = []
    by_ip: dict[str, dict[str, str]] = {}
    for key, ips in plan.expected_ips.items():
        lease = leases.get(lease_name(key)) or {}
        holder = str((lease.get("spec") or {}).get("holderIdentity") or "")
        for ip in ips:
            by_ip.setdefault(ip, {})[key] = holder
    for ip, services in sorted(by_ip.items()):
        if len(services) < 2:
            continue
        held = {key: node for key, node in sorted(services.items()) if node}
        if len(set(held.values())) > 1:
            who = ", ".join(f"{node} ({key})" for key, node in held.items())
            checks.append(Check("one-holder-per-ip", f"IP {ip}", False,
                                f"shared by Services whose leases are held by {who}: each"
                                " holder answers ARP for it (cilium/cilium#48419)"))
        elif held:
            checks.append(Check("one-holder-per-ip", f"IP {ip}", True,
                                f"announced by {next(iter(held.values()))} only"))
    return checks


def _advertisement_checks(advertisements: Sequence[Obj], stage: str = "l2-cutover"
                          ) -> list[Check]:
    """After cutover MetalLB must not announce anything any more, after the canary nothing of
    its pool (``advertisements``: those that must be gone) (I2) [M3]."""
    if not advertisements:
        return [Check("metallb-advertisements", "L2Advertisement", True, "none left")]
    return [Check("metallb-advertisements", f"L2Advertisement {_key(ad)}", False,
                  f"still present after {stage}: MetalLB's speakers answer ARP too")
            for ad in sorted(advertisements, key=_key)]


def _released_checks(migrated: set[str], speakers: Mapping[str, str]) -> list[Check]:
    """A Service handed to Cilium has no ServiceL2Status left: MetalLB 0.14.6+ deletes it when
    its speaker stops announcing, so one left means a speaker still answers for it (I2)."""
    return [
        Check("metallb-released", f"Service {key}", key not in speakers,
              f"MetalLB's speaker on {speakers[key]} still announces it (ServiceL2Status)"
              if key in speakers else "no MetalLB speaker announces it")
        for key in sorted(migrated)
    ]


def _one_announcer_checks(plan: Plan, speakers: Mapping[str, str],
                          leases: Mapping[str, Obj]) -> list[Check]:
    """Before cutover MetalLB announces; a Cilium lease holder for the same Service would be a
    second announcer (I2) [C2: Cilium announces any LB IP in status, MetalLB's included]."""
    checks = []
    for key in sorted(plan.expected_ips):
        speaker = speakers.get(key)
        if speaker is None:
            continue
        lease = leases.get(lease_name(key))
        holder = str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")
        if holder:
            checks.append(Check("one-announcer", f"Service {key}", False,
                                f"announced by MetalLB ({speaker}) and by Cilium ({holder})"
                                " at once"))
        else:
            checks.append(Check("one-announcer", f"Service {key}", True,
                                f"announced by MetalLB ({speaker}) only"))
    return checks


def _announcers(plan: Plan, by_service: Mapping[str, str]) -> dict[str, tuple[str, ...]]:
    """IP → the nodes that should answer for it, from per-Service announcers."""
    out: dict[str, dict[str, None]] = {}
    for key, ips in plan.expected_ips.items():
        node = by_service.get(key)
        for ip in ips:
            slot = out.setdefault(ip, {})
            if node:
                slot[node] = None
    return {ip: tuple(sorted(nodes)) for ip, nodes in out.items()}


def metallb_announcers(kube: Kube, namespace: str) -> dict[str, str]:
    """``namespace/name`` → the node whose MetalLB speaker announces it (ServiceL2Status) [M5]."""
    found = {}
    for status_obj in _list_or_empty(kube, "metallb.io/v1beta1", "ServiceL2Status", namespace):
        status = status_obj.get("status") or {}
        labels = (status_obj.get("metadata") or {}).get("labels") or {}
        service = status.get("serviceName") or labels.get("metallb.io/service-name")
        service_ns = status.get("serviceNamespace") or labels.get("metallb.io/service-namespace")
        node = status.get("node") or labels.get("metallb.io/node")
        if service and service_ns and node:
            found[f"{service_ns}/{service}"] = str(node)
    return found


def verify_api(kube: Kube, plan: Plan, *, state_namespace: str = STATE_NAMESPACE) -> ApiReport:
    """Check the cluster against the plan for the stage the migration is at (module doc)."""
    applied = applied_stages(kube, state_namespace)
    services = {_key(s): s for s in kube.iter_list("v1", "Service")}
    pool_version = str(plan.context.get("poolApiVersion") or "cilium.io/v2")
    pools = _list_or_empty(kube, pool_version, "CiliumLoadBalancerIPPool")
    checks = _ip_checks(plan, services)
    if "ipam-handover" in applied or pools:
        checks += _pool_checks(pools)
        checks += _lbipam_checks(plan, services, pools)
    canary = plan.context.get("canary") or {}
    phase: Phase = ("cilium" if "l2-cutover" in applied else
                    "canary" if "l2-canary" in applied and canary else "metallb")
    leases = {_name(lease): lease for lease in _list_or_empty(
        kube, "coordination.k8s.io/v1", "Lease", plan.cilium_namespace)}
    holders: dict[str, str] = {}
    if phase != "metallb":
        # After cutover every announced Service has a lease; after the canary its pool's do.
        only = set(canary.get("services") or ()) if phase == "canary" else None
        lease_checks, holders = _lease_checks(plan, leases, only)
        checks += lease_checks
        checks += _shared_ip_checks(plan, leases)
        advertisements = _list_or_empty(kube, "metallb.io/v1beta1", "L2Advertisement",
                                        plan.metallb_namespace)
        if phase == "canary":
            gone = set(canary.get("advertisements") or ())
            checks += _advertisement_checks(
                [ad for ad in advertisements if _name(ad) in gone], "l2-canary")
        else:
            checks += _advertisement_checks(advertisements)
    speakers = metallb_announcers(kube, plan.metallb_namespace)
    if phase != "metallb":
        migrated = (set(plan.expected_ips) if phase == "cilium"
                    else set(canary.get("services") or ()))
        checks += _released_checks(migrated, speakers)
    if phase != "cilium":
        # MetalLB announces the rest, and never a Service Cilium announces too.
        checks += _one_announcer_checks(plan, speakers, leases)
    else:
        speakers = {}
    announcers = _announcers(plan, {**speakers, **holders})
    return ApiReport(tuple(checks), phase, announcers, applied)
