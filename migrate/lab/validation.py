"""What kube-apiserver validates on every write, as the lab's store applies it [real-clusters §5].

Object metadata as ``staging/src/k8s.io/apimachinery/pkg/api/validation/objectmeta.go``
validates it (``ValidateObjectMetaAccessor`` on create, ``ValidateObjectMetaAccessorUpdate``
on update): the name by the kind's rule (on create only: a name cannot change), label keys and
values (``staging/src/k8s.io/apimachinery/pkg/apis/meta/v1/validation/validation.go``
``ValidateLabels``), annotation keys and their total size (``TotalAnnotationSizeLimitB``, 256
KiB of keys and values) and, on create, finalizers. Then the few spec fields of built-in
kinds whose labels matter to a migration: a Service's ``spec.selector`` (``ValidateService`` in
``pkg/apis/core/validation/validation.go``), pod templates' labels, annotations and
``nodeSelector`` (``ValidatePodTemplateSpec``, ``ValidatePodSpec``) and the workloads' label
selector (``ValidateLabelSelector``). Custom resources get the metadata checks; their schema is
``migrate.lab.crds``'s part.

Each problem is a ``StatusCause`` as ``apierrors.NewInvalid`` builds it: ``reason`` (the
``field.ErrorType``: FieldValueInvalid, FieldValueTooLong, ...), ``message`` (``ErrorBody``:
``Invalid value: "x": detail``) and ``field`` (``metadata.labels``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from migrate.model.names import (
    dns1035_label_errors,
    dns1123_label_errors,
    dns1123_subdomain_errors,
    label_value_errors,
    qualified_name_errors,
)

if TYPE_CHECKING:
    from migrate.lab.store import ResourceType

Obj = dict[str, Any]
Cause = dict[str, str]
NameRule = Callable[[str], list[str]]

TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
"""``TotalAnnotationSizeLimitB``: bytes of all annotation keys and values of one object."""

NAME_RULES: dict[tuple[str, str], NameRule] = {
    # pkg/apis/core/validation/validation.go: ValidateNamespaceName = NameIsDNSLabel,
    # ValidateServiceName = NameIsDNS1035Label; every other kind the lab serves (Pods, Nodes,
    # ConfigMaps, Secrets, Endpoints, ServiceAccounts, Events, apps, Leases, EndpointSlices,
    # webhook configurations, CRDs) and every custom resource (apiextensions-apiserver's
    # customResourceValidator) uses NameIsDNSSubdomain.
    ("", "Namespace"): dns1123_label_errors,
    ("", "Service"): dns1035_label_errors,
}

_POD_TEMPLATE_KINDS = {("apps", "Deployment"), ("apps", "DaemonSet"), ("apps", "StatefulSet")}


def name_rule(rtype: ResourceType) -> NameRule:
    """The check kube-apiserver applies to the names of one kind."""
    return NAME_RULES.get((rtype.group, rtype.kind), dns1123_subdomain_errors)


def go_quote(value: str) -> str:
    """Go's ``%q`` of a string (how ``field.Invalid`` shows a bad value)."""
    out = ['"']
    escapes = {"\\": "\\\\", '"': '\\"', "\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n",
               "\r": "\\r", "\t": "\\t", "\v": "\\v"}
    for char in value:
        if char in escapes:
            out.append(escapes[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x100:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def invalid_value(field: str, value: str, detail: str) -> Cause:
    """``field.Invalid``."""
    return {"reason": "FieldValueInvalid", "message": f"Invalid value: {go_quote(value)}: {detail}",
            "field": field}


def required_value(field: str, detail: str) -> Cause:
    """``field.Required``."""
    return {"reason": "FieldValueRequired",
            "message": f"Required value: {detail}" if detail else "Required value",
            "field": field}


def forbidden(field: str, detail: str) -> Cause:
    """``field.Forbidden``."""
    return {"reason": "FieldValueForbidden", "message": f"Forbidden: {detail}", "field": field}


def too_long(field: str, limit: int) -> Cause:
    """``field.TooLong`` (the value is not shown)."""
    return {"reason": "FieldValueTooLong", "message": f"Too long: must have at most {limit} bytes",
            "field": field}


class DecodeError(ValueError):
    """A body the real server could not even decode into its Go type (it answers 400)."""


def _string_map(value: Any, field: str, kind: str, api_version: str) -> dict[str, str]:
    """A ``map[string]string`` field as Go decodes it: null values become ``""`` (in place, as
    the object is stored), anything else but a string is refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DecodeError(_unmarshal_message(value, f"ObjectMeta.{field}",
                                             "map[string]string", kind, api_version))
    for key, item in value.items():
        if item is None:
            value[key] = ""
        elif not isinstance(item, str):
            raise DecodeError(_unmarshal_message(item, f"ObjectMeta.{field}", "string", kind,
                                                 api_version))
    return {str(k): v for k, v in value.items()}


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def _unmarshal_message(value: Any, field: str, go_type: str, kind: str, api_version: str) -> str:
    return (f'{kind} in version "{api_version.rpartition("/")[2]}" cannot be handled as a {kind}:'
            f" json: cannot unmarshal {_json_type(value)} into Go struct field {field} of type"
            f" {go_type}")


def label_causes(labels: dict[str, str], field: str) -> list[Cause]:
    """``ValidateLabels``: every key a qualified name, every value a label value; the causes
    name the map (``metadata.labels``), not the key."""
    causes: list[Cause] = []
    for key in sorted(labels):
        causes += [invalid_value(field, key, msg) for msg in qualified_name_errors(key)]
        causes += [invalid_value(field, labels[key], msg)
                   for msg in label_value_errors(labels[key])]
    return causes


def annotation_causes(annotations: dict[str, str], field: str) -> list[Cause]:
    """``ValidateAnnotations``: keys are qualified names (case aside), 256 KiB in all."""
    causes: list[Cause] = []
    for key in sorted(annotations):
        causes += [invalid_value(field, key, msg) for msg in qualified_name_errors(key.lower())]
    size = sum(len(k.encode("utf-8")) + len(v.encode("utf-8")) for k, v in annotations.items())
    if size > TOTAL_ANNOTATION_SIZE_LIMIT:
        causes.append(too_long(field, TOTAL_ANNOTATION_SIZE_LIMIT))
    return causes


def label_selector_causes(selector: Any, field: str) -> list[Cause]:
    """``ValidateLabelSelector`` (a malformed selector object is left to decoding)."""
    if not isinstance(selector, dict):
        return []
    causes: list[Cause] = []
    match_labels = selector.get("matchLabels")
    if isinstance(match_labels, dict):
        causes += label_causes({str(k): str(v) for k, v in match_labels.items()},
                               f"{field}.matchLabels")
    for index, expr in enumerate(selector.get("matchExpressions") or []):
        if not isinstance(expr, dict):
            continue
        where = f"{field}.matchExpressions[{index}]"
        operator = expr.get("operator")
        values = [str(v) for v in expr.get("values") or []]
        if operator in ("In", "NotIn"):
            if not values:
                causes.append(required_value(
                    f"{where}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif operator in ("Exists", "DoesNotExist"):
            if values:
                causes.append(forbidden(
                    f"{where}.values",
                    "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            causes.append(invalid_value(f"{where}.operator", str(operator),
                                        "not a valid selector operator"))
        key = str(expr.get("key", ""))
        causes += [invalid_value(f"{where}.key", key, msg) for msg in qualified_name_errors(key)]
        for position, value in enumerate(values):
            causes += [invalid_value(f"{where}.values[{position}]", value, msg)
                       for msg in label_value_errors(value)]
    return causes


def _name_with_prefix_mask(name: str) -> str:
    """``maskTrailingDash``: a generateName may end in ``-``."""
    return name[:-2] + "a" if name.endswith("-") and len(name) >= 2 else name


def object_causes(rtype: ResourceType, obj: Obj, old: Obj | None) -> list[Cause]:
    """Everything kube-apiserver would refuse in ``obj`` (a create when ``old`` is None),
    ahead of a custom kind's schema; raises DecodeError for a body that does not decode."""
    meta = obj.get("metadata") or {}
    api_version = str(obj.get("apiVersion", ""))
    causes: list[Cause] = []
    if old is None:
        rule = name_rule(rtype)
        generate = meta.get("generateName")
        if isinstance(generate, str) and generate:
            causes += [invalid_value("metadata.generateName", generate, msg)
                       for msg in rule(_name_with_prefix_mask(generate))]
        name = meta.get("name")
        if isinstance(name, str) and name:
            causes += [invalid_value("metadata.name", name, msg) for msg in rule(name)]
    labels = _string_map(meta.get("labels"), "metadata.labels", rtype.kind, api_version)
    annotations = _string_map(meta.get("annotations"), "metadata.annotations", rtype.kind,
                              api_version)
    causes += label_causes(labels, "metadata.labels")
    causes += annotation_causes(annotations, "metadata.annotations")
    for finalizer in (meta.get("finalizers") or []) if old is None else []:
        # ValidateFinalizers runs on create (ValidateObjectMetaAccessorUpdate leaves it out)
        causes += [invalid_value("metadata.finalizers", str(finalizer), msg)
                   for msg in qualified_name_errors(str(finalizer))]
    if not rtype.custom:
        causes += _spec_causes(rtype, obj)
    return causes


def _str_map(value: Any) -> dict[str, str] | None:
    if not isinstance(value, dict):
        return None
    return {str(k): "" if v is None else str(v) for k, v in value.items()}


def _pod_spec_causes(spec: Any, field: str) -> list[Cause]:
    """``ValidatePodSpec``'s ``nodeSelector`` check."""
    if not isinstance(spec, dict):
        return []
    node_selector = _str_map(spec.get("nodeSelector"))
    return label_causes(node_selector, f"{field}.nodeSelector") if node_selector else []


def _spec_causes(rtype: ResourceType, obj: Obj) -> list[Cause]:
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return []
    kind = (rtype.group, rtype.kind)
    if kind == ("", "Service"):
        selector = _str_map(spec.get("selector"))
        return label_causes(selector, "spec.selector") if selector else []
    if kind == ("", "Pod"):
        return _pod_spec_causes(spec, "spec")
    if kind not in _POD_TEMPLATE_KINDS:
        return []
    causes = label_selector_causes(spec.get("selector"), "spec.selector")
    template = spec.get("template")
    if isinstance(template, dict):
        template_meta = template.get("metadata") or {}
        if isinstance(template_meta, dict):
            # ValidatePodTemplateSpec names these fldPath.Child("labels"): no "metadata".
            labels = _str_map(template_meta.get("labels"))
            annotations = _str_map(template_meta.get("annotations"))
            if labels:
                causes += label_causes(labels, "spec.template.labels")
            if annotations:
                causes += annotation_causes(annotations, "spec.template.annotations")
        causes += _pod_spec_causes(template.get("spec"), "spec.template.spec")
    return causes
