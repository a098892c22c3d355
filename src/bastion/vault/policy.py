"""Who may use a credential: the access context of every operation, and the scope policy.

Permissions (rbac.py) say what a role may do in a workspace; the scope policy narrows
it per credential: which workspaces and workflows may use it, and which roles may touch
it. Both are checked on every read, reveal, rotate, update, test and run-time use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from bastion.accounts.rbac import GRANTS, Permission, Principal, Role
from bastion.errors import InvalidInput

ADMIN = "admin"
ROLE_NAMES = frozenset(role.value for role in Role)


@dataclass(frozen=True)
class AccessContext:
    actor: str  # as the audit trail names it: "user:alice", "token:7", "run:…", "cli"
    workspace_id: int
    roles: frozenset[str] = frozenset()  # role names held in workspace_id; "admin" for admins
    workflow_id: str | None = None  # set for run-time use
    client_ip: str = ""
    request_id: str = ""

    @classmethod
    def of(
        cls, principal: Principal, workspace_id: int, *, client_ip: str = "", request_id: str = ""
    ) -> AccessContext:
        role = principal.roles.get(workspace_id)
        roles = {ADMIN} if principal.is_admin else set()
        if role is not None:
            roles.add(role.value)
        actor = f"user:{principal.username}"
        if principal.token_id is not None:
            actor += f" (token {principal.token_id})"
        return cls(actor, workspace_id, frozenset(roles), None, client_ip, request_id)

    def may(self, permission: Permission) -> bool:
        if ADMIN in self.roles:
            return True
        return any(Role(r) in GRANTS[permission] for r in self.roles & ROLE_NAMES)


@dataclass(frozen=True)
class ScopePolicy:
    workspaces: tuple[int, ...] = ()  # besides its own
    workflows: tuple[str, ...] = ()  # empty: any workflow in those workspaces
    roles: tuple[str, ...] = ()  # empty: any role holding the operation's permission

    def __post_init__(self) -> None:
        unknown = set(self.roles) - ROLE_NAMES
        if unknown:
            raise InvalidInput(f"unknown role(s) in scope policy: {', '.join(sorted(unknown))}")

    def refusal(self, home_workspace: int, context: AccessContext) -> str | None:
        """Why `context` is out of scope, or None when it is in scope."""
        if context.workspace_id != home_workspace and context.workspace_id not in self.workspaces:
            return "workspace not in the credential's scope"
        run_time = context.workflow_id is not None
        if run_time and self.workflows and context.workflow_id not in self.workflows:
            return "workflow not in the credential's scope"
        people = not run_time and self.roles and ADMIN not in context.roles
        if people and not context.roles & set(self.roles):
            return "role not in the credential's scope"
        return None

    def to_json(self) -> str:
        return json.dumps(
            {
                "workspaces": list(self.workspaces),
                "workflows": list(self.workflows),
                "roles": list(self.roles),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> ScopePolicy:
        data = json.loads(text)
        return cls(tuple(data["workspaces"]), tuple(data["workflows"]), tuple(data["roles"]))
