"""The server log (administrators): search and a day, month, year or custom time range.

Every line is hostile text (it holds what clients sent): logs.py escaped control
characters when writing it, and the template escapes it again for HTML.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from starlette.requests import Request
from starlette.responses import Response

from bastion import logview
from bastion.errors import InvalidInput
from bastion.web.console._page import (
    Viewer,
    link,
    page,
    query_choice,
    query_text,
    query_time,
    render,
)

PERIODS = ("day", "month", "year", "custom")


def period_range(request: Request) -> tuple[datetime | None, datetime | None]:
    """The [since, until) range the period fields describe, in UTC."""
    period = query_choice(request, "period", PERIODS)
    try:
        if period == "day" and (day := query_text(request, "day", 10)):
            start = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
            return start, _next(start, "day")
        if period == "month" and (month := query_text(request, "month", 7)):
            start = datetime.strptime(month, "%Y-%m").replace(tzinfo=UTC)
            return start, _next(start, "month")
        if period == "year" and (year := query_text(request, "year", 4)):
            start = datetime(int(year), 1, 1, tzinfo=UTC)
            return start, _next(start, "year")
    except ValueError:
        raise InvalidInput(f"the {period} is not a valid date") from None
    if period == "custom":
        return query_time(request, "since"), query_time(request, "until")
    return None, None


def _next(start: datetime, unit: str) -> datetime:
    if unit == "day":
        return datetime.fromordinal(start.toordinal() + 1).replace(tzinfo=UTC)
    if unit == "month":
        year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
        return start.replace(year=year, month=month)
    return start.replace(year=start.year + 1)


@page(admin=True)
async def logs_page(request: Request, viewer: Viewer) -> Response:
    since, until = period_range(request)
    fields = {
        "q": query_text(request, "q"),
        "level": query_choice(request, "level", logview.LEVELS),
        "period": query_choice(request, "period", PERIODS),
        "day": query_text(request, "day", 10),
        "month": query_text(request, "month", 7),
        "year": query_text(request, "year", 4),
        "since": query_text(request, "since", 40),
        "until": query_text(request, "until", 40),
    }
    query = logview.LogQuery(
        fields["q"], fields["level"], since, until, query_text(request, "cursor", 40), 200
    )
    log_dir = request.state.services.settings.effective_log_dir
    found = await asyncio.to_thread(logview.read, log_dir, query)
    older = link("/logs", **fields, cursor=found.next_cursor) if found.next_cursor else None
    return render(
        request,
        viewer,
        "console/logs.html",
        title="Logs",
        lines=found.lines,
        fields=fields,
        older=older,
        scanned=found.scanned_bytes,
        levels=logview.LEVELS,
        log_dir=str(log_dir),
        range=(since, until),
    )
