"""/api/v1/audit: reading and verifying the audit trail (administrators only)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.responses import StreamingResponse

from bastion.audit import search as audit_search
from bastion.audit.chain import checkpoint_from, hash_value, to_json
from bastion.audit.export import as_record, latest_checkpoints
from bastion.audit.verify import verify
from bastion.config import Settings
from bastion.db.tables import AuditEvent
from bastion.web import auditing
from bastion.web.api.principals import Admin

router = APIRouter(prefix="/audit", tags=["audit"])


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


class ValueIn(BaseModel):
    value: str = Field(min_length=1, max_length=4096)


@router.post("/hash")
async def hash_(body: ValueIn, principal: Admin, request: Request) -> dict[str, str]:
    """A value as the trail's details hold it (`hmac-sha256:…`), to search for it; the
    value arrives in the body, never in a URL that a log or history would keep."""
    return {"hash": hash_value(request.state.services.audit.keyring, body.value)}


@router.get("/search")
async def search(
    principal: Admin,
    request: Request,
    q: Annotated[str, Query(max_length=200)] = "",
    action: Annotated[str, Query(max_length=64)] = "",
    actor: Annotated[str, Query(max_length=200)] = "",
    outcome: Literal["", "success", "failure", "denied"] = "",
    value_hash: Annotated[str, Query(max_length=80, pattern="^(hmac-sha256:[0-9a-f]{64})?$")] = "",
    since: datetime | None = None,
    until: datetime | None = None,
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Records newest first; pass `next_before` as `before` for older ones."""
    query = audit_search.AuditQuery(
        q, action, actor, outcome, value_hash, since, until, before, limit
    )
    rows = await audit_search.search(request.state.services.db, query)
    return {
        "events": [as_record(row) for row in rows],
        "next_before": rows[-1].seq if len(rows) == limit else None,
    }


EXPORT_BATCH = 1000


@router.get("/export", response_class=StreamingResponse)
async def export(
    principal: Admin,
    request: Request,
    since: datetime | None = None,
    until: datetime | None = None,
) -> StreamingResponse:
    """The records as JSON Lines, oldest first, as a download (the export is audited)."""
    db = request.state.services.db
    await auditing.record(
        request,
        "audit.export",
        f"user:{principal.username}",
        details={"since": str(since or ""), "until": str(until or "")},
    )

    async def lines() -> AsyncIterator[str]:
        after = 0
        while True:
            query = select(AuditEvent).where(AuditEvent.seq > after)
            if since is not None:
                query = query.where(AuditEvent.time >= since)
            if until is not None:
                query = query.where(AuditEvent.time < until)
            async with db.session() as session:
                rows = (
                    await session.scalars(query.order_by(AuditEvent.seq).limit(EXPORT_BATCH))
                ).all()
            if rows:
                yield "".join(to_json(as_record(row)) + "\n" for row in rows)
            if len(rows) < EXPORT_BATCH:
                return
            after = rows[-1].seq

    return StreamingResponse(
        lines(),
        media_type="application/x-ndjson",
        headers={"Content-Disposition": 'attachment; filename="bastion-audit.jsonl"'},
    )


def configured_exporters(settings: Settings) -> list[str]:
    names = []
    if settings.audit_jsonl_path is not None:
        names.append("jsonl")
    if settings.audit_syslog_url:
        names.append(f"syslog-{settings.audit_syslog_format}")
    if settings.audit_http_url:
        names.append("http")
    return names


@router.get("/exporters")
async def exporters(principal: Admin, request: Request) -> list[dict[str, Any]]:
    """Each exporter's delivered seq and lag (records not yet delivered)."""
    services = request.state.services
    found = await audit_search.exporter_status(services.db, configured_exporters(services.settings))
    return [
        {
            "name": status.name,
            "delivered": status.delivered,
            "lag": status.lag,
            "updated_at": status.updated_at,
            "configured": status.configured,
        }
        for status in found
    ]
