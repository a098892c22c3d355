"""The application factory and its lifespan."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI
from starlette.types import ASGIApp

from bastion.background import BackgroundService, Supervisor
from bastion.config import Settings
from bastion.db import Database
from bastion.stores import Stores, open_stores
from bastion.web import health
from bastion.web.errors import install_error_handlers
from bastion.web.middleware.client_ip import ClientIPMiddleware
from bastion.web.middleware.request_context import RequestContextMiddleware
from bastion.web.middleware.security_headers import SecurityHeadersMiddleware

log = logging.getLogger("bastion.app")


@dataclass
class Services:
    settings: Settings
    db: Database
    stores: Stores


class BastionApp(FastAPI):
    trust_count: int = 0

    def build_middleware_stack(self) -> ASGIApp:
        # Ours wrap Starlette's own error middleware, so its 500s also get the security
        # headers and the request id. Order, outermost first: client address (needed by
        # HSTS), security headers, request id + last-resort error handler.
        inner = super().build_middleware_stack()
        return ClientIPMiddleware(
            SecurityHeadersMiddleware(RequestContextMiddleware(inner)),
            trust_count=self.trust_count,
        )


def create_app(settings: Settings, *, background: Sequence[BackgroundService] = ()) -> BastionApp:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.effective_database_url)
        stores = open_stores(settings.redis_url.get_secret_value() if settings.redis_url else None)
        app.state.services = Services(settings=settings, db=db, stores=stores)
        supervisor = Supervisor(background)
        await supervisor.start()
        log.info("bastion ready (database: %s, stores: %s)", db.dialect, stores.backend)
        try:
            yield
        finally:
            await supervisor.stop()
            await stores.aclose()
            await db.dispose()
            log.info("bastion stopped")

    app = BastionApp(
        title="Bastion",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/v1/openapi.json",
        # No OpenTelemetry export: nothing leaves the host unless an operator configures
        # an exporter, and the per-request provider checks cost ~10 µs.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.trust_count = settings.proxy_trust_count
    install_error_handlers(app)
    app.include_router(health.router)
    return app
