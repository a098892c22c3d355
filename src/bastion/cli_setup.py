"""Shared start-up steps of the CLI commands: validated settings, logging, schema."""

from __future__ import annotations

import os

import typer

from bastion.config import ConfigError, LoadedSettings, Settings, load_settings
from bastion.db import migrate as migrations
from bastion.logs import configure_logging

EXIT_CONFIG = 2


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
