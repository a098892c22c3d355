"""Shared start-up steps of the CLI commands: validated settings, logging, schema."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.config import ConfigError, LoadedSettings, Settings, load_settings
from bastion.db import Database
from bastion.db import migrate as migrations
from bastion.errors import BastionError
from bastion.logs import configure_logging

EXIT_CONFIG = 2
T = TypeVar("T")


def settings_or_exit(*, require_master_key: bool = True) -> Settings:
    """Load the configuration or exit with every problem listed, one per line."""
    # Everything Bastion writes (database, logs, keys) is for its own user only.
    os.umask(0o077)
    try:
        loaded: LoadedSettings = load_settings(require_master_key=require_master_key)
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    for warning in loaded.warnings:
        typer.echo(f"warning: {warning}", err=True)
    return loaded.settings


def prepared_settings() -> Settings:
    """Validated settings with logging set up and the schema current."""
    settings = settings_or_exit()
    prepare(settings)
    return settings


def prepare(settings: Settings) -> None:
    configure_logging(
        log_dir=settings.effective_log_dir,
        level=settings.log_level,
        max_bytes=settings.log_max_bytes,
        backup_count=settings.log_backup_count,
        stream=None,
    )
    migrations.upgrade(settings.effective_database_url)


def run_with_database(settings: Settings, work: Callable[[Database], Awaitable[T]]) -> T:
    """Run `work` against the database; a Bastion error is one line and exit 1."""

    async def go() -> T:
        db = Database(settings.effective_database_url)
        try:
            return await work(db)
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except BastionError as exc:
        fail(str(exc))


def run_in_transaction(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Run `work` in one database transaction; a Bastion error is one line and exit 1."""

    async def in_transaction(db: Database) -> T:
        async with db.transaction() as session:
            return await work(session)

    return run_with_database(settings, in_transaction)


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then a non-zero exit: how every command reports bad input."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)
