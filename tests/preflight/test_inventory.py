"""Reading versions, flags and durations out of the objects of real clusters."""

from __future__ import annotations

import pytest

from migrate.preflight.inventory import flag_value, go_duration_seconds, image_tag, parse_version


@pytest.mark.parametrize(("image", "tag"), [
    ("quay.io/cilium/cilium:v1.18.4", "v1.18.4"),
    ("quay.io/cilium/cilium:v1.18.4@sha256:0123", "v1.18.4"),
    ("registry.local:5000/cilium/cilium:v1.17.0", "v1.17.0"),
    ("registry.local:5000/cilium/cilium", None),
    ("quay.io/cilium/cilium@sha256:0123", None),
])
def test_image_tag(image: str, tag: str | None) -> None:
    assert image_tag(image) == tag


@pytest.mark.parametrize(("text", "version"), [
    ("v1.18.2", (1, 18, 2)), ("1.19", (1, 19, 0)), ("v1.18.0-pre.3", (1, 18, 0)),
    ("latest", None), ("", None),
])
def test_parse_version(text: str, version: tuple[int, int, int] | None) -> None:
    assert parse_version(text) == version


@pytest.mark.parametrize(("text", "seconds"), [
    ("5s", 5.0), ("500ms", 0.5), ("1m30s", 90.0), ("1.5s", 1.5), ("5", None), ("soon", None),
    (None, None),
])
def test_go_duration(text: str | None, seconds: float | None) -> None:
    assert go_duration_seconds(text) == seconds


@pytest.mark.parametrize(("args", "value"), [
    (["--lb-class=metallb"], "metallb"),
    (["/controller", "--lb-class", "metallb"], "metallb"),
    (["-lb-class=x"], "x"),
    (["--lb-classes=x"], None),
    (["--lb-class"], None),
])
def test_flag_value(args: list[str], value: str | None) -> None:
    assert flag_value(args, "lb-class") == value
