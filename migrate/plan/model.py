"""The plan: stages of actions, each with the object before and after, serialisable to a file."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from migrate.errors import InputError, InputProblems
from migrate.model.findings import Finding, Severity
from migrate.sources import schemas as sch
from migrate.sources.validate import Identity, check, problems_of

SCHEMA_VERSION = 1
STAGE_NAMES = ("preflight", "pin", "bgp-prepare", "freeze-metallb", "ipam-handover",
               "bgp-handover", "l2-canary", "l2-cutover", "decommission")
"""Every stage a plan may have, in order; ``l2-canary`` only with ``migrate plan --canary``,
``bgp-prepare`` and ``bgp-handover`` only when MetalLB announces over BGP."""
VERBS = ("create", "delete", "patch", "scale", "wait")
WAIT_KINDS = ("replicas", "pods-gone", "ipam", "leases", "metallb-released", "bgp-secrets",
              "bgp-metallb-released", "bgp-cilium-established")
"""What a ``wait`` action may wait for (its ``for``)."""
Obj = dict[str, Any]

TARGET_SCHEMA = sch.fields(required=("apiVersion", "kind", "name"), apiVersion=sch.STR,
                     kind=sch.STR, name=sch.STR, namespace=sch.STR)
_BODY = sch.fields(required=("apiVersion", "kind", "metadata"), apiVersion=sch.STR,
                   kind=sch.STR, metadata=sch.fields(required=("name",), name=sch.STR,
                                                     namespace=sch.STR))
_MAPPING = sch.fields()
_COUNT = sch.Scalar("integer", minimum=0)
_SECONDS = sch.Scalar("number")
_ROUTES = sch.MapOf(sch.MapOf(sch.MapOf(_COUNT)))
"""node -> peer -> address family -> how many routes Cilium advertises there."""
PLAN_SCHEMA = sch.fields(
    sch.REFUSE,
    ("schemaVersion", "kind", "fingerprint", "ciliumVersion", "metallbNamespace",
     "ciliumNamespace", "stages"),
    schemaVersion=sch.INT, kind=sch.STR, digest=sch.STR, fingerprint=sch.STR,
    ciliumVersion=sch.STR, metallbNamespace=sch.STR, ciliumNamespace=sch.STR, source=sch.STR,
    context=sch.fields(
        services=sch.STRINGS, announced=sch.MapOf(sch.Maybe(sch.STRINGS)),
        poolIPs=sch.MapOf(_COUNT), poolApiVersion=sch.STR, webhook=sch.Maybe(sch.STR),
        manualLastStep=sch.Maybe(sch.STR),
        canary=sch.fields(pool=sch.STR, services=sch.STRINGS, advertisements=sch.STRINGS),
        metallbController=sch.fields(replicas=_COUNT),
        ciliumOperator=sch.fields(replicas=_COUNT),
        bgp=sch.fields(
            sch.REFUSE, ("label", "batches"),
            label=sch.STR, cilium=sch.STR, parked=sch.STR, apiVersion=sch.STR,
            secretsNamespace=sch.STR, batches=sch.ListOf(sch.STRINGS), peers=sch.STRINGS,
            routes=_ROUTES, metallbSettle=_SECONDS, ciliumSettle=_SECONDS,
            metallbStatus=sch.BOOL,
            services=sch.MapOf(sch.fields(prefixes=sch.STRINGS, nodes=sch.STRINGS)),
        ),
    ),
    expectedIPs=sch.MapOf(sch.STRINGS),
    findings=sch.ListOf(sch.fields(
        sch.REFUSE, ("severity", "code", "object", "message"),
        severity=sch.Scalar("string", enum=tuple(s.value for s in Severity)), code=sch.STR,
        object=sch.STR, field=sch.Maybe(sch.STR), message=sch.STR, source=sch.STR,
    )),
    stages=sch.ListOf(sch.fields(
        sch.REFUSE, ("number", "name", "actions"),
        number=_COUNT, name=sch.Scalar("string", enum=STAGE_NAMES), title=sch.STR, why=sch.STR,
        checksBefore=sch.STRINGS, checksAfter=sch.STRINGS,
        actions=sch.ListOf(sch.fields(
            sch.REFUSE, ("verb", "target"),
            verb=sch.Scalar("string", enum=VERBS), target=TARGET_SCHEMA, description=sch.STR,
            before=_MAPPING, after=_MAPPING, patch=_MAPPING, body=_BODY, replicas=_COUNT,
            wait=sch.Fields({"for": sch.Scalar("string", enum=WAIT_KINDS), "timeout": _SECONDS,
                             "replicas": _COUNT, "services": sch.STRINGS, "settle": _SECONDS,
                             "nodes": sch.STRINGS, "peers": sch.STRINGS,
                             "secrets": sch.STRINGS, "routes": _ROUTES},
                            frozenset(("for",))),
        )),
    )),
)
"""What a plan file holds, as ``Plan.to_dict`` writes it (a field it does not write is
refused: the file was edited or comes from another version)."""


@dataclass(frozen=True)
class Target:
    """The object an action works on."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @property
    def key(self) -> str:
        where = f"{self.namespace}/{self.name}" if self.namespace else self.name
        return f"{self.kind} {where}"

    @property
    def group_is_metallb(self) -> bool:
        return self.api_version.startswith("metallb.io/")

    def to_dict(self) -> Obj:
        out: Obj = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            out["namespace"] = self.namespace
        return out

    @classmethod
    def from_dict(cls, data: Obj) -> Target:
        return cls(data["apiVersion"], data["kind"], data["name"], data.get("namespace"))

    @classmethod
    def of(cls, obj: Obj) -> Target:
        """The target naming an object body."""
        metadata = obj.get("metadata") or {}
        return cls(obj["apiVersion"], obj["kind"], metadata["name"], metadata.get("namespace"))


