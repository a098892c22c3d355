"""Trigger errors; each maps onto an HTTP answer through bastion.errors' base classes."""

from __future__ import annotations

from typing import Any

from bastion.errors import InvalidInput, Unauthenticated, Unprocessable


class InvalidTrigger(InvalidInput):
    """A trigger, schedule or retry policy that cannot be accepted; the message says why."""


class SignatureInvalid(Unauthenticated):
    """A webhook failed authentication. The message names the check that failed (missing
    or malformed header, stale or future timestamp, mismatch), never a header's value."""


class DispatchBlocked(Unprocessable):
    """A credential the workflow version uses is unhealthy: no run is created."""

    def __init__(self, credentials: list[str]) -> None:
        super().__init__(
            "unhealthy credentials block this workflow: " + ", ".join(sorted(credentials))
        )
        self.credentials = sorted(credentials)

    def details(self) -> dict[str, Any]:
        return {"credentials": self.credentials}  # names only, so the caller can fix them
