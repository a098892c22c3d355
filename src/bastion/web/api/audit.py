"""/api/v1/audit: reading and verifying the audit trail (administrators only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.exceptions import HTTPException

from bastion.accounts.rbac import Principal
from bastion.audit.chain import checkpoint_from
from bastion.audit.export import as_record, latest_checkpoints
from bastion.audit.verify import verify
from bastion.web.api.principals import Requires

router = APIRouter(prefix="/audit", tags=["audit"])


async def _admin(principal: Annotated[Principal, Depends(Requires("signed-in"))]) -> Principal:
    if not principal.is_admin:
        raise HTTPException(403, "administrators only")
    return principal


Admin = Annotated[Principal, Depends(_admin)]


@router.get("/events")
async def events(
    principal: Admin,
    request: Request,
    after: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Records after seq `after`, oldest first: page by passing the last seq seen."""
    rows = await request.state.services.audit.events(after=after, limit=limit)
    return [as_record(row) for row in rows]


@router.get("/verify")
async def verify_chain(principal: Admin, request: Request) -> dict[str, object]:
    services = request.state.services
    points = []
    if services.settings.audit_jsonl_path is not None:
        for data in await latest_checkpoints(services.settings.audit_jsonl_path):
            try:
                points.append(checkpoint_from(services.audit.keyring, data))
            except ValueError:
                return {"ok": False, "problem": "an exported checkpoint is forged or damaged"}
    verdict = await verify(services.db, services.audit.keyring, points)
    return verdict.as_dict()
