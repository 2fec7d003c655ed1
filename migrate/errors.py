"""The errors of migrate: one base class and a few a caller can branch on.

Exit codes are mapped in ``migrate/entry.py`` only.
"""

from __future__ import annotations


class MigrateError(Exception):
    """Base of every error migrate raises on purpose."""


class InputError(MigrateError):
    """Input that cannot be read or is invalid; names the file, the object and the field."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        obj: str | None = None,
        field: str | None = None,
    ) -> None:
        self.message = message
        self.source = source
        self.obj = obj
        self.field = field
        super().__init__(self.render())

    def render(self) -> str:
        """One line: where, which object, which field, then what is wrong."""
        where = [part for part in (self.source, self.obj) if part]
        prefix = ": ".join(where)
        if self.field:
            prefix = f"{prefix} field {self.field}" if prefix else f"field {self.field}"
        return f"{prefix}: {self.message}" if prefix else self.message


class NothingToMigrateError(MigrateError):
    """The input holds nothing MetalLB-related."""


class BlockedError(MigrateError):
    """A check blocks the operation (ERROR finding, stale plan, lock held, preflight)."""


class ClusterError(MigrateError):
    """The cluster (API server) failed or refused a request."""


class VerificationError(MigrateError):
    """The result does not hold what was promised (IPs, announcers)."""


class CapabilityError(MigrateError):
    """The process lacks a privilege it needs (for example CAP_NET_RAW for ARP)."""
