"""Roles and permissions.

`admin` is global; every other role is held per workspace. A permission names the roles
that grant it; admins hold every permission everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    OWNER = "owner"
    OPERATOR = "operator"
    EDITOR = "editor"
    VIEWER = "viewer"


class Permission(StrEnum):
    READ = "read"
    EDIT_WORKFLOWS = "workflows:edit"
    DISPATCH_RUNS = "runs:dispatch"
    CONTROL_ROTATION = "rotation:control"
    MANAGE_CREDENTIALS = "credentials:manage"
    REVEAL_CREDENTIALS = "credentials:reveal"
    MANAGE_WORKSPACE = "workspace:manage"
    MANAGE_OWN_TOKENS = "tokens:own"


GRANTS: dict[Permission, frozenset[Role]] = {
    Permission.READ: frozenset(Role),
    Permission.MANAGE_OWN_TOKENS: frozenset(Role),
    Permission.EDIT_WORKFLOWS: frozenset({Role.OWNER, Role.EDITOR}),
    Permission.DISPATCH_RUNS: frozenset({Role.OWNER, Role.OPERATOR}),
    Permission.CONTROL_ROTATION: frozenset({Role.OWNER, Role.OPERATOR}),
    Permission.MANAGE_CREDENTIALS: frozenset({Role.OWNER, Role.EDITOR}),
    Permission.REVEAL_CREDENTIALS: frozenset({Role.OWNER}),
    Permission.MANAGE_WORKSPACE: frozenset({Role.OWNER}),
}


@dataclass(frozen=True)
class Principal:
    """Who is acting: a console user, or an API token acting for one."""

    user_id: int
    username: str
    is_admin: bool
    roles: dict[int, Role] = field(default_factory=dict)  # workspace id -> role
    token_id: int | None = None

    def can(self, permission: Permission, workspace_id: int) -> bool:
        if self.is_admin:
            return True
        role = self.roles.get(workspace_id)
        return role is not None and role in GRANTS[permission]

    def workspaces(self, permission: Permission = Permission.READ) -> tuple[int, ...] | None:
        """The workspaces where this principal holds `permission`; None means every one."""
        if self.is_admin:
            return None
        return tuple(sorted(ws for ws in self.roles if self.can(permission, ws)))
