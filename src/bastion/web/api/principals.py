"""Who is calling the API: a Bearer API token, or a console session plus its CSRF token."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import Depends, Request
from starlette.exceptions import HTTPException

from bastion.accounts.rbac import Permission, Principal
from bastion.accounts.tokens import authenticate
from bastion.accounts.workspaces import roles_of
from bastion.errors import NotFound, PermissionDenied
from bastion.web import auditing
from bastion.web.access import Access
from bastion.web.auth.csrf import SAFE_METHODS, origin_problem, token_problem
from bastion.web.auth.guard import current_session
from bastion.web.middleware.client_ip import client_ip

security_log = logging.getLogger("bastion.security.api")

_BEARER = {"WWW-Authenticate": "Bearer"}


async def _principal(request: Request) -> Principal:
    services = request.state.services
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, presented = authorization.partition(" ")
        if scheme.lower() != "bearer" or not presented:
            raise HTTPException(401, "use Authorization: Bearer <token>", headers=_BEARER)
        async with services.db.transaction() as session:
            principal = await authenticate(session, presented.strip())
        if principal is None:
            security_log.warning("API token refused from %s", client_ip(request))
            raise HTTPException(401, "invalid, expired or revoked token", headers=_BEARER)
        return principal
    console = await current_session(request)
    if console is None:
        raise HTTPException(401, "sign in or present an API token", headers=_BEARER)
    # A cookie rides along on cross-site requests; the header token and the Origin
    # check are what prove the console page itself sent this.
    if request.method not in SAFE_METHODS:
        problem = origin_problem(request) or token_problem(
            console.csrf_token, request.headers.get("x-csrf-token")
        )
        if problem is not None:
            security_log.warning("API call refused for %r: %s", console.username, problem)
            await auditing.record(
                request,
                "auth.csrf_rejected",
                f"user:{console.username}",
                target=request.url.path,
                outcome="denied",
                reason=problem,
            )
            raise HTTPException(403, problem)
    async with services.db.session() as session:
        roles = await roles_of(session, console.user_id)
    return Principal(console.user_id, console.username, console.is_admin, roles)


class Requires:
    """Dependency: the caller must be authenticated and, for a permission, hold it in the
    workspace named by the request's `workspace_id` (path or query)."""

    def __init__(self, access: Access) -> None:
        if access == "public":
            raise ValueError("public API routes need no Requires dependency")
        self.access = access

    async def __call__(self, request: Request) -> Principal:
        principal = await _principal(request)
        if isinstance(self.access, Permission):
            raw = request.path_params.get("workspace_id") or request.query_params.get(
                "workspace_id"
            )
            if raw is None or not str(raw).isdigit():
                raise HTTPException(400, "workspace_id is required")
            if not principal.can(self.access, int(raw)):
                raise HTTPException(403, f"missing permission {self.access.value}")
        return principal


def authorize_in(
    principal: Principal, workspace_id: int, permission: Permission, what: str
) -> None:
    """For routes that learn the workspace from the resource they address: a caller with
    no role there is told `what` does not exist, so ids cannot be probed across tenants;
    one with a role but not the permission is refused."""
    if not principal.is_admin and workspace_id not in principal.roles:
        raise NotFound(f"no {what}")
    if not principal.can(permission, workspace_id):
        raise PermissionDenied(f"missing permission {permission.value}")


async def _admin(principal: Annotated[Principal, Depends(Requires("signed-in"))]) -> Principal:
    if not principal.is_admin:
        raise HTTPException(403, "administrators only")
    return principal


Admin = Annotated[Principal, Depends(_admin)]
