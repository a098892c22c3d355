"""The audit trail (administrators): search, filters, verification, export, search by value."""

from __future__ import annotations

import json
import re

from starlette.requests import Request
from starlette.responses import Response

from bastion.audit.chain import OUTCOMES
from bastion.audit.search import AuditQuery, search
from bastion.web.console._page import (
    Viewer,
    link,
    page,
    pretty_json,
    query_choice,
    query_int,
    query_text,
    query_time,
    render,
)

PAGE_SIZE = 50
_HASH = re.compile(r"hmac-sha256:[0-9a-f]{64}")


@page(admin=True)
async def audit_page(request: Request, viewer: Viewer) -> Response:
    value_hash = query_text(request, "value_hash", 80)
    filters = {
        "q": query_text(request, "q"),
        "action": query_text(request, "action", 64),
        "actor": query_text(request, "actor"),
        "outcome": query_choice(request, "outcome", OUTCOMES),
        "value_hash": value_hash if _HASH.fullmatch(value_hash) else "",
        "since": query_text(request, "since", 40),
        "until": query_text(request, "until", 40),
    }
    since, until = query_time(request, "since"), query_time(request, "until")
    rows = await search(
        request.state.services.db,
        AuditQuery(
            filters["q"],
            filters["action"],
            filters["actor"],
            filters["outcome"],
            filters["value_hash"],
            since,
            until,
            query_int(request, "before"),
            PAGE_SIZE,
        ),
    )
    older = link("/audit", **filters, before=rows[-1].seq) if len(rows) == PAGE_SIZE else None
    export = link(
        "/api/v1/audit/export",
        since=since.isoformat() if since else None,
        until=until.isoformat() if until else None,
    )
    return render(
        request,
        viewer,
        "console/audit.html",
        title="Audit",
        events=[(row, pretty_json(json.loads(row.details))) for row in rows],
        filters=filters,
        older=older,
        export=export,
        outcomes=OUTCOMES,
    )
