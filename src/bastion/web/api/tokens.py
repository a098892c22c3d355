"""/api/v1/tokens: a user's API tokens."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from bastion.accounts import tokens
from bastion.accounts.rbac import Principal, Role
from bastion.audit.chain import Event
from bastion.db.tables import ApiToken, User
from bastion.web.api.principals import Requires

router = APIRouter(prefix="/tokens", tags=["tokens"])
SignedIn = Annotated[Principal, Depends(Requires("signed-in"))]


class TokenRequest(BaseModel):
    name: str = Field(min_length=1, max_length=100)
    workspace_id: int = Field(ge=1)
    role: Role
    expires_in_days: int = Field(default=90, ge=1, le=366)


class TokenOut(BaseModel):
    id: int
    name: str
    workspace_id: int
    role: Role
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked: bool

    @classmethod
    def of(cls, record: ApiToken) -> TokenOut:
        return cls(
            id=record.id,
            name=record.name,
            workspace_id=record.workspace_id,
            role=Role(record.role),
            created_at=record.created_at,
            expires_at=record.expires_at,
            last_used_at=record.last_used_at,
            revoked=record.revoked_at is not None,
        )


class NewToken(TokenOut):
    token: str = Field(description="Shown once; Bastion keeps only its hash.")


@router.post("", status_code=201)
async def create(body: TokenRequest, principal: SignedIn, request: Request) -> NewToken:
    # A leaked token must not be able to mint fresh ones that outlive its revocation.
    if principal.token_id is not None:
        raise HTTPException(403, "API tokens are created from a console session")
    async with request.state.services.db.transaction() as session:
        user = await session.get(User, principal.user_id)
        if user is None:
            raise HTTPException(401, "unknown user")
        token, record = await tokens.create_token(
            session,
            user,
            name=body.name,
            workspace_id=body.workspace_id,
            role=body.role,
            lifetime=timedelta(days=body.expires_in_days),
        )
        await request.state.services.audit.append(
            session,
            Event(
                "token.create",
                f"user:{principal.username}",
                target=f"token:{record.id}",
                details={"workspace_id": record.workspace_id, "role": record.role},
            ),
        )
        return NewToken(**TokenOut.of(record).model_dump(), token=token)


@router.get("")
async def list_(principal: SignedIn, request: Request) -> list[TokenOut]:
    async with request.state.services.db.session() as session:
        records = await tokens.list_tokens(
            session, None if principal.is_admin else principal.user_id
        )
    return [TokenOut.of(record) for record in records]


@router.delete("/{token_id}", status_code=204)
async def revoke(token_id: int, principal: SignedIn, request: Request) -> Response:
    async with request.state.services.db.transaction() as session:
        await tokens.revoke_token(session, token_id, by=principal)
        await request.state.services.audit.append(
            session, Event("token.revoke", f"user:{principal.username}", target=f"token:{token_id}")
        )
    return Response(status_code=204)