@dataclass
class Action:
    """One step of a stage.

    verb: ``create`` / ``delete`` / ``patch`` (a merge patch) / ``scale`` / ``wait``.
    ``before`` and ``after`` are the parts of the object the action changes, as the plan saw
    them and as they will be (None: absent). ``body`` is the full object to create.
    """

    verb: str
    target: Target
    description: str
    before: Obj | None = None
    after: Obj | None = None
    patch: Obj | None = None
    body: Obj | None = None
    replicas: int | None = None
    wait: Obj | None = None

    def to_dict(self) -> Obj:
        out: Obj = {"verb": self.verb, "target": self.target.to_dict(),
                    "description": self.description}
        # A patch's "after" is its "before" with the merge patch applied: not stored twice.
        skip = {"after"} if self.verb == "patch" and self.patch is not None else set()
        for key in ("before", "after", "patch", "body", "replicas", "wait"):
            value = getattr(self, key)
            if value is not None and key not in skip:
                out[key] = value
        return out

    @classmethod
    def from_dict(cls, data: Obj) -> Action:
        after = data.get("after")
        if data["verb"] == "patch" and after is None and data.get("patch") is not None:
            after = merge_patch(data.get("before") or {}, data["patch"])
        return cls(
            verb=data["verb"], target=Target.from_dict(data["target"]),
            description=data.get("description", ""), before=data.get("before"),
            after=after, patch=data.get("patch"), body=data.get("body"),
            replicas=data.get("replicas"), wait=data.get("wait"),
        )


@dataclass
class Stage:
    """A named, numbered list of actions with the checks around it."""

    number: int
    name: str
    title: str
    why: str
    actions: list[Action] = field(default_factory=list)
    checks_before: list[str] = field(default_factory=list)
    checks_after: list[str] = field(default_factory=list)

    @property
    def changes(self) -> list[Action]:
        """The actions that write something."""
        return [a for a in self.actions if a.verb != "wait"]

    def to_dict(self) -> Obj:
        return {
            "number": self.number, "name": self.name, "title": self.title, "why": self.why,
            "checksBefore": list(self.checks_before), "checksAfter": list(self.checks_after),
            "actions": [a.to_dict() for a in self.actions],
        }

    @classmethod
    def from_dict(cls, data: Obj) -> Stage:
        return cls(
            number=int(data["number"]), name=data["name"], title=data.get("title", ""),
            why=data.get("why", ""), actions=[Action.from_dict(a) for a in data["actions"]],
            checks_before=list(data.get("checksBefore") or []),
            checks_after=list(data.get("checksAfter") or []),
        )


