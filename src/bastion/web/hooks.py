"""/hooks/{trigger_id}: webhook ingress (triggers/webhook.py holds the logic).

Plain Starlette, like the health checks: a delivery pays for no FastAPI machinery.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bastion.logs import request_id
from bastion.triggers.webhook import Delivery
from bastion.web.access import declare
from bastion.web.forms import read_body
from bastion.web.middleware.client_ip import client_ip

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@declare("public")  # authenticated by each trigger's signature scheme
async def hook(request: Request) -> JSONResponse:
    webhooks = request.state.services.webhooks
    source_ip = client_ip(request)
    intake = await webhooks.open(request.path_params["trigger_id"], request.method, source_ip)
    body = await read_body(request, intake.settings.max_body_bytes)
    delivery = Delivery(
        method=request.method,
        path=request.url.path,
        query=request.query_params.multi_items(),
        headers={k.decode("latin-1"): v.decode("latin-1") for k, v in request.scope["headers"]},
        body=body,
        source_ip=source_ip,
        request_id=request_id.get(),
    )
    run_id = await webhooks.accept(intake, delivery)
    return JSONResponse({"run_id": run_id}, status_code=202)


routes = [Route("/hooks/{trigger_id}", hook, methods=METHODS)]
