"""The overview at `/`: pools, runs of the last 24 hours, open alerts, security events."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from bastion.audit.search import recent_security
from bastion.db.types import utcnow
from bastion.runs import stats
from bastion.vault import alerts
from bastion.web.console import pools
from bastion.web.console._page import Viewer, page, render

ALERTS_SHOWN = 20
EVENTS_SHOWN = 10


@page()
async def overview(request: Request, viewer: Viewer) -> Response:
    services = request.state.services
    counts = await stats.hourly_counts(services.db, viewer.scope, utcnow(), 24)
    async with services.db.session() as session:
        open_alerts = await alerts.list_alerts(session, viewer.scope)
    events = await recent_security(services.db, EVENTS_SHOWN) if viewer.is_admin else []
    return render(
        request,
        viewer,
        "console/overview.html",
        title="Overview",
        pools=await pools.summaries(request, viewer),
        counts=counts,
        chart=counts.as_dict(),
        alerts=open_alerts[:ALERTS_SHOWN],
        more_alerts=max(0, len(open_alerts) - ALERTS_SHOWN),
        events=events,
    )
