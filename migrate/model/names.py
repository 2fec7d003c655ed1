"""Kubernetes naming rules: label keys and values, DNS names, and label-safe values.

The checks follow kube-apiserver's, message for message (the wording of Kubernetes 1.31, the
release the lab reports): ``staging/src/k8s.io/apimachinery/pkg/util/validation/validation.go``
(``IsQualifiedName``, ``IsValidLabelValue``, ``IsDNS1123Label``, ``IsDNS1123Subdomain``,
``IsDNS1035Label``, ``MaxLenError``, ``RegexError``); newer releases moved them to
``pkg/api/validate/content`` and say "bytes" where 1.31 says "characters". Each check returns
the list of problems, empty when the value is valid.

:func:`label_safe_value` and :func:`label_safe_values` turn any text (a MetalLB pool name may
be a 253-character DNS subdomain) into a valid label value: the text itself when it is one,
else a readable prefix and a short stable hash [real-clusters §5].
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

LABEL_VALUE_MAX_LENGTH = 63
QUALIFIED_NAME_MAX_LENGTH = 63
DNS1123_LABEL_MAX_LENGTH = 63
DNS1123_SUBDOMAIN_MAX_LENGTH = 253
DNS1035_LABEL_MAX_LENGTH = 63

_QNAME_FMT = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_QNAME_MSG = ("must consist of alphanumeric characters, '-', '_' or '.', and must start and end"
              " with an alphanumeric character")
_LABEL_VALUE_FMT = f"({_QNAME_FMT})?"
_LABEL_VALUE_MSG = ("a valid label must be an empty string or consist of alphanumeric"
                    " characters, '-', '_' or '.', and must start and end with an alphanumeric"
                    " character")
_DNS1123_LABEL_FMT = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric"
                      " characters or '-', and must start and end with an alphanumeric character")
_DNS1123_SUBDOMAIN_FMT = f"{_DNS1123_LABEL_FMT}(\\.{_DNS1123_LABEL_FMT})*"
_DNS1123_SUBDOMAIN_MSG = ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric"
                          " characters, '-' or '.', and must start and end with an alphanumeric"
                          " character")
_DNS1035_LABEL_FMT = "[a-z]([-a-z0-9]*[a-z0-9])?"
_DNS1035_LABEL_MSG = ("a DNS-1035 label must consist of lower case alphanumeric characters or"
                      " '-', start with an alphabetic character, and end with an alphanumeric"
                      " character")

# Go's regexp.MatchString with ^...$ anchors; Python's fullmatch is the same test (and "$"
# in Python would accept a trailing newline, which Go's does not).
_QNAME = re.compile(_QNAME_FMT)
_LABEL_VALUE = re.compile(_LABEL_VALUE_FMT)
_DNS1123_LABEL = re.compile(_DNS1123_LABEL_FMT)
_DNS1123_SUBDOMAIN = re.compile(_DNS1123_SUBDOMAIN_FMT)
_DNS1035_LABEL = re.compile(_DNS1035_LABEL_FMT)


def _size(value: str) -> int:
    """Go's ``len``: bytes of the UTF-8 text."""
    return len(value.encode("utf-8"))


def max_len_error(length: int) -> str:
    """``MaxLenError``."""
    return f"must be no more than {length} characters"


def regex_error(message: str, fmt: str, *examples: str) -> str:
    """``RegexError``: the message, its examples, and the regex used."""
    if not examples:
        return f"{message} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{example}', " for example in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{fmt}')"


EMPTY_ERROR = "must be non-empty"


def label_value_errors(value: str) -> list[str]:
    """``IsValidLabelValue``: at most 63 characters of ``(([A-Za-z0-9][-A-Za-z0-9_.]*)?
    [A-Za-z0-9])?``."""
    errors = []
    if _size(value) > LABEL_VALUE_MAX_LENGTH:
        errors.append(max_len_error(LABEL_VALUE_MAX_LENGTH))
    if not _LABEL_VALUE.fullmatch(value):
        errors.append(regex_error(_LABEL_VALUE_MSG, _LABEL_VALUE_FMT, "MyValue", "my_value",
                                  "12345"))
    return errors


def is_label_value(value: str) -> bool:
    """Whether the API server stores this as a label value."""
    return not label_value_errors(value)


