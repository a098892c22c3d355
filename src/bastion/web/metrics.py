"""GET /metrics: Prometheus exposition, for administrators (a session or an API token).

Metrics name exporters, queues and lag: useful to an attacker mapping the deployment,
so they are not public.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bastion.web.access import declare
from bastion.web.api.principals import Requires

_signed_in = Requires("signed-in")


@declare("signed-in")
async def metrics(request: Request) -> Response:
    principal = await _signed_in(request)
    if not principal.is_admin:
        raise HTTPException(403, "administrators only")
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


routes = [Route("/metrics", metrics, methods=["GET"])]
