"""Workspaces and who holds which role in them."""

from __future__ import annotations

import re

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.accounts.rbac import Role
from bastion.db.tables import Membership, Workspace
from bastion.errors import Conflict, InvalidInput, NotFound

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")


async def create_workspace(session: AsyncSession, slug: str, name: str | None = None) -> Workspace:
    if not _SLUG.fullmatch(slug):
        raise InvalidInput("workspace slug must be 1-64 characters of a-z, 0-9 and '-'")
    workspace = Workspace(slug=slug, name=(name or slug)[:200])
    session.add(workspace)
    try:
        await session.flush()
    except IntegrityError:
        raise Conflict(f"workspace {slug!r} already exists") from None
    return workspace


async def get_workspace(session: AsyncSession, slug: str) -> Workspace:
    workspace = await session.scalar(select(Workspace).where(Workspace.slug == slug))
    if workspace is None:
        raise NotFound(f"no workspace {slug!r}")
    return workspace


async def grant(session: AsyncSession, user_id: int, workspace_id: int, role: Role) -> None:
    membership = await session.get(Membership, (user_id, workspace_id))
    if membership is None:
        session.add(Membership(user_id=user_id, workspace_id=workspace_id, role=role.value))
    else:
        membership.role = role.value
    await session.flush()


async def roles_of(session: AsyncSession, user_id: int) -> dict[int, Role]:
    rows = await session.execute(
        select(Membership.workspace_id, Membership.role).where(Membership.user_id == user_id)
    )
    return {workspace_id: Role(role) for workspace_id, role in rows}


async def list_workspaces(session: AsyncSession) -> list[Workspace]:
    return list(await session.scalars(select(Workspace).order_by(Workspace.slug)))
