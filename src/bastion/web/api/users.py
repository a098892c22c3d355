"""/api/v1/users: console accounts (administrators only)."""

from __future__ import annotations

import logging
from datetime import datetime

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from bastion.accounts.users import list_users
from bastion.db.tables import User
from bastion.web import auditing
from bastion.web.api.principals import Admin

router = APIRouter(prefix="/users", tags=["users"])
security_log = logging.getLogger("bastion.security.api")


class UserOut(BaseModel):
    id: int
    username: str
    is_admin: bool
    disabled: bool
    created_at: datetime


@router.get("")
async def list_(principal: Admin, request: Request) -> list[UserOut]:
    async with request.state.services.db.session() as session:
        users = await list_users(session)
    return [
        UserOut(
            id=u.id,
            username=u.username,
            is_admin=u.is_admin,
            disabled=u.disabled,
            created_at=u.created_at,
        )
        for u in users
    ]


@router.delete("/{user_id}/sessions", status_code=204)
async def end_sessions(user_id: int, principal: Admin, request: Request) -> Response:
    """End every console session of a user, on every server sharing the store."""
    services = request.state.services
    async with services.db.session() as session:
        if await session.get(User, user_id) is None:
            raise HTTPException(404, f"no user {user_id}")
    await services.sessions.end_all_for(user_id)
    security_log.info("%r ended all sessions of user %s", principal.username, user_id)
    await auditing.record(
        request, "auth.sessions_ended", f"user:{principal.username}", target=f"user:{user_id}"
    )
    return Response(status_code=204)
