"""/api/v1/workspaces: the workspaces the caller can see, with the caller's role."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from bastion.accounts.rbac import Principal
from bastion.accounts.workspaces import list_workspaces
from bastion.web.api.principals import Requires

router = APIRouter(prefix="/workspaces", tags=["workspaces"])
SignedIn = Annotated[Principal, Depends(Requires("signed-in"))]


class WorkspaceOut(BaseModel):
    id: int
    slug: str
    name: str
    role: str  # "admin" for administrators without a role of their own there


@router.get("")
async def list_(principal: SignedIn, request: Request) -> list[WorkspaceOut]:
    async with request.state.services.db.session() as session:
        spaces = await list_workspaces(session)
    return [
        WorkspaceOut(
            id=space.id,
            slug=space.slug,
            name=space.name,
            role=principal.roles[space.id].value if space.id in principal.roles else "admin",
        )
        for space in spaces
        if principal.is_admin or space.id in principal.roles
    ]
