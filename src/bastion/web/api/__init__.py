"""The JSON API under /api/v1 (FastAPI, for validation and the OpenAPI document)."""

from __future__ import annotations

from fastapi import FastAPI

from bastion.web.errors import install_error_handlers


def create_api() -> FastAPI:
    api = FastAPI(
        title="Bastion API",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
        # No OpenTelemetry export: nothing leaves the host unless an operator configures
        # it, and the per-request provider checks cost ~10 µs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    install_error_handlers(api)
    return api
