"""The error vocabulary shared by every package; web/errors.py maps it onto HTTP answers."""


class BastionError(Exception):
    """Base of every error Bastion raises on purpose."""


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