@dataclass
class Plan:
    """A whole migration: what was read, what each stage does, and what must hold."""

    fingerprint: str
    cilium_version: str
    metallb_namespace: str
    cilium_namespace: str
    source: str
    stages: list[Stage]
    findings: list[Finding]
    expected_ips: dict[str, list[str]]
    context: Obj = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def blocked(self) -> bool:
        """An ERROR finding makes the plan unappliable."""
        return any(f.severity is Severity.ERROR for f in self.findings)

    @property
    def has_changes(self) -> bool:
        return any(stage.changes for stage in self.stages)

    def stage(self, selector: str | int) -> Stage:
        """A stage by name or number (InputError when unknown)."""
        text = str(selector).strip()
        for stage in self.stages:
            if text in (stage.name, str(stage.number)):
                return stage
        names = ", ".join(f"{s.number}={s.name}" for s in self.stages)
        raise InputError(f"no stage {text!r} in the plan (stages: {names})", field="--stage")

    def to_dict(self) -> Obj:
        return {
            "schemaVersion": self.schema_version,
            "kind": "MigrationPlan",
            "fingerprint": self.fingerprint,
            "ciliumVersion": self.cilium_version,
            "metallbNamespace": self.metallb_namespace,
            "ciliumNamespace": self.cilium_namespace,
            "source": self.source,
            "context": self.context,
            "expectedIPs": self.expected_ips,
            "findings": [f.to_dict() for f in self.findings],
            "stages": [s.to_dict() for s in self.stages],
        }

    def digest(self) -> str:
        """A hash of the plan's content (what apply records as the plan it ran)."""
        return content_digest(self.to_dict())

    def to_file(self) -> Obj:
        """What a plan file holds: ``to_dict`` and its digest (near the top, where a cut
        leaves it), so that a file edited or cut short after ``migrate plan`` wrote it is
        refused before anything is done."""
        content = self.to_dict()
        head = {key: content.pop(key) for key in ("schemaVersion", "kind")}
        return {**head, "digest": self.digest(), **content}

    @classmethod
    def from_dict(cls, data: Any, *, origin: str = "plan", digest: str | None = None) -> Plan:
        """Load a plan written by ``to_dict`` or ``to_file``, checked against
        ``PLAN_SCHEMA``; InputError (InputProblems, one per field) naming ``origin`` for
        another schema or a structure that is not a plan's. With ``digest`` (the one apply
        recorded), or a ``digest`` field in ``data``, the content must hash to it; that is
        checked first, as one line: a plan cut short or edited is not worth a list of the
        fields it lacks."""
        if not isinstance(data, dict) or data.get("kind") != "MigrationPlan":
            raise InputError("not a migrate plan (kind MigrationPlan); was the file cut short"
                             " or is it another file?", source=origin)
        if data.get("schemaVersion") != SCHEMA_VERSION:
            raise InputError(
                f"plan schema version {data.get('schemaVersion')} is not {SCHEMA_VERSION};"
                " run migrate plan again", source=origin, field="schemaVersion",
            )
        content = {k: v for k, v in data.items() if k != "digest"}
        expected = data.get("digest") or digest
        if expected is not None and content_digest(content) != expected:
            raise InputError(
                "the plan was changed or cut short after migrate plan wrote it (its content"
                " does not match its digest): make a new plan with migrate plan --out",
                source=origin, field="digest",
            )
        report = check(data, PLAN_SCHEMA)
        if not report.ok:
            raise InputProblems(list(problems_of(
                report, origin, Identity(None, "MigrationPlan", None, None))))
        findings = [
            Finding(Severity(f["severity"]), f["code"], f["object"], f.get("field"),
                    f["message"], f.get("source"))
            for f in data.get("findings") or []
        ]
        return cls(
            fingerprint=data["fingerprint"], cilium_version=data["ciliumVersion"],
            metallb_namespace=data["metallbNamespace"],
            cilium_namespace=data["ciliumNamespace"], source=data.get("source", ""),
            stages=[Stage.from_dict(s) for s in data["stages"]], findings=findings,
            expected_ips={k: list(v) for k, v in (data.get("expectedIPs") or {}).items()},
            context=dict(data.get("context") or {}),
        )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (returns a new value)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def content_digest(value: Any) -> str:
    """The hash of a plan's content that ``Plan.digest`` and plan files carry (a value JSON
    does not know, in a file someone edited, is hashed as its text)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def canonical_digest(value: Any) -> str:
    """A stable short hash of a JSON-able value."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
