"""Fixtures of the test wire (network namespaces, ARP responders), from ``tests/wire.py``."""

from tests.wire import responders, wire

__all__ = ["responders", "wire"]
