"""Every route declares who may call it; a test walks the routes and enforces that.

Starlette endpoints carry the declaration as an attribute set by `declare`; API routes
carry it as their `Requires` dependency, which also enforces it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal, TypeVar

from bastion.accounts.rbac import Permission

Access = Permission | Literal["public", "signed-in"]
F = TypeVar("F", bound=Callable[..., object])


def declare(access: Access) -> Callable[[F], F]:
    def mark(endpoint: F) -> F:
        endpoint.bastion_access = access  # type: ignore[attr-defined]
        return endpoint

    return mark


def declared(endpoint: Callable[..., object]) -> Access | None:
    access: Access | None = getattr(endpoint, "bastion_access", None)
    return access
