"""The application factory and its lifespan.

The outer application is plain Starlette: health checks, and later the console, webhook
ingress and CSP reports, answer without FastAPI's per-request machinery (measured: about
a third of the throughput of a bare endpoint). The JSON API is a FastAPI app mounted at
/api/v1, where validation and the OpenAPI document earn their cost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import ASGIApp

from bastion.audit.export import Shipper, configured_exporters
from bastion.audit.log import AuditLog
from bastion.background import BackgroundService, Supervisor
from bastion.config import Settings
from bastion.db import Database
from bastion.execution.dispatcher import Dispatcher
from bastion.execution.factory import background_of, dispatcher_of, executor_of, open_engine
from bastion.execution.sandbox import Sandbox
from bastion.rotation.service import Rotation, open_rotation
from bastion.runs.signals import RunSignals
from bastion.stores import Stores, open_stores
from bastion.triggers.gate import Gate
from bastion.triggers.retry import RetryPlanner, RetryPolicies
from bastion.triggers.scheduler import Scheduler
from bastion.triggers.store import Triggers
from bastion.triggers.webhook import Webhooks
from bastion.vault.credentials import Vault, VaultLimits
from bastion.vault.health import HealthChecker
from bastion.web import console, csp_report, health, hooks, metrics
from bastion.web.api import create_api
from bastion.web.auth import routes as auth_routes
from bastion.web.auth.captcha import new_answer
from bastion.web.auth.credentials import CredentialChecker
from bastion.web.auth.sessions import SessionManager
from bastion.web.auth.throttle import LoginThrottle
from bastion.web.console_assets import ConsoleAssets
from bastion.web.errors import install_error_handlers
from bastion.web.middleware.client_ip import ClientIPMiddleware
from bastion.web.middleware.request_context import RequestContextMiddleware
from bastion.web.middleware.security_headers import SecurityHeadersMiddleware
from bastion.web.static_files import CachedStaticFiles
from bastion.web.templates import STATIC_DIR
from bastion.workflows.store import Workflows

log = logging.getLogger("bastion.app")
SWEEP_SECONDS = 60  # OAuth2 refresh ahead of expiry, alerts, expired rollback versions
FAILURE_REPORT_SECONDS = 60  # failed webhook authentications: one audit record per minute
PRUNE_SECONDS = 3600


@dataclass
class Services:
    """What request handlers reach through `request.state.services`."""

    settings: Settings
    db: Database
    stores: Stores
    sessions: SessionManager
    throttle: LoginThrottle
    credentials: CredentialChecker
    captcha_answers: Callable[[], str]
    audit: AuditLog
    vault: Vault
    health: HealthChecker
    workflows: Workflows
    dispatcher: Dispatcher
    signals: RunSignals
    sandbox: Sandbox
    gate: Gate
    triggers: Triggers
    retry_policies: RetryPolicies
    webhooks: Webhooks
    scheduler: Scheduler
    rotation: Rotation | None = None  # None: no pools configured


class BastionApp(Starlette):
    def __init__(self, *, trust_count: int, **kwargs: object) -> None:
        self.trust_count = trust_count
        super().__init__(**kwargs)  # type: ignore[arg-type]

    def build_middleware_stack(self) -> ASGIApp:
        # Ours wrap Starlette's own error middleware, so its 500s also get the security
        # headers and the request id. Order, outermost first: client address (needed by
        # HSTS), security headers, request id + last-resort error handler.
        inner = super().build_middleware_stack()
        return ClientIPMiddleware(
            SecurityHeadersMiddleware(RequestContextMiddleware(inner)),
            trust_count=self.trust_count,
        )


def _vault_and_audit_services(
    settings: Settings, audit: AuditLog, checker: HealthChecker
) -> list[BackgroundService]:
    exporters = configured_exporters(
        jsonl_path=settings.audit_jsonl_path,
        jsonl_max_bytes=settings.audit_jsonl_max_bytes,
        syslog_url=settings.audit_syslog_url,
        syslog_format=settings.audit_syslog_format,
        syslog_ca_file=settings.audit_syslog_ca_file,
        http_url=settings.audit_http_url,
    )
    services = [
        BackgroundService(f"audit-export-{e.name}", Shipper(audit, e).run) for e in exporters
    ]

    async def sweep_credentials() -> None:
        while True:
            await asyncio.sleep(SWEEP_SECONDS)
            await checker.sweep()

    services.append(BackgroundService("credential-health", sweep_credentials))
    return services


def _trigger_services(scheduler: Scheduler, webhooks: Webhooks) -> list[BackgroundService]:
    async def report_failures() -> None:
        while True:
            await asyncio.sleep(FAILURE_REPORT_SECONDS)
            await webhooks.report_failures()

    async def prune_deliveries() -> None:
        while True:
            await asyncio.sleep(PRUNE_SECONDS)
            await webhooks.prune()

    return [
        BackgroundService("scheduler", scheduler.run),
        BackgroundService("webhook-auth-failures", report_failures),
        BackgroundService("webhook-dedup-prune", prune_deliveries),
    ]


def create_app(
    settings: Settings,
    *,
    background: Sequence[BackgroundService] = (),
    captcha_answers: Callable[[], str] = new_answer,
) -> BastionApp:
    """The application. `captcha_answers` exists so tests can know the answers they must
    type; there is deliberately no setting that changes it."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Services]]:
        db = Database(settings.effective_database_url)
        stores = open_stores(settings.redis_url.get_secret_value() if settings.redis_url else None)
        audit = AuditLog(db, settings.keyring(), fail_closed=settings.audit_fail_closed)
        vault = Vault(db, audit.keyring, audit, VaultLimits.of(settings))
        checker = HealthChecker(
            vault, margin=timedelta(seconds=settings.oauth_refresh_margin_seconds)
        )
        signals = RunSignals()
        try:
            async with AsyncExitStack() as stack:
                execution = await stack.enter_async_context(
                    open_engine(settings, db, vault, signals=signals, retries=RetryPlanner(audit))
                )
                # Probed once, off the loop: it starts a process, and logs a missing layer.
                await asyncio.to_thread(lambda: execution.sandbox.isolation)
                executor = executor_of(settings, execution.engine)
                stack.push_async_callback(executor.stop)
                dispatcher = dispatcher_of(settings, execution, executor)
                gate = Gate(dispatcher, audit)
                triggers = Triggers(db)
                webhooks = Webhooks(
                    gate, triggers, execution.workflows, vault, stores.limiter, audit
                )
                scheduler = Scheduler(gate)
                rotation = open_rotation(settings, db, audit)
                if rotation is not None:
                    stack.push_async_callback(rotation.aclose)
                    await rotation.prepare()
                supervisor = Supervisor(
                    [
                        *background,
                        *_vault_and_audit_services(settings, audit, checker),
                        *background_of(execution.engine, dispatcher),
                        *_trigger_services(scheduler, webhooks),
                        *(rotation.background() if rotation is not None else []),
                    ]
                )
                await supervisor.start()
                stack.push_async_callback(supervisor.stop)
                log.info(
                    "bastion ready (database: %s, stores: %s, executor: %s)",
                    db.dialect,
                    stores.backend,
                    executor.name,
                )
                # Lifespan state: the server copies it into every request's scope, mounted
                # apps included.
                yield {
                    "services": Services(
                        settings=settings,
                        db=db,
                        stores=stores,
                        sessions=SessionManager(
                            stores.kv,
                            idle_seconds=settings.session_idle_minutes * 60,
                            absolute_seconds=settings.session_absolute_hours * 3600,
                        ),
                        throttle=LoginThrottle(
                            stores.limiter, max_failures=settings.login_max_failures
                        ),
                        credentials=CredentialChecker(db),
                        captcha_answers=captcha_answers,
                        audit=audit,
                        vault=vault,
                        health=checker,
                        workflows=execution.workflows,
                        dispatcher=dispatcher,
                        signals=signals,
                        sandbox=execution.sandbox,
                        gate=gate,
                        triggers=triggers,
                        retry_policies=RetryPolicies(db),
                        webhooks=webhooks,
                        scheduler=scheduler,
                        rotation=rotation,
                    )
                }
        finally:
            await stores.aclose()
            await db.dispose()
            log.info("bastion stopped")

    app = BastionApp(
        trust_count=settings.proxy_trust_count,
        routes=[
            *health.routes,
            *auth_routes.routes,
            *console.routes,
            *csp_report.routes,
            *metrics.routes,
            *hooks.routes,
            Mount(
                "/static",
                app=CachedStaticFiles(
                    directory=str(STATIC_DIR), cache_control="public, max-age=3600"
                ),
            ),
            Mount("/app", app=ConsoleAssets()),
            Mount("/api/v1", app=create_api()),
        ],
        lifespan=lifespan,
    )
    install_error_handlers(app)
    return app
