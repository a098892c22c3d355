"""POST /csp-report: browsers' Content-Security-Policy violation reports.

Everything in a report is attacker-controlled: the body is capped while it is read, each
address is rate-limited, only known fields are kept (truncated; escaping happens in the
log formatter), and nothing is ever echoed back.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.web import auditing
from bastion.web.access import declare
from bastion.web.forms import read_body
from bastion.web.middleware.client_ip import client_ip

log = logging.getLogger("bastion.security.csp")

MAX_BODY = 8 * 1024
MAX_FIELD = 256
MAX_REPORTS_PER_BODY = 10
REPORTS_PER_IP = "30/minute"

# Legacy `application/csp-report` keys -> Reporting API (camelCase) keys.
_FIELDS = {
    "document-uri": "documentURL",
    "blocked-uri": "blockedURL",
    "violated-directive": "effectiveDirective",
    "effective-directive": "effectiveDirective",
    "source-file": "sourceFile",
    "line-number": "lineNumber",
    "disposition": "disposition",
}
_KEPT = frozenset(_FIELDS.values())


def _clean(report: dict[str, Any], *, legacy: bool) -> dict[str, str]:
    kept: dict[str, str] = {}
    for key, value in report.items():
        name = _FIELDS.get(key) if legacy else (key if key in _KEPT else None)
        if name is not None and isinstance(value, str | int) and not isinstance(value, bool):
            kept[name] = str(value)[:MAX_FIELD]
    return kept


def _reports(content_type: str, body: bytes) -> list[dict[str, str]]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise HTTPException(400, "report is not JSON") from None
    if content_type == "application/csp-report":
        inner = document.get("csp-report") if isinstance(document, dict) else None
        if not isinstance(inner, dict):
            raise HTTPException(400, 'expected {"csp-report": {...}}')
        return [_clean(inner, legacy=True)]
    if not isinstance(document, list):
        raise HTTPException(400, "expected a list of reports")
    return [
        _clean(item["body"], legacy=False)
        for item in document[:MAX_REPORTS_PER_BODY]
        if isinstance(item, dict)
        and item.get("type") == "csp-violation"
        and isinstance(item.get("body"), dict)
    ]


@declare("public")
async def csp_report(request: Request) -> Response:
    services = request.state.services
    address = client_ip(request)
    if not await services.stores.limiter.hit(REPORTS_PER_IP, "csp-report", address):
        raise HTTPException(429, "too many reports", headers={"Retry-After": "60"})
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ("application/csp-report", "application/reports+json"):
        raise HTTPException(415, "expected application/csp-report or application/reports+json")
    body = await read_body(request, MAX_BODY)
    for report in _reports(content_type, body):
        log.warning(
            "CSP violation reported from %s: %s", address, json.dumps(report, sort_keys=True)
        )
        # The fields are already sanitized and truncated by _clean.
        await auditing.record(
            request, "http.csp_violation", "browser", outcome="denied", details=report
        )
    return Response(status_code=204)


routes = [Route("/csp-report", csp_report, methods=["POST"])]
