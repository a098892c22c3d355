"""Execution assembled from settings: the engine, its executor and the dispatcher.

The server gets all of it; a Celery worker gets the engine only (it executes what the
broker delivers, and the servers dispatch and recover).
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from bastion.background import BackgroundService
from bastion.config import Settings, egress_policy
from bastion.db import Database
from bastion.errors import InvalidInput
from bastion.execution.checkpoints import open_checkpointer
from bastion.execution.dispatcher import (
    QUEUED_GRACE,
    QUEUED_GRACE_BROKERED,
    Dispatcher,
    Executor,
)
from bastion.execution.engine import Engine, EngineLimits, RetryPlanner
from bastion.execution.inline import InlineExecutor
from bastion.execution.sandbox import Sandbox, SandboxLimits
from bastion.runs.ledger import Ledger
from bastion.runs.signals import RunSignals
from bastion.vault.credentials import Vault
from bastion.workflows.nodes.http_request import new_client
from bastion.workflows.store import Workflows


@dataclass(frozen=True)
class Execution:
    engine: Engine
    sandbox: Sandbox
    workflows: Workflows
    ledger: Ledger


def owner_id() -> str:
    """Names this process in run leases (and in logs, when a lease is lost)."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


def engine_limits(settings: Settings) -> EngineLimits:
    return EngineLimits(
        lease=timedelta(seconds=settings.run_lease_seconds),
        max_output_bytes=settings.run_max_output_bytes,
        event_output_bytes=settings.run_event_output_bytes,
        max_steps=settings.run_max_steps,
        max_delay_seconds=settings.node_max_delay_seconds,
    )


def sandbox_of(settings: Settings, *, uid_base: int | None = None) -> Sandbox:
    limits = SandboxLimits(
        cpu_seconds=settings.sandbox_cpu_seconds,
        wall_seconds=settings.sandbox_wall_seconds,
        memory_bytes=settings.sandbox_memory_mib * 2**20,
        max_input_bytes=settings.run_max_output_bytes,
        max_output_bytes=settings.run_max_output_bytes,
    )
    return Sandbox(
        limits,
        max_concurrent=settings.sandbox_concurrency,
        uid_base=settings.sandbox_uid_base if uid_base is None else uid_base,
    )


@asynccontextmanager
async def open_engine(
    settings: Settings,
    db: Database,
    vault: Vault,
    *,
    signals: RunSignals | None = None,
    uid_base: int | None = None,
    retries: RetryPlanner | None = None,
) -> AsyncIterator[Execution]:
    ledger = Ledger(db)
    workflows = Workflows(db)
    sandbox = sandbox_of(settings, uid_base=uid_base)
    async with (
        open_checkpointer(settings.effective_database_url) as checkpointer,
        new_client() as http,
    ):
        engine = Engine(
            ledger=ledger,
            workflows=workflows,
            vault=vault,
            checkpointer=checkpointer,
            egress=egress_policy(settings),
            http=http,
            code=sandbox,
            owner=owner_id(),
            limits=engine_limits(settings),
            signals=signals,
            retries=retries,
        )
        yield Execution(engine, sandbox, workflows, ledger)


def executor_of(settings: Settings, engine: Engine) -> Executor:
    if settings.executor == "celery":
        # Imported here: an inline deployment never loads Celery.
        from bastion.execution.celery_executor import CeleryExecutor, celery_app

        if settings.redis_url is None:  # load_settings refuses this; never fall back inline
            raise InvalidInput("the Celery executor needs a broker: set BASTION_REDIS_URL")
        return CeleryExecutor(celery_app(settings.redis_url.get_secret_value()))
    return InlineExecutor(
        engine,
        concurrency=settings.run_concurrency,
        workspace_concurrency=settings.workspace_concurrency,
    )


def dispatcher_of(settings: Settings, execution: Execution, executor: Executor) -> Dispatcher:
    return Dispatcher(
        execution.ledger.db,
        execution.ledger,
        executor,
        max_input_bytes=settings.run_max_input_bytes,
        queued_grace=QUEUED_GRACE_BROKERED if settings.executor == "celery" else QUEUED_GRACE,
    )


def background_of(engine: Engine, dispatcher: Dispatcher) -> list[BackgroundService]:
    return [
        BackgroundService("run-leases", engine.keep_leases),
        BackgroundService("run-recovery", dispatcher.recover),
    ]