def qualified_name_errors(value: str) -> list[str]:
    """``IsQualifiedName``: label keys (and annotation keys, lowercased; finalizers): an
    optional DNS-1123 subdomain prefix and ``/``, then a name of at most 63 characters."""
    errors: list[str] = []
    parts = value.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part " + EMPTY_ERROR)
        else:
            errors += ["prefix part " + e for e in dns1123_subdomain_errors(prefix)]
    else:
        return [
            "a qualified name "
            + regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errors.append("name part " + EMPTY_ERROR)
    elif _size(name) > QUALIFIED_NAME_MAX_LENGTH:
        errors.append("name part " + max_len_error(QUALIFIED_NAME_MAX_LENGTH))
    if not _QNAME.fullmatch(name):
        errors.append("name part " + regex_error(_QNAME_MSG, _QNAME_FMT, "MyName", "my.name",
                                                 "123-abc"))
    return errors


def dns1123_label_errors(value: str) -> list[str]:
    """``IsDNS1123Label`` (Namespace names)."""
    errors = []
    if _size(value) > DNS1123_LABEL_MAX_LENGTH:
        errors.append(max_len_error(DNS1123_LABEL_MAX_LENGTH))
    if not _DNS1123_LABEL.fullmatch(value):
        if _DNS1123_SUBDOMAIN.fullmatch(value):
            errors.append("must not contain dots")
        else:
            errors.append(regex_error(_DNS1123_LABEL_MSG, _DNS1123_LABEL_FMT, "my-name",
                                      "123-abc"))
    return errors


def dns1123_subdomain_errors(value: str) -> list[str]:
    """``IsDNS1123Subdomain`` (most object names, custom resources included)."""
    errors = []
    if _size(value) > DNS1123_SUBDOMAIN_MAX_LENGTH:
        errors.append(max_len_error(DNS1123_SUBDOMAIN_MAX_LENGTH))
    if not _DNS1123_SUBDOMAIN.fullmatch(value):
        errors.append(regex_error(_DNS1123_SUBDOMAIN_MSG, _DNS1123_SUBDOMAIN_FMT,
                                  "example.com"))
    return errors


def dns1035_label_errors(value: str) -> list[str]:
    """``IsDNS1035Label`` (Service names)."""
    errors = []
    if _size(value) > DNS1035_LABEL_MAX_LENGTH:
        errors.append(max_len_error(DNS1035_LABEL_MAX_LENGTH))
    if not _DNS1035_LABEL.fullmatch(value):
        errors.append(regex_error(_DNS1035_LABEL_MSG, _DNS1035_LABEL_FMT, "my-name",
                                  "abc-123"))
    return errors


# --------------------------------------------------------------------------- label-safe values

HASH_DIGITS = 8
"""Hex digits of sha256 a shortened value ends with (32 bits: collisions are resolved anyway)."""
_NOT_LABEL_CHAR = re.compile(r"[^-A-Za-z0-9_.]")
_EDGE = re.compile(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$")


def _digest(text: str, digits: int) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:digits]


def label_safe_value(text: str, *, digits: int = HASH_DIGITS) -> str:
    """A valid label value standing for ``text``: the text itself when it is one, else its
    first characters (other characters made ``-``, cut to leave room for the hash, trimmed to
    start and end alphanumeric), ``-``, and ``digits`` hex digits of its sha256.

    Deterministic, at most 63 characters, and two different texts that are not valid values
    themselves share a result only when their hashes' first ``digits`` digits agree (see
    :func:`label_safe_values` for a mapping that is collision-free).
    """
    if is_label_value(text):
        return text
    digest = _digest(text, digits)
    room = LABEL_VALUE_MAX_LENGTH - len(digest) - 1
    prefix = _EDGE.sub("", _NOT_LABEL_CHAR.sub("-", text)[:room])
    return f"{prefix}-{digest}" if prefix else digest


def label_safe_values(texts: Iterable[str]) -> dict[str, str]:
    """Each text → a valid label value, collision-free across the texts.

    Valid values stand for themselves; the others get :func:`label_safe_value`, with a longer
    hash (and a shorter prefix) for any that would meet a value already taken, processed in
    sorted order so that the result depends only on the set of texts.
    """
    unique = sorted(set(texts))
    out = {text: text for text in unique if is_label_value(text)}
    taken = set(out.values())
    for text in unique:
        if text in out:
            continue
        for digits in range(HASH_DIGITS, 61, 4):
            value = label_safe_value(text, digits=digits)
            if value not in taken:
                break
        else:  # pragma: no cover - needs a sha256 collision
            raise ValueError(f"no distinct label value for {text!r}")
        out[text] = value
        taken.add(value)
    return out


def subdomain_safe(name: str, *, digits: int = HASH_DIGITS) -> str:
    """A name of at most 253 characters standing for a longer DNS subdomain: its first
    characters (trimmed to end alphanumeric), ``-`` and ``digits`` hex digits of its sha256.
    A name that fits is returned as it is."""
    if len(name) <= DNS1123_SUBDOMAIN_MAX_LENGTH:
        return name
    room = DNS1123_SUBDOMAIN_MAX_LENGTH - digits - 1
    return f"{name[:room].rstrip('-.')}-{_digest(name, digits)}"
