"""The JSON API under /api/v1 (FastAPI, for validation and the OpenAPI document)."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse

from bastion.web.access import declare
from bastion.web.api import (
    audit,
    credentials,
    live,
    logs,
    rotation,
    runs,
    sessions,
    tokens,
    triggers,
    users,
    workflows,
    workspaces,
)
from bastion.web.errors import install_error_handlers


def create_api() -> FastAPI:
    api = FastAPI(
        title="Bastion API",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, with its access declared like every route
        # No OpenTelemetry export: nothing leaves the host unless an operator configures
        # it, and the per-request provider checks cost ~10 µs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(api)
    api.include_router(tokens.router)
    api.include_router(users.router)
    api.include_router(credentials.router)
    api.include_router(audit.router)
    api.include_router(workflows.router)
    api.include_router(runs.router)
    api.include_router(triggers.router)
    api.include_router(rotation.router)
    api.include_router(live.router)
    api.include_router(sessions.router)
    api.include_router(logs.router)
    api.include_router(workspaces.router)

    @declare("public")
    async def openapi(request: Request) -> JSONResponse:
        return JSONResponse(api.openapi())

    api.add_route("/openapi.json", openapi, include_in_schema=False)
    return api
