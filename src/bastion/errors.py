"""The error vocabulary shared by every package; web/errors.py maps it onto HTTP answers."""

from collections.abc import Sequence
from typing import Any


class BastionError(Exception):
    """Base of every error Bastion raises on purpose."""

    def headers(self) -> dict[str, str]:
        """Protocol headers the answer must carry (Retry-After, Allow)."""
        return {}

    def details(self) -> dict[str, Any]:
        """Fields the answer carries besides the message; never secret values."""
        return {}


class InvalidInput(BastionError):
    """The caller sent something Bastion will not accept; the message says what."""


class NotFound(BastionError):
    """The thing asked for does not exist (or the caller may not know it exists)."""


class Conflict(BastionError):
    """The request clashes with the current state (a duplicate name, a refused transition)."""


class PermissionDenied(BastionError):
    """The principal is known but not allowed to do this."""


class Unavailable(BastionError):
    """A dependency (database, Redis, docker proxy) cannot be reached right now."""


class Unauthenticated(BastionError):
    """The request did not prove who sent it (a missing or wrong signature or secret)."""


class MethodNotAllowed(BastionError):
    def __init__(self, message: str, allowed: Sequence[str]) -> None:
        super().__init__(message)
        self.allowed = list(allowed)

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class PayloadTooLarge(BastionError):
    pass


class UnsupportedMediaType(BastionError):
    pass


class Unprocessable(BastionError):
    """Well-formed, but the current state refuses it (an unhealthy credential)."""


class TooManyRequests(BastionError):
    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after)}
