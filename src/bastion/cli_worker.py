"""`bastion worker`: execute the runs the servers publish to Redis (BASTION_EXECUTOR=celery)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.accounts.workspaces import get_workspace
from bastion.cli_setup import fail, run_in_transaction, settings_or_exit
from bastion.db import migrate as migrations
from bastion.errors import BastionError
from bastion.logs import configure_logging
from bastion.triggers.retry import RetryPlanner


def worker(
    workspace: Annotated[
        list[str] | None,
        typer.Option(
            "--workspace",
            metavar="SLUG",
            help="Slug of a workspace whose runs to execute (repeatable; default: all "
            "workspaces existing at start-up).",
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes (runs executed at once).")
    ] = 2,
) -> None:
    """Execute runs from the Celery queues of some or all workspaces."""
    # Here, not at the top: Celery and the engine load for this command only.
    from bastion.execution.celery_executor import run_worker

    settings = settings_or_exit()
    if settings.executor != "celery":
        fail("the worker needs BASTION_EXECUTOR=celery (with inline, servers execute the runs)")
    if settings.redis_url is None:
        fail("the worker needs a broker: set BASTION_REDIS_URL")
    # Servers migrate; a worker of another release must not move the schema under them.
    try:
        current = migrations.current_revision(settings.effective_database_url)
    except SQLAlchemyError as exc:
        # The class only: a driver's message may quote the URL, password included.
        fail(f"cannot read the database ({type(exc).__name__}); is BASTION_DATABASE_URL right?")
    if current != migrations.head_revision():
        fail(
            f"the database schema is at {current or 'nothing'}, this worker needs "
            f"{migrations.head_revision()}: run `bastion migrate` (or upgrade the worker)"
        )
    configure_logging(
        log_dir=settings.effective_log_dir / "worker",
        level=settings.log_level,
        max_bytes=settings.log_max_bytes,
        backup_count=settings.log_backup_count,
        stream=sys.stderr,
    )
    workspace_ids: list[int] | None = None
    if workspace:
        slugs = list(dict.fromkeys(workspace))

        async def resolve(session: AsyncSession) -> list[int]:
            return [(await get_workspace(session, slug)).id for slug in slugs]

        workspace_ids = run_in_transaction(settings, resolve)
    try:
        run_worker(
            settings, workspaces=workspace_ids, concurrency=concurrency, planner=RetryPlanner
        )
    except BastionError as exc:
        fail(str(exc))
