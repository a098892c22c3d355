"""API tokens: `bst_` + 32 random bytes, stored only as SHA-256, scoped and expiring.

A token acts for its user, in one workspace, with one role (never more than the user
holds there when it is created), until it expires or is revoked.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.accounts.rbac import GRANTS, Principal, Role
from bastion.db.tables import ApiToken, Membership, User
from bastion.db.types import utcnow
from bastion.errors import InvalidInput, NotFound, PermissionDenied
from bastion.logs import redactor

PREFIX = "bst_"
_SHAPE = re.compile(r"bst_[A-Za-z0-9_-]{43}")
MAX_LIFETIME = timedelta(days=366)
# Recording every use would turn each API call into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def create_token(
    session: AsyncSession,
    user: User,
    *,
    name: str,
    workspace_id: int,
    role: Role,
    lifetime: timedelta,
) -> tuple[str, ApiToken]:
    """Returns the token (shown once, never stored) and its record."""
    if not 0 < len(name.strip()) <= 100:
        raise InvalidInput("token name must be 1-100 characters")
    if not timedelta(0) < lifetime <= MAX_LIFETIME:
        raise InvalidInput("token lifetime must be between 1 day and 366 days")
    if not user.is_admin:
        held = await session.scalar(
            select(Membership.role).where(
                Membership.user_id == user.id, Membership.workspace_id == workspace_id
            )
        )
        # A token never carries more than its user holds in that workspace.
        if held is None or not _covers(Role(held), role):
            raise PermissionDenied("a token cannot have a role its user does not hold")
    token = PREFIX + secrets.token_urlsafe(32)
    record = ApiToken(
        token_hash=token_hash(token),
        name=name.strip(),
        user_id=user.id,
        workspace_id=workspace_id,
        role=role.value,
        expires_at=utcnow() + lifetime,
    )
    session.add(record)
    await session.flush()
    return token, record


def _covers(held: Role, wanted: Role) -> bool:
    """Whether `held` grants every permission `wanted` grants."""
    return all(held in roles for roles in GRANTS.values() if wanted in roles)


async def authenticate(
    session: AsyncSession, token: str, *, now: datetime | None = None
) -> Principal | None:
    """The principal a presented token stands for, or None (malformed, unknown, expired,
    revoked, or its user disabled)."""
    if not _SHAPE.fullmatch(token):
        return None
    now = now or utcnow()
    row = (
        await session.execute(
            select(ApiToken, User)
            .join(User, User.id == ApiToken.user_id)
            .where(ApiToken.token_hash == token_hash(token))
        )
    ).first()
    if row is None:
        return None
    record, user = row
    if record.revoked_at is not None or record.expires_at <= now or user.disabled:
        return None
    if record.last_used_at is None or now - record.last_used_at >= LAST_USED_RESOLUTION:
        record.last_used_at = now
    redactor.register(token)
    return Principal(
        user_id=user.id,
        username=user.username,
        is_admin=False,  # a token acts within its workspace and role, even for an admin
        roles={record.workspace_id: Role(record.role)},
        token_id=record.id,
    )


async def list_tokens(session: AsyncSession, user_id: int | None = None) -> list[ApiToken]:
    query = select(ApiToken).order_by(ApiToken.id)
    if user_id is not None:
        query = query.where(ApiToken.user_id == user_id)
    return list(await session.scalars(query))


async def revoke_token(session: AsyncSession, token_id: int, *, by: Principal) -> ApiToken:
    record = await session.get(ApiToken, token_id)
    # Someone else's token is "not found", not "forbidden": ids reveal nothing.
    if record is None or (record.user_id != by.user_id and not by.is_admin):
        raise NotFound(f"no token {token_id}")
    if record.revoked_at is None:
        record.revoked_at = utcnow()
    return record
