"""/api/v1/logs: this server's log, newest first (administrators only).

Lines are already redacted and control-escaped when written (logs.py); readers must
still treat them as hostile text.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request

from bastion import logview
from bastion.web.api.principals import Admin

router = APIRouter(tags=["logs"])


@router.get("/logs")
async def read(
    principal: Admin,
    request: Request,
    q: Annotated[str, Query(max_length=200)] = "",
    level: Literal["", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "",
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: Annotated[str, Query(max_length=40)] = "",
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> dict[str, Any]:
    """Matching lines, newest first; pass `next_cursor` as `cursor` for older ones."""
    query = logview.LogQuery(q, level, since, until, cursor, limit)
    page = await asyncio.to_thread(
        logview.read, request.state.services.settings.effective_log_dir, query
    )
    return {
        "lines": [asdict(line) for line in page.lines],
        "next_cursor": page.next_cursor,
        "scanned_bytes": page.scanned_bytes,
    }
