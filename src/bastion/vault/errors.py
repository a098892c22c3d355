"""Vault errors; each maps onto an HTTP answer through bastion.errors' base classes."""

from __future__ import annotations

from bastion.errors import Conflict, InvalidInput, NotFound, PermissionDenied


class OutOfScope(PermissionDenied):
    """The access context is outside the credential's scope policy (audited)."""


class DuplicateName(Conflict):
    pass


class SameMaterial(InvalidInput):
    """A rotation must change the secret: re-storing the old value rotates nothing."""


class CredentialNotFound(NotFound):
    pass


class CredentialBlocked(Conflict):
    """The credential is unhealthy: runs that need it are blocked until it is fixed."""
