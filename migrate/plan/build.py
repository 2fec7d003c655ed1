"""Build the staged plan of design §2 from a snapshot and its translation (pure)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from migrate.errors import InputError
from migrate.guards import GUARDS
from migrate.model.addresses import AddressRange, cilium_allocatable
from migrate.model.findings import Finding, Severity, sort_findings
from migrate.model.kube import METALLB_PREFIXES, Service
from migrate.model.metallb import L2Advertisement
from migrate.plan.bgp_stage import BGPStages, bgp_left_to_metallb, handover_blocker
from migrate.plan.model import Action, Obj, Plan, Stage, Target, canonical_digest
from migrate.plan.views import IGNORED_ANNOTATIONS, creatable, view
from migrate.preflight.inventory import (
    Version,
    container_args,
    containers,
    find_cilium,
    find_metallb,
    go_duration_seconds,
    metallb_serves,
    version_text,
)
from migrate.preflight.known_bugs import known_bugs
from migrate.sources.snapshot import ClusterSnapshot
from migrate.sources.validate import reads
from migrate.translate.translator import (
    SOURCE_ANNOTATION,
    ServicePin,
    Translation,
    selection_labels,
)

# The MetalLB annotation that pins MetalLB itself to the current IPs, so that a rollback that
# wakes its controller gives back the same addresses [M6]; its prefix follows the controller's
# version (metallb_pin_prefixes).
METALLB_PIN = "loadBalancerIPs"
NEW_PREFIX, LEGACY_PREFIX = METALLB_PREFIXES
# metallb controller/service.go: `metallb.io/` from v0.14.9 (commit fc863ccd3, new key first,
# legacy fallback), only `metallb.universe.tf/` before; loadBalancerIPs exists from v0.12.0.
NEW_PREFIX_FROM: Version = (0, 14, 9)
PIN_ANNOTATION_FROM: Version = (0, 12, 0)
# known-bugs.yaml: a restarted controller before 0.14.0 can give a pending Service an IP that
# another Service holds (metallb/metallb#2443).
RESTART_BUG = "metallb-2443"
SPEAKER_PAUSE_LABEL = "lbmigrate.io/paused"
METALLB_RELOAD_SECONDS = 5.0
"""How long l2-cutover gives MetalLB's speakers to drop a Service where MetalLB writes no
ServiceL2Status (before 0.14.6): each speaker reloads its configuration on its own a moment
after the change (real-clusters.md §2); this bounds that moment."""
MEMBERLIST_SETTLE_SECONDS = 10.0
"""After every un-parked speaker is ready, the time they take to know of each other before a
legacy configuration returns (memberlist joins the other speakers' pods at start,
``internal/speakerlist/speakerlist.go``; its LAN gossip converges within seconds)."""
CILIUM_RELEASE_SETTLE_SECONDS = 1.0
"""After Cilium's agents release their leases, the time their datapath entries take to go
(the L2 announcer releases the lease first, pkg/l2announcer/l2announcer.go)."""
LBIPAM_STARTUP_FIX = (1, 18, 2)
"""LB-IPAM's start-up stores every Service before it changes any, satisfied ones first, from
this release (cilium/cilium#41147, #41122; issue #43131)."""
LBIPAM_CLASSES = ("io.cilium/l2-announcer", "io.cilium/bgp-control-plane")


def _labels(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def find_workload(snapshot: ClusterSnapshot, kind: str, namespace: str, names: Sequence[str],
                  label_sets: Sequence[dict[str, str]]) -> Obj | None:
    """A Deployment/DaemonSet by name or by labels, in one namespace."""
    candidates = [
        d.body for d in snapshot.others
        if d.body.get("kind") == kind and d.body.get("apiVersion") == "apps/v1"
        and (d.body.get("metadata") or {}).get("namespace") == namespace
    ]
    for body in candidates:
        if body["metadata"].get("name") in names:
            return body
    for body in candidates:
        labels = _labels(body)
        if any(all(labels.get(k) == v for k, v in wanted.items()) for wanted in label_sets):
            return body
    return None


def metallb_controller(snapshot: ClusterSnapshot) -> Obj | None:
    """MetalLB's controller Deployment [M9]."""
    return find_workload(
        snapshot, "Deployment", snapshot.metallb_namespace, ["controller"],
        [{"app.kubernetes.io/name": "metallb", "app.kubernetes.io/component": "controller"},
         {"app": "metallb", "component": "controller"}],
    )


def metallb_speaker(snapshot: ClusterSnapshot) -> Obj | None:
    """MetalLB's speaker DaemonSet [M9]."""
    return find_workload(
        snapshot, "DaemonSet", snapshot.metallb_namespace, ["speaker"],
        [{"app.kubernetes.io/name": "metallb", "app.kubernetes.io/component": "speaker"},
         {"app": "metallb", "component": "speaker"}],
    )


def cilium_operator(snapshot: ClusterSnapshot, namespace: str) -> Obj | None:
    """Cilium's operator Deployment [C5]."""
    return find_workload(snapshot, "Deployment", namespace, ["cilium-operator"],
                         [{"io.cilium/app": "operator"}])


def metallb_webhook(snapshot: ClusterSnapshot) -> Obj | None:
    """MetalLB's ValidatingWebhookConfiguration, if the snapshot has it [M9]."""
    for body in snapshot.find("admissionregistration.k8s.io/", "ValidatingWebhookConfiguration"):
        webhooks = body.get("webhooks") or []
        if body["metadata"]["name"] == "metallb-webhook-configuration" or any(
            ((w.get("clientConfig") or {}).get("service") or {}).get("namespace")
            == snapshot.metallb_namespace for w in webhooks
        ):
            return body
    return None


def _overlap(left: list[AddressRange], right: list[AddressRange]) -> str | None:
    """The first pair of overlapping ranges, described, or None."""
    for a in left:
        for b in right:
            if a.overlaps(b):
                return f"{a} and {b}"
    return None


def metallb_version(snapshot: ClusterSnapshot) -> Version | None:
    """The version of MetalLB's controller (its image tag; the speaker's when it has none)."""
    versions = find_metallb(snapshot).component_versions
    found = versions.get("controller") or versions.get("speaker")
    return found[0] if found else None


def metallb_read_prefixes(version: Version | None) -> tuple[str, ...]:
    """The Service annotation prefixes MetalLB's controller reads, the winning one first (both
    when the version is unknown: either may be the one it reads)."""
    if version is not None and version < NEW_PREFIX_FROM:
        return (LEGACY_PREFIX,)
    return (NEW_PREFIX, LEGACY_PREFIX)


def metallb_pin_prefixes(version: Version | None) -> tuple[str, ...]:
    """Where the pin is written: the prefix the installed controller reads, both when its
    version is unknown."""
    if not GUARDS.pin_prefix:
        return (NEW_PREFIX,)
    if version is None:
        return (NEW_PREFIX, LEGACY_PREFIX)
    return (NEW_PREFIX,) if version >= NEW_PREFIX_FROM else (LEGACY_PREFIX,)


def _read(annotations: dict[str, str], name: str, prefixes: Sequence[str]) -> str | None:
    return next((annotations[p + name] for p in prefixes if p + name in annotations), None)


def _same_ips(text: str, ips: Sequence[str]) -> bool:
    return sorted(part.strip() for part in text.split(",") if part.strip()) == sorted(ips)


def metallb_pin(service: Service, pin: ServicePin, snapshot: ClusterSnapshot,
                version: Version | None) -> dict[str, str]:
    """The ``loadBalancerIPs`` annotations that pin MetalLB itself to the current IPs, under the
    prefix its controller reads (both when its version is unknown), or none where that would be
    unsafe or useless [M6]: the Service already requests IPs that MetalLB reads (the annotation
    or ``spec.loadBalancerIP``; both at once is an error), or it asks for another pool than the
    one holding its IPs (a requested IP that disagrees with the address-pool annotation makes
    MetalLB's allocation fail, and the controller still runs in stage 1)."""
    if not pin.ips or service.load_balancer_ip:
        return {}
    annotations = service.annotations
    value = ",".join(pin.ips)
    requested = _read(annotations, METALLB_PIN, metallb_read_prefixes(version))
    if requested is not None:
        if version is not None or not _same_ips(requested, pin.ips):
            return {}
        # Unknown version: repeat the Service's own request under the other prefix, which may
        # be the only one the controller reads.
        return {p + METALLB_PIN: requested for p in metallb_pin_prefixes(None)
                if p + METALLB_PIN not in annotations}
    asked = _read(annotations, "address-pool", metallb_read_prefixes(version))
    if asked:
        asked_pool = snapshot.pool(asked)
        if asked_pool is None or asked_pool.name != pin.pool:
            return {}
    return {p + METALLB_PIN: value for p in metallb_pin_prefixes(version)}


def metallb_writes_l2_status(snapshot: ClusterSnapshot) -> bool | None:
    """Whether MetalLB's speakers write a ServiceL2Status per announced Service: always from
    0.14.6, with ``--enable-l2-service-status`` in 0.14.4 and 0.14.5, never before (metallb
    release notes); None when the version is unknown and the snapshot holds none."""
    install = find_metallb(snapshot)
    version = install.version
    if version is None:
        return True if snapshot.find("metallb.io/", "ServiceL2Status") else None
    if version >= (0, 14, 6):
        return True
    if version >= (0, 14, 4) and install.speaker is not None:
        return any("--enable-l2-service-status" in arg or "--enable-l2-service-status=true"
                   in arg for c in containers(install.speaker) for arg in container_args(c))
    return False


def _scale(obj: Obj, replicas: int, description: str) -> Action:
    return Action(
        "scale", Target.of(obj), description, before=view(obj),
        after={"spec": {"replicas": replicas}}, replicas=replicas,
    )


def _wait(target: Target, description: str, **spec: Any) -> Action:
    return Action("wait", target, description, wait=spec)


class _Builder:
    def __init__(self, snapshot: ClusterSnapshot, translation: Translation,
                 cilium_namespace: str, extra_findings: Sequence[Finding]) -> None:
        self.snapshot = snapshot
        self.translation = translation
        self.cilium_namespace = cilium_namespace
        self.findings: list[Finding] = [*translation.findings, *extra_findings]
        self.services = {s.key: s for s in snapshot.services}
        self.context: Obj = {}
        self.pool_advertised_bgp = self._bgp_pools()
        self.canary_ads: set[str] = set()
        self.canary_policies: set[str] = set()
        self.announced = announced_services(snapshot, translation)
        self.metallb_version = metallb_version(snapshot)
        self.bgp: BGPStages | None = None
        """The BGP stages, when MetalLB's BGP is handed over (migrate/plan/bgp_stage.py)."""

    def plan_bgp(self, batch_size: int) -> None:
        """Hand BGP over when the translation allows it; else say what stays with MetalLB."""
        if self.translation.bgp is None:
            return
        blocker = handover_blocker(self)
        if blocker is not None:
            self.findings += bgp_left_to_metallb(self.snapshot, self.pool_advertised_bgp,
                                                 blocker)
            return
        self.bgp = BGPStages(self, batch_size=batch_size)
        # The translation's advice to move the nodes by hand is what bgp-handover does.
        self.findings = [f for f in self.findings if f.code != "bgp-handover-label"]
        self.findings += self.bgp.findings()

    def _bgp_pools(self) -> set[str]:
        names: set[str] = set()
        for ad in self.snapshot.bgp_advertisements:
            if ad.selects_all_pools:
                names.update(p.name for p in self.snapshot.pools)
            names.update(n for n in ad.pool_names if self.snapshot.pool(n))
        return names

    def pinned_metadata(self, pin: ServicePin) -> tuple[dict[str, str], dict[str, str]]:
        """A Service's annotations and labels once stage 1 has pinned it (what stage 1 writes
        and what stage 5 starts from)."""
        service = self.services[pin.key]
        metadata = service.body.get("metadata") or {}
        annotations = {**(metadata.get("annotations") or {}), **pin.annotations,
                       **metallb_pin(service, pin, self.snapshot, self.metallb_version)}
        return annotations, {**(metadata.get("labels") or {}), **pin.labels}

    def error(self, code: str, obj: str, message: str) -> None:
        self.findings.append(Finding(Severity.ERROR, code, obj, None, message))

    # -- stages ----------------------------------------------------------------------------
    def preflight(self) -> Stage:
        checks = sorted({f"{f.severity.value}: {f.obj}: {f.message}" for f in self.findings
                         if f.code.startswith("preflight:")})
        return Stage(
            0, "preflight", "Read-only checks",
            "Most failed migrations fail before the first object is touched: Cilium must be"
            " ready to take over (kube-proxy replacement, L2 announcements, LB-IPAM).",
            checks_before=checks or ["no preflight checks were run on this input"],
        )

    def pin(self) -> Stage:
        actions: list[Action] = []
        for pin in self.translation.pins:
            service = self.services[pin.key]
            body = service.body
            metadata = body.get("metadata") or {}
            annotations = dict(metadata.get("annotations") or {})
            labels = dict(metadata.get("labels") or {})
            new_annotations, new_labels = self.pinned_metadata(pin)
            if new_annotations == annotations and new_labels == labels:
                continue
            patch: Obj = {"metadata": {}}
            changed_annotations = {k: v for k, v in new_annotations.items()
                                   if annotations.get(k) != v}
            changed_labels = {k: v for k, v in new_labels.items() if labels.get(k) != v}
            if changed_annotations:
                patch["metadata"]["annotations"] = changed_annotations
            if changed_labels:
                patch["metadata"]["labels"] = changed_labels
            before = view(body)
            assert before is not None
            after = {**before, "metadata": {
                "labels": new_labels,
                "annotations": {k: v for k, v in new_annotations.items()
                                if k not in IGNORED_ANNOTATIONS},
            }}
            actions.append(Action(
                "patch", Target("v1", "Service", service.name, service.namespace),
                f"pin {', '.join(pin.ips) or 'no IP'}"
                + (f" (pool {pin.pool})" if pin.pool else ""),
                before=before, after=after, patch=patch,
            ))
        self._pin_findings()
        return Stage(
            1, "pin", "Pin every Service to its current IPs",
            "Cilium's requested-IP and sharing-key annotations and the pool label make LB-IPAM"
            " keep exactly these IPs; MetalLB ignores them. MetalLB is pinned too"
            f" ({self._pin_keys_text()}), so a rollback that wakes it gives back the same"
            " addresses.",
            actions=actions,
            checks_before=["every LoadBalancer Service has the IPs the plan saw"],
            checks_after=["every Service carries its pins", "no Service IP changed"],
        )

    def _pin_keys_text(self) -> str:
        keys = " and ".join(p + METALLB_PIN for p in metallb_pin_prefixes(self.metallb_version))
        if self.metallb_version is None:
            return f"{keys}: MetalLB's version is unknown, and each reads one of them"
        return f"{keys}, which MetalLB {version_text(self.metallb_version)} reads"

    def _pin_findings(self) -> None:
        version = self.metallb_version
        if version is not None and version < PIN_ANNOTATION_FROM:
            self.findings.append(Finding(
                Severity.WARNING, "metallb-pin-unsupported", self._controller_obj(), None,
                f"MetalLB {version_text(version)} reads no loadBalancerIPs annotation (it"
                " exists from 0.12.0): the pin stage cannot pin MetalLB itself, so a rollback"
                " that starts its controller again may give Services other IPs. Upgrade"
                " MetalLB to 0.12 or newer before migrating.",
            ))

    def _controller_obj(self) -> str:
        controller = metallb_controller(self.snapshot)
        if controller is None:
            return f"Deployment {self.snapshot.metallb_namespace}/controller"
        return Target.of(controller).key

    def _rollback_restart_finding(self) -> None:
        """Before 0.14.0 a restarted controller can give a pending Service an IP another
        Service holds; rolling back freeze-metallb restarts it (known-bugs.yaml)."""
        bug = next(b for b in known_bugs() if b.id == RESTART_BUG)
        version = self.metallb_version
        if not GUARDS.metallb_restart_finding or (
                version is not None and not bug.affects(version)):
            return
        lb_class = find_metallb(self.snapshot).lb_class
        pending = sorted(s.key for s in self.snapshot.services
                         if metallb_serves(s, lb_class) and not s.ingress_ips)
        shown = ", ".join(pending[:8]) + (f" and {len(pending) - 8} more"
                                          if len(pending) > 8 else "")
        which = (f"MetalLB {version_text(version)}" if version
                 else "MetalLB (its version is unknown, so this may not apply)")
        now = (f"Services pending now: {shown}." if pending else
               "No Service is pending now, but one created or left without an IP before the"
               " rollback would be.")
        self.findings.append(Finding(
            Severity.WARNING if pending and version else Severity.INFO,
            "freeze-metallb-rollback", self._controller_obj(), None,
            f"Rolling back freeze-metallb starts the controller of {which} again; before 0.14.0"
            " a restarted controller handles Services in the order its informer gives them,"
            " so a Service without an IP can be given the IP another Service holds before that"
            " one is seen, and the pinned holder is then left without an IP"
            f" ({bug.ref}, {bug.fix_text()}). {now} Before such a rollback, delete the"
            " LoadBalancer Services that have no IP or make them ClusterIP (kubectl get"
            " services -A | grep '<pending>' lists them); better, upgrade MetalLB to"
            " 0.14.0 or newer before migrating.",
        ))

    def freeze(self) -> Stage:
        controller = metallb_controller(self.snapshot)
        actions: list[Action] = []
        if controller is None:
            self.error("metallb-controller-missing", f"Deployment {self.snapshot.metallb_namespace}"
                       "/controller", "MetalLB's controller Deployment was not found in the"
                       " input, so the plan cannot freeze it; read the live cluster, or add"
                       " the Deployment to the snapshot.")
        else:
            replicas = int((controller.get("spec") or {}).get("replicas", 1))
            self.context["metallbController"] = {**Target.of(controller).to_dict(),
                                                 "replicas": replicas}
            if replicas != 0:
                actions.append(_scale(controller, 0, f"stop MetalLB's controller (was"
                                      f" {replicas} replica(s))"))
            actions.append(_wait(Target.of(controller), "MetalLB's controller has no pods",
                                 **{"for": "replicas", "replicas": 0, "timeout": 120}))
            self._rollback_restart_finding()
        return Stage(
            2, "freeze-metallb", "Stop MetalLB's controller",
            "With its controller stopped MetalLB cannot fight LB-IPAM over the Service status"
            " nor renumber Services when pools change; its speakers keep answering ARP from the"
            " status. While it is stopped its webhooks refuse writes to metallb.io objects.",
            actions=actions,
            checks_before=["the pins of stage 1 are in place"],
            checks_after=["MetalLB's controller runs no pod", "no Service IP changed"],
        )

    def handover(self) -> Stage:
        operator = cilium_operator(self.snapshot, self.cilium_namespace)
        actions: list[Action] = []
        pools = self.translation.pools
        if operator is None:
            self.error("cilium-operator-missing", f"Deployment {self.cilium_namespace}"
                       "/cilium-operator", "Cilium's operator Deployment was not found, so the"
                       " pools cannot be created atomically; read the live cluster, or add it to"
                       " the snapshot.")
            return Stage(3, "ipam-handover", "Create the Cilium pools", "", actions=actions)
        replicas = int((operator.get("spec") or {}).get("replicas", 1))
        self.context["ciliumOperator"] = {**Target.of(operator).to_dict(), "replicas": replicas}
        target = Target.of(operator)
        existing = {
            (b.get("metadata") or {}).get("name"): b
            for b in self.snapshot.find("cilium.io/", "CiliumLoadBalancerIPPool")
        }
        ours = {pool["metadata"]["name"] for pool in pools}
        for name, body in sorted(existing.items()):
            if name in ours:
                continue
            clash = _overlap(cilium_allocatable(body.get("spec") or {}),
                             [r for pool in pools for r in cilium_allocatable(pool["spec"])])
            if clash:
                # The newer pool loses a conflict [C1]: ours would be disabled, and the IPs
                # of its Services imported (or stripped) by the older pool's selector.
                self.error("cilium-pool-overlap", f"CiliumLoadBalancerIPPool {name}",
                           f"an existing Cilium pool overlaps the translated pools ({clash});"
                           " LB-IPAM would mark the new pool conflicting. Remove or shrink it"
                           " first.")
        creates = []
        for pool in pools:
            name = pool["metadata"]["name"]
            if name in existing and view(existing[name]) == view(pool):
                continue
            if name in existing:
                self.error("cilium-pool-exists", f"CiliumLoadBalancerIPPool {name}",
                           "a Cilium pool of this name already exists with another content;"
                           " rename or delete it first.")
            creates.append(Action("create", Target.of(pool), "create the Cilium pool",
                                  before=None, after=view(pool), body=pool))
        if creates:
            self.startup_race(pools)
            actions.append(_scale(operator, 0, "stop Cilium's operator so that LB-IPAM sees"
                                  " every pool at once"))
            actions.append(_wait(target, "Cilium's operator has no pods",
                                 **{"for": "replicas", "replicas": 0, "timeout": 120}))
            actions.extend(creates)
            actions.append(Action(
                "scale", target, f"start Cilium's operator again ({replicas} replica(s))",
                before={"spec": {"replicas": 0}}, after={"spec": {"replicas": replicas}},
                replicas=replicas,
            ))
        actions.append(_wait(target, "LB-IPAM has taken over every pinned IP (pool IPsUsed),"
                             " no Service IP changed", **{"for": "ipam", "timeout": 300}))
        return Stage(
            3, "ipam-handover", "Create every Cilium pool at once",
            "LB-IPAM strips any IP not covered by a matching pool at the moment it looks, and it"
            " looks at every Service as soon as the first pool exists; stopping its operator,"
            " creating all pools, and starting it again is the only atomic way (cilium/cilium"
            " operator/pkg/lbipam/lbipam.go).",
            actions=actions,
            checks_before=["MetalLB's controller is stopped", "every Service carries its pins"],
            checks_after=["every pool: cilium.io/IPsUsed reaches its pinned IPs; no Service has"
                          " IPAMRequestSatisfied False",
                          "no pool has cilium.io/PoolConflict True", "no Service IP changed"],
        )

    def startup_race(self, pools: Sequence[Obj]) -> None:
        """Before Cilium 1.18.2, no Service LB-IPAM would own without a pin may match a pool.

        The handover starts Cilium's operator with every pool in place. Before 1.18.2, LB-IPAM's
        start-up handled each Service as the informer delivered it (namespace/name order),
        before all were known, so a pending or unpinned Service that a pool matches could be
        given, by AllocAny, an IP another Service still holds and that LB-IPAM had not seen yet
        (cilium/cilium#43131, fixed by #41147 / #41122). The pinned Service then loses its IP.

        Narrowing the pools to pinned Services until LB-IPAM holds every pinned IP and widening
        them afterwards does not help on those releases: changing a pool's selector re-runs
        the allocation of every Service in it, unsatisfied ones first (cilium/cilium#40358,
        fixed by the same #41122). So the plan blocks, naming each Service that could steal.
        """
        from migrate.model.selectors import matches
        if not GUARDS.startup_race:
            return
        # LB-IPAM runs in the operator: its image tells the release, else the agent's.
        install = find_cilium(self.snapshot)
        version = install.operator_version or install.version
        if version is not None and version >= LBIPAM_STARTUP_FIX:
            return
        minor = tuple(int(x) for x in self.translation.cilium.minor.split(".")[:2])
        if version is None and minor > LBIPAM_STARTUP_FIX[:2]:
            return
        uncertain = version is None and minor == LBIPAM_STARTUP_FIX[:2]
        pinned = {pin.key for pin in self.translation.pins if pin.ips}
        risky = []
        for service in self.snapshot.services:
            if not service.is_load_balancer or service.key in pinned:
                continue
            if service.load_balancer_class not in (None, *LBIPAM_CLASSES):
                continue
            labels = selection_labels(service, {})
            if any(matches(pool["spec"].get("serviceSelector"), labels) for pool in pools):
                state = ("pending (no IP)" if not service.ingress_ips
                         else f"IP {', '.join(service.ingress_ips)} not pinned")
                risky.append(f"{service.key} ({state})")
        if not risky:
            return
        where = (f"Cilium {version_text(version)}" if version is not None
                 else f"Cilium {self.translation.cilium.minor} (patch release unknown)")
        message = (
            f"on {where}, LB-IPAM's start-up can give a pinned IP to a Service without a pin"
            " before it has seen the Service holding it (cilium/cilium#43131, fixed in 1.18.2),"
            " and the handover starts LB-IPAM with every pool in place. These Services match a"
            f" translated pool and carry no pin: {', '.join(risky)}. Give each an IP MetalLB"
            " serves (or delete it until the handover is done) and plan again, or upgrade"
            " Cilium to 1.18.2 or later first."
        )
        obj = "Service " + ", ".join(r.split(" ", 1)[0] for r in risky)
        if uncertain:
            self.findings.append(Finding(Severity.WARNING, "lbipam-startup-race", obj, None,
                                         message + " The operator's image does not tell its"
                                         " patch release: on 1.18.2 or later this is safe."))
        else:
            self.error("lbipam-startup-race", obj, message)

    def _advertisement_deletes(self, ads: Sequence[L2Advertisement]) -> list[Action]:
        actions = []
        for ad in ads:
            body = next(d.body for d in self.snapshot.documents
                        if d.body.get("kind") == "L2Advertisement"
                        and d.body["metadata"]["name"] == ad.name)
            obj = creatable(body)
            obj["metadata"]["namespace"] = ad.ref.namespace
            actions.append(Action(
                "delete", Target("metallb.io/v1beta1", "L2Advertisement", ad.name,
                                 ad.ref.namespace),
                "MetalLB's speakers stop answering ARP for its pools", before=view(obj),
                body=obj,
            ))
        return actions

    def _metallb_release(self, services: Sequence[str], parked: Obj | None) -> list[Action]:
        """Waits between MetalLB's stop and Cilium's start: break before make holds only once
        every speaker has really stopped, not when the API accepted the deletion."""
        actions = []
        if parked is not None:
            actions.append(_wait(Target.of(parked), "MetalLB's speakers have no pod left",
                                 **{"for": "pods-gone", "timeout": 120}))
        writes = metallb_writes_l2_status(self.snapshot)
        settle = 0.0 if writes or parked is not None else METALLB_RELOAD_SECONDS
        self.context["metallbReleaseSettle"] = settle
        how = "their ServiceL2Status objects are gone"
        if settle:
            how += (f", and {settle:g}s passed (MetalLB before 0.14.6 leaves no trace in the"
                    " API)")
        if services:
            actions.append(_wait(
                Target("metallb.io/v1beta1", "ServiceL2Status", "*",
                       self.snapshot.metallb_namespace),
                f"MetalLB's speakers no longer announce the {len(services)} Service(s) handed"
                f" over ({how})",
                **{"for": "metallb-released", "services": list(services), "settle": settle,
                   "timeout": 120},
            ))
        return actions

    def _legacy_configmap_deletes(self) -> list[Action]:
        """The legacy ConfigMap goes while the speakers are parked, so that on the way back they
        all run, and know of each other, before any of them has a configuration again.

        A speaker that starts alone is the whole memberlist: it announces every Service until
        it hears of the others (``internal/speakerlist/speakerlist.go``), so speakers un-parked
        one by one with their configuration in place answer the same IP from several nodes.
        A speaker with no ConfigMap announces nothing (before v0.13 a missing configuration is
        refused, ``speaker/main.go`` SetConfig). Peers in it mean BGP: that case is refused
        (see :meth:`cutover`), so no password reaches a plan or a backup.
        """
        actions = []
        for body in self.snapshot.find("v1", "ConfigMap"):
            metadata = body.get("metadata") or {}
            origin = f"(ConfigMap {metadata.get('namespace')}/{metadata.get('name')})"
            if not any(origin in source for source in self.snapshot.legacy_sources) \
                    or self.snapshot.bgp_peers:
                continue
            obj = creatable(body)
            actions.append(Action(
                "delete", Target.of(obj), "MetalLB's legacy configuration goes while its"
                " speakers are stopped; a rollback brings it back once every speaker runs"
                " again and they know of each other", before=view(obj), body=obj))
        if actions:
            self.context["memberlistSettle"] = MEMBERLIST_SETTLE_SECONDS
        return actions

    def cutover_silence(self) -> tuple[float, float]:
        """How long each IP is expected to go unanswered at the hand-over, in seconds."""
        retry = go_duration_seconds(find_cilium(self.snapshot).setting(
            "l2-announcements-retry-period")) or 2.0
        settle = float(self.context.get("metallbReleaseSettle") or 0.0)
        # From the last speaker going quiet: the wait sees it at its next poll (0.5 s), the
        # policies are created, each agent sees them and tries for the lease at once; one
        # that loses the race to a slow holder tries again a retry period later.
        low, high = 0.5, settle + 0.5 + retry + 1.0
        self.context["cutoverSilence"] = {"min": low, "max": high, "retryPeriod": retry}
        self.context["ciliumReleaseSettle"] = CILIUM_RELEASE_SETTLE_SECONDS
        return low, high

    def _policy_creates(self, policies: Sequence[Obj]) -> list[Action]:
        existing = {
            (b.get("metadata") or {}).get("name"): b
            for b in self.snapshot.find("cilium.io/", "CiliumL2AnnouncementPolicy")
        }
        actions = []
        for policy in policies:
            name = policy["metadata"]["name"]
            if name in existing and view(existing[name]) == view(policy):
                continue
            actions.append(Action("create", Target.of(policy),
                                  "Cilium announces the Services it selects",
                                  after=view(policy), body=policy))
        return actions

    def canary_scope(self, pool: str) -> tuple[list[L2Advertisement], list[Obj], list[str]]:
        """The L2Advertisements, policies and Services of a canary pool (``--canary``).

        The canary hands one pool's ARP answers to Cilium before the others, with the same
        break-before-make as l2-cutover. It deletes whole advertisements and never edits one
        (an edit needs MetalLB's webhook, which is down while its controller is frozen), so
        every advertisement that announces the pool must announce that pool only.
        """
        def refuse(message: str, obj: str | None = None) -> InputError:
            return InputError(f"pool {pool} cannot be a canary: {message}", obj=obj,
                              field="--canary")

        names = sorted(p.name for p in self.snapshot.pools)
        if pool not in names:
            raise InputError(f"no MetalLB IPAddressPool is named {pool!r} (pools:"
                             f" {', '.join(names)})", field="--canary")
        if any(ad.implied for ad in self.snapshot.l2_advertisements):
            raise refuse("a legacy configuration (ConfigMap or AddressPool protocol) has no"
                         " L2Advertisement to delete for one pool; its speakers stop for every"
                         " pool at once: migrate without --canary")
        ads = [ad for ad in self.snapshot.l2_advertisements
               if pool in self.translation.l2_pools.get(str(ad.ref), ())]
        if not ads:
            raise refuse("no L2Advertisement announces it")
        for ad in ads:
            others = [name for name in self.translation.l2_pools[str(ad.ref)] if name != pool]
            if others:
                raise refuse(f"this advertisement also announces {', '.join(others)}; a canary"
                             " deletes whole advertisements and cannot edit one while MetalLB's"
                             " controller (and so its webhook) is stopped. Give the pool an"
                             " L2Advertisement of its own, or migrate without --canary",
                             obj=str(ad.ref))
        sources = {str(ad.ref) for ad in ads}
        policies = [p for p in self.translation.policies
                    if (p["metadata"].get("annotations") or {}).get(SOURCE_ANNOTATION)
                    in sources]
        services = sorted(pin.key for pin in self.translation.pins
                          if pin.pool == pool and pin.ips)
        if not services:
            raise refuse("no Service has an IP of it, so there is nothing to try it on")
        return ads, policies, services

    def canary(self, pool: str) -> Stage:
        ads, policies, services = self.canary_scope(pool)
        self.canary_ads = {ad.name for ad in ads}
        self.canary_policies = {p["metadata"]["name"] for p in policies}
        waited = [key for key in services if key in self.announced]
        self.context["canary"] = {"pool": pool, "services": waited,
                                  "advertisements": sorted(self.canary_ads)}
        actions = (self._advertisement_deletes(ads) + self._metallb_release(services, None)
                   + self._policy_creates(policies))
        if waited:
            actions.append(_wait(
                Target("coordination.k8s.io/v1", "Lease", "cilium-l2announce-*",
                       self.cilium_namespace),
                f"every announced Service of pool {pool} has a lease held by an eligible node",
                **{"for": "leases", "services": waited, "timeout": 120},
            ))
        return Stage(
            4, "l2-canary", f"Hand the ARP answers of pool {pool} to Cilium first",
            f"A canary: the {len(services)} Service(s) of pool {pool} move to Cilium's"
            " announcements while MetalLB keeps announcing the others, so a problem shows on"
            " one pool, and its rollback touches only it. Break before make, as in l2-cutover.",
            actions=actions,
            checks_before=["LB-IPAM holds every pinned IP"],
            checks_after=[f"a lease per announced Service of pool {pool}, held by an eligible"
                          " node", "no Service IP changed"],
        )

    def cutover(self) -> Stage:
        # Advertisements that exist as objects are deleted; those a legacy configuration
        # implies (ConfigMap, AddressPool protocol) have no object, so MetalLB's speakers are
        # parked on no node instead [M7][M8]. A canary stage already did its pool's share.
        actions = self._advertisement_deletes([
            ad for ad in self.snapshot.l2_advertisements
            if not ad.implied and ad.name not in self.canary_ads])
        parked: Obj | None = None
        if any(ad.implied for ad in self.snapshot.l2_advertisements):
            speaker = metallb_speaker(self.snapshot)
            if self.snapshot.bgp_peers and self.bgp is None:
                self.error("legacy-l2-and-bgp", "MetalLB legacy configuration", "it announces"
                           " over layer 2 and BGP with the same speakers, and a legacy"
                           " configuration has no L2Advertisement to delete: stopping the"
                           " speakers for the ARP hand-over would withdraw every BGP route."
                           " Convert it to MetalLB's resources first (MetalLB 0.13 or later"
                           " and its configmaptocrs tool), then plan again.")
            if speaker is None:
                self.error("metallb-speaker-missing", "DaemonSet speaker", "MetalLB's speaker"
                           " DaemonSet was not found; a legacy configuration announces with no"
                           " L2Advertisement, so the speakers are stopped by parking the"
                           " DaemonSet.")
            else:
                before = view(speaker)
                assert before is not None
                after = copy.deepcopy(before)
                after["spec"]["template"]["spec"]["nodeSelector"][SPEAKER_PAUSE_LABEL] = "true"
                actions.append(Action(
                    "patch", Target.of(speaker), "stop MetalLB's speakers (a legacy"
                    " configuration has no L2Advertisement to delete): schedule them on no node",
                    before=before, after=after,
                    patch={"spec": {"template": {"spec": {"nodeSelector": {
                        SPEAKER_PAUSE_LABEL: "true"}}}}},
                ))
                parked = speaker
        canary = set((self.context.get("canary") or {}).get("services") or ())
        # Every Service MetalLB serves: only those it announces over L2 have a ServiceL2Status.
        handed = sorted(pin.key for pin in self.translation.pins
                        if pin.ips and pin.key not in canary)
        actions += self._metallb_release(handed, parked)
        if parked is not None:
            actions += self._legacy_configmap_deletes()
        actions += self._policy_creates([p for p in self.translation.policies
                                         if p["metadata"]["name"] not in self.canary_policies])
        if self.translation.policies:
            actions.append(_wait(
                Target("coordination.k8s.io/v1", "Lease", "cilium-l2announce-*",
                       self.cilium_namespace),
                "every announced Service has a lease held by an eligible node",
                **{"for": "leases", "timeout": 120},
            ))
        low, high = self.cutover_silence()
        return Stage(
            4, "l2-cutover", "Hand the ARP answers from MetalLB to Cilium",
            "Break before make: MetalLB's speakers stop first (the stage waits until each has),"
            " then Cilium's policies start; for the short gap clients keep the old MAC in their"
            " ARP cache, and with kube-proxy replacement every node forwards the VIP. The other"
            f" order would put two announcers on the wire. Expected silence per IP: about"
            f" {low:g}-{high:g}s.",
            actions=actions,
            checks_before=["LB-IPAM holds every pinned IP"],
            checks_after=["a lease per announced Service, held by an eligible node",
                          "no Service IP changed"],
        )

    def decommission(self) -> Stage:
        actions: list[Action] = []
        kept: list[str] = []
        kept_bgp = self.pool_advertised_bgp if self.bgp is None else set()
        for pool in self.snapshot.pools:
            if pool.name in kept_bgp:
                kept.append(pool.name)
                continue
            if pool.ref.origin.startswith(tuple(self.snapshot.legacy_sources)):
                continue
            body = next((d.body for d in self.snapshot.documents
                         if d.body.get("kind") in ("IPAddressPool", "AddressPool")
                         and d.body["metadata"]["name"] == pool.name), None)
            if body is None:
                continue
            obj = creatable(body)
            obj["metadata"]["namespace"] = pool.ref.namespace
            actions.append(Action(
                "delete", Target(obj["apiVersion"], obj["kind"], pool.name, pool.ref.namespace),
                "MetalLB's pool is no longer used", before=view(obj), body=obj,
            ))
        if kept:
            self.findings.append(Finding(
                Severity.WARNING, "decommission-keeps-bgp", f"IPAddressPool {', '.join(kept)}",
                None, "these pools are announced over BGP, which is not migrated: decommission"
                " keeps them (and MetalLB's BGP objects) so their routes stay up; migrate BGP to"
                " Cilium by hand before uninstalling MetalLB.",
            ))
        if self.bgp is not None:
            actions += self.bgp.decommission_actions()
        for pin in self.translation.pins:
            if pin.pool in kept_bgp:
                continue
            body = self.services[pin.key].body
            annotations, labels = self.pinned_metadata(pin)
            drop = sorted(k for k in annotations if k.startswith(METALLB_PREFIXES))
            if not drop:
                continue
            before_body = {**body, "metadata": {
                **(body.get("metadata") or {}), "annotations": annotations, "labels": labels}}
            before = view(before_body)
            assert before is not None
            after = {**before, "metadata": {
                "labels": before["metadata"]["labels"],
                "annotations": {k: v for k, v in before["metadata"]["annotations"].items()
                                if k not in drop},
            }}
            actions.append(Action(
                "patch", Target("v1", "Service", pin.name, pin.namespace),
                "remove MetalLB's annotations", before=before, after=after,
                patch={"metadata": {"annotations": dict.fromkeys(drop)}},
            ))
        self.context["manualLastStep"] = (
            "Uninstall the MetalLB release (helm uninstall, or delete its manifests) and remove"
            " it from Git; keep its CRDs until no metallb.io object is left."
        ) + (self.bgp.last_step() if self.bgp is not None else "")
        return Stage(
            5, "decommission", "Remove what is left of MetalLB",
            "MetalLB's pools are deleted while its controller is still stopped: a running"
            " controller would clear every IP when its pools vanish (metallb/metallb"
            " controller/service.go). Its annotations are"
            " removed from the Services. Then uninstall the release by hand.",
            actions=actions,
            checks_before=["every announced Service has a Cilium lease"],
            checks_after=["no MetalLB pool or advertisement left" + (
                " (except BGP ones)" if kept else ""), "no Service IP changed"],
        )


def announced_services(snapshot: ClusterSnapshot, translation: Translation) -> dict[
    str, list[str] | None
]:
    """Service → the nodes that may hold its Cilium lease (None when nodes are unknown) [C2]."""
    from migrate.model.selectors import matches

    services = {s.key: s for s in snapshot.services}
    out: dict[str, list[str] | None] = {}
    for pin in translation.pins:
        if not pin.ips:
            continue
        labels = selection_labels(services[pin.key], pin.labels)
        policies = [p for p in translation.policies
                    if matches(p["spec"].get("serviceSelector"), labels)]
        if not policies:
            continue
        if not snapshot.nodes:
            out[pin.key] = None
            continue
        out[pin.key] = sorted(
            node.name for node in snapshot.nodes
            if any(matches(p["spec"].get("nodeSelector"), node.labels) for p in policies)
        )
    return out


def pool_ip_counts(translation: Translation) -> dict[str, int]:
    """Pool → how many distinct pinned IPs LB-IPAM must take over in it."""
    ips: dict[str, set[str]] = {}
    for pin in translation.pins:
        if pin.pool and pin.ips:
            ips.setdefault(pin.pool, set()).update(pin.ips)
    return {pool: len(found) for pool, found in sorted(ips.items())}


def expected_ips(snapshot: ClusterSnapshot, translation: Translation) -> dict[str, list[str]]:
    """I1's baseline: the ingress IPs of every Service MetalLB serves, as read."""
    served = {pin.key for pin in translation.pins}
    return {
        s.key: list(s.ingress_ips) for s in snapshot.services
        if s.key in served and s.ingress_ips
    }


def snapshot_fingerprint(snapshot: ClusterSnapshot) -> str:
    """A hash of everything the plan depends on (views of the objects read)."""
    relevant = []
    for doc in snapshot.documents:
        if not reads(doc.body):  # only kinds the tool reads; any other is passed over
            continue
        kind = doc.body.get("kind")
        if kind in ("Event", "Lease", "Pod", "EndpointSlice", "Endpoints", "Node",
                    "ServiceL2Status", "CustomResourceDefinition"):
            continue
        if kind == "Service" and (doc.body.get("spec") or {}).get("type") != "LoadBalancer":
            continue
        metadata = doc.body.get("metadata") or {}
        relevant.append((kind, metadata.get("namespace"), metadata.get("name"),
                         view(doc.body)))
    relevant.sort(key=lambda item: (str(item[0]), str(item[1]), str(item[2])))
    return canonical_digest(relevant)


def build_plan(snapshot: ClusterSnapshot, translation: Translation, *,
               cilium_namespace: str = "kube-system",
               extra_findings: Sequence[Finding] = (), canary: str | None = None,
               bgp_batch: int = 1) -> Plan:
    """The staged plan for a snapshot and its translation; with ``canary`` (a MetalLB pool),
    an ``l2-canary`` stage hands that pool's announcements over before ``l2-cutover``.
    InputError when the pool cannot be a canary (``_Builder.canary_scope``). With MetalLB's
    BGP translated, ``bgp-prepare`` and ``bgp-handover`` hand its sessions to Cilium
    ``bgp_batch`` nodes at a time (migrate/plan/bgp_stage.py)."""
    builder = _Builder(snapshot, translation, cilium_namespace, extra_findings)
    builder.plan_bgp(bgp_batch)
    stages = [builder.preflight(), builder.pin()]
    if builder.bgp is not None:
        stages.append(builder.bgp.prepare())
    stages += [builder.freeze(), builder.handover()]
    if builder.bgp is not None:
        stages.append(builder.bgp.handover())
    if canary is not None:
        stages.append(builder.canary(canary))
    stages += [builder.cutover(), builder.decommission()]
    for number, stage in enumerate(stages):
        stage.number = number
    builder.context["webhook"] = (
        metallb_webhook(snapshot) or {}).get("metadata", {}).get("name")
    builder.context["poolApiVersion"] = translation.cilium.pool_api_version
    builder.context["services"] = sorted(s.key for s in snapshot.services if s.is_load_balancer)
    builder.context["announced"] = builder.announced
    builder.context["poolIPs"] = pool_ip_counts(translation)
    # The pool label's value per MetalLB pool, as stage 1 writes it and the Cilium selectors
    # match it (a pool name that is no label value is shortened, with a hash).
    builder.context["poolLabels"] = dict(translation.pool_labels)
    return Plan(
        fingerprint=snapshot_fingerprint(snapshot),
        cilium_version=translation.cilium.minor,
        metallb_namespace=snapshot.metallb_namespace,
        cilium_namespace=cilium_namespace,
        source=str(snapshot.facts.get("source", "files")),
        stages=stages,
        findings=sort_findings(builder.findings),
        expected_ips=expected_ips(snapshot, translation),
        context=builder.context,
    )

