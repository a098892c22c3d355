"""/api/v1/sessions: console sessions, listed and ended one by one.

Everyone sees and ends their own; administrators see and end anyone's. A session is
named by its handle (a hash of its id), never by the cookie value.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel

from bastion.accounts.rbac import Principal
from bastion.accounts.users import list_users
from bastion.errors import NotFound, PermissionDenied
from bastion.web import auditing
from bastion.web.api.principals import Requires
from bastion.web.api.runs import actor_of
from bastion.web.auth.guard import cookie_name
from bastion.web.auth.sessions import SessionInfo, handle_of

router = APIRouter(prefix="/sessions", tags=["sessions"])
security_log = logging.getLogger("bastion.security.api")
SignedIn = Annotated[Principal, Depends(Requires("signed-in"))]
Handle = Annotated[str, Path(pattern="^[0-9a-f]{32}$")]


class SessionOut(BaseModel):
    handle: str
    user_id: int
    username: str
    created_at: datetime
    last_seen: datetime
    client_ip: str
    user_agent: str
    current: bool

    @classmethod
    def of(cls, info: SessionInfo, current: str | None) -> SessionOut:
        return cls(
            handle=info.handle,
            user_id=info.user_id,
            username=info.username,
            created_at=datetime.fromtimestamp(info.created_at, UTC),
            last_seen=datetime.fromtimestamp(info.last_seen, UTC),
            client_ip=info.client_ip,
            user_agent=info.user_agent,
            current=info.handle == current,
        )


def current_handle(request: Request) -> str | None:
    value = request.cookies.get(cookie_name(request.state.services.settings))
    return handle_of(value) if value else None


async def sessions_of(request: Request, principal: Principal, everyone: bool) -> list[SessionInfo]:
    services = request.state.services
    if not everyone:
        return list(await services.sessions.list_for(principal.user_id))
    async with services.db.session() as session:
        users = await list_users(session)
    found: list[SessionInfo] = []
    for user in users:
        found.extend(await services.sessions.list_for(user.id))
    return found


@router.get("")
async def list_(
    principal: SignedIn, request: Request, all_users: Annotated[bool, Query(alias="all")] = False
) -> list[SessionOut]:
    """Your own sessions; `?all=true` (administrators) everyone's."""
    if all_users and not principal.is_admin:
        raise PermissionDenied("administrators only")
    current = current_handle(request)
    found = await sessions_of(request, principal, all_users)
    return [SessionOut.of(info, current) for info in found]


@router.delete("/{handle}", status_code=204)
async def end(
    handle: Handle,
    principal: SignedIn,
    request: Request,
    user_id: Annotated[int | None, Query(ge=1)] = None,
) -> Response:
    """End one session: your own, or (administrators) another user's with `user_id`."""
    owner = principal.user_id if user_id is None else user_id
    if owner != principal.user_id and not principal.is_admin:
        raise PermissionDenied("administrators only")
    if not await request.state.services.sessions.end(owner, handle):
        raise NotFound("no such session")
    security_log.info("%r ended session %s… of user %s", principal.username, handle[:8], owner)
    await auditing.record(
        request,
        "auth.session_ended",
        actor_of(principal),
        target=f"user:{owner}",
        details={"session": handle[:8]},
    )
    return Response(status_code=204)
