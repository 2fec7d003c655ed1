"""Checks of MetalLB: controller and version, --lb-class, FRR, webhooks, other classes
[M4][M6][M8][M9]."""

from __future__ import annotations

from migrate.preflight.context import ERROR, INFO, OK, WARNING, Context, service_names
from migrate.preflight.inventory import (
    CILIUM_CLASSES,
    Version,
    describe,
    pool_holding,
    version_text,
)
from migrate.preflight.report import CheckResult

# [M6]: the controller reads metallb.io/ Service annotations from v0.14.9 (commit fc863ccd3).
METALLB_NEW_PREFIX: Version = (0, 14, 9)


def check_metallb(ctx: Context) -> CheckResult:
    """MetalLB's controller is there, and its version: which annotation prefix it reads [M6][M9].
    Its known bugs are the ``known-bugs`` check's."""
    controller = ctx.metallb.controller
    if controller is None:
        if not ctx.snapshot.has_metallb:
            return CheckResult(
                "metallb", ERROR, "No MetalLB in the input: no controller, no MetalLB objects,"
                " no Service with MetalLB annotations.",
                "Nothing to migrate; give the folder that holds MetalLB's objects.",
            )
        return CheckResult(
            "metallb", WARNING,
            "MetalLB objects but no MetalLB controller Deployment in the input; the"
            " freeze-metallb stage scales it to 0.",
            f"Include it (kubectl -n {ctx.snapshot.metallb_namespace} get deployments -o yaml).",
        )
    obj = describe(controller)
    version = ctx.metallb.component_versions.get("controller")
    if version is None:
        return CheckResult(
            "metallb", WARNING, f"{obj}: cannot tell MetalLB's version (no image tag or"
            " app.kubernetes.io/version label); the pin stage writes MetalLB's loadBalancerIPs"
            " under both prefixes, metallb.io/ and metallb.universe.tf/.",
            "Check the version by hand (the controller's image tag): the known bugs of old"
            " releases cannot be ruled out.", obj=obj,
        )
    found = f"MetalLB {version_text(version[0])} ({version[1]})."
    if version[0] < METALLB_NEW_PREFIX:
        found += (" It reads only metallb.universe.tf/ Service annotations (metallb.io/ from"
                  " 0.14.9): the pin stage writes MetalLB's pin under that prefix.")
    return CheckResult("metallb", OK, found, obj=obj)


def check_metallb_lb_class(ctx: Context) -> CheckResult:
    """MetalLB started with ``--lb-class`` serves only Services of that class [M6]."""
    lb_class = ctx.metallb.lb_class
    obj = describe(ctx.metallb.controller) if ctx.metallb.controller else None
    if lb_class is None:
        return CheckResult("metallb-lb-class", OK, "MetalLB runs without --lb-class: it serves"
                           " the Services without a loadBalancerClass.", obj=obj)
    classed = [s for s in ctx.snapshot.services
               if s.is_load_balancer and s.load_balancer_class == lb_class]
    found = f"MetalLB runs with --lb-class={lb_class}"
    if not classed:
        return CheckResult("metallb-lb-class", INFO, f"{found}; no Service uses that class.",
                           obj=obj)
    return CheckResult(
        "metallb-lb-class", WARNING,
        f"{found}; {len(classed)} Service(s) use it: {service_names(classed)}. Cilium LB-IPAM"
        " ignores that class, and Kubernetes does not let a Service's class change in place.",
        "Recreate each of those Services without loadBalancerClass once it is pinned (the pin"
        " keeps its IP); the translation reports each as an ERROR until then.",
        obj=str(classed[0].ref), field="spec.loadBalancerClass",
    )


def check_metallb_frr(ctx: Context) -> CheckResult:
    """FRR mode means BGP sessions, which bgp-handover moves to Cilium node by node [M4]."""
    kind = ctx.metallb.bgp_type
    obj = describe(ctx.metallb.speaker) if ctx.metallb.speaker else None
    if kind in ("", "native"):
        return CheckResult("metallb-frr", OK, "MetalLB's speaker runs the native BGP"
                           " implementation (no FRR).", obj=obj)
    found = f"MetalLB runs in {kind} mode ({ctx.metallb.bgp_evidence})."
    if ctx.snapshot.bgp_peers:
        return CheckResult(
            "metallb-frr", INFO,
            f"{found} {len(ctx.snapshot.bgp_peers)} BGPPeer(s) are configured: bgp-handover"
            " moves their sessions to Cilium's BGP control plane one node at a time, and"
            " MetalLB's FRR goes with MetalLB.",
            "Nothing to do here; the BGP checks say what Cilium needs first.", obj=obj,
        )
    return CheckResult("metallb-frr", INFO, f"{found} No BGPPeer is configured; L2 only.",
                       obj=obj)


def check_metallb_webhook(ctx: Context) -> CheckResult:
    """MetalLB's validating webhook rejects writes while its controller is frozen [M8][M9]."""
    if not ctx.metallb.webhooks:
        return CheckResult("metallb-webhook", OK,
                           "No MetalLB ValidatingWebhookConfiguration in the input.")
    hook = ctx.metallb.webhooks[0]
    policies = sorted({
        str(h.get("failurePolicy") or "Fail") for h in hook.get("webhooks") or []
        if isinstance(h, dict)
    })
    return CheckResult(
        "metallb-webhook", INFO,
        f"{describe(hook)} (failurePolicy {', '.join(policies) or 'Fail'}) validates metallb.io"
        " objects; with MetalLB's controller frozen (freeze-metallb) it rejects their creation and"
        " update (its controller serves the webhook).",
        "Nothing to do: rollback sets the webhooks' failurePolicy to Ignore while it restores"
        " MetalLB objects, and puts the configuration back exactly afterwards.",
        obj=describe(hook),
    )


def check_foreign_lb_class(ctx: Context) -> CheckResult:
    """Services of another load-balancer implementation are left alone [C1.1][M6]."""
    foreign = [
        s for s in ctx.snapshot.services
        if s.is_load_balancer and s.load_balancer_class is not None
        and s.load_balancer_class != ctx.metallb.lb_class
        and s.load_balancer_class not in CILIUM_CLASSES
    ]
    if not foreign:
        return CheckResult("foreign-lb-class", OK,
                           "No Service has another implementation's loadBalancerClass.")
    classes = sorted({str(s.load_balancer_class) for s in foreign})
    clashing = [
        s for s in foreign if any(pool_holding(ctx.snapshot, ip) for ip in s.current_ips())
    ]
    found = (f"{len(foreign)} Service(s) of class(es) {', '.join(classes)}, which neither MetalLB"
             f" nor Cilium serves: {service_names(foreign)}.")
    if clashing:
        return CheckResult(
            "foreign-lb-class", WARNING,
            f"{found} {service_names(clashing)} hold(s) IPs inside MetalLB pools; Cilium does not"
            " know another controller uses them and could hand them out again.",
            "Move those IPs out of the MetalLB pools, or the Services to a MetalLB-served class"
            " before migrating.", obj=str(clashing[0].ref), field="spec.loadBalancerClass",
        )
    return CheckResult("foreign-lb-class", INFO, f"{found} They are left alone.",
                       obj=str(foreign[0].ref), field="spec.loadBalancerClass")


