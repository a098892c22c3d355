"""The `bastion` command."""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
from pathlib import Path
from typing import Annotated

import typer

from bastion.accounts.users import bootstrap_admin
from bastion.cli_audit import app as audit_app
from bastion.cli_docker_proxy import docker_proxy
from bastion.cli_runs import runs_app
from bastion.cli_setup import prepare, settings_or_exit
from bastion.cli_tokens import tokens_app, workspaces_app
from bastion.cli_users import app as users_app
from bastion.cli_vault import app as vault_app
from bastion.cli_worker import worker
from bastion.cli_workflows import workflows_app
from bastion.config import Settings
from bastion.db import Database
from bastion.db import migrate as migrations

app = typer.Typer(
    name="bastion",
    help="Bastion: a self-hosted, security-hardened orchestrator.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _create_master_key(path: Path) -> None:
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    # O_EXCL: never overwrite an existing key (that would make the vault unreadable);
    # 0600 from the start, so there is no moment where the key is world-readable.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(key + "\n")


async def _bootstrap(settings: Settings) -> str | None:
    db = Database(settings.effective_database_url)
    try:
        password = settings.admin_password.get_secret_value() if settings.admin_password else None
        return await bootstrap_admin(db, settings.admin_user, password)
    finally:
        await db.dispose()


@app.command()
def init() -> None:
    """Prepare the data directory, master key, database and first admin (idempotent)."""
    settings = settings_or_exit(require_master_key=False)
    settings.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if settings.master_key is None and not settings.default_master_key_path.exists():
        _create_master_key(settings.default_master_key_path)
        typer.echo(
            f"created master key {settings.default_master_key_path} (mode 0600); back it up: "
            "without it the vault and the audit chain cannot be read"
        )
    settings = settings_or_exit()
    prepare(settings)
    generated = asyncio.run(_bootstrap(settings))
    if generated is not None:
        typer.echo(
            f"created admin user {settings.admin_user!r}; password (shown once): {generated}"
        )
    typer.echo(f"bastion is initialised in {settings.data_dir}")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to listen on.")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port to listen on.")] = None,
) -> None:
    """Run the server (console, API, webhooks and background services)."""
    from bastion.web import server
    from bastion.web.app import create_app

    settings = settings_or_exit()
    prepare(settings)
    if settings.admin_password is not None:
        asyncio.run(_bootstrap(settings))
    server.run(create_app(settings), host=host or settings.host, port=port or settings.port)


@app.command("check-config")
def check_config() -> None:
    """Validate the configuration; print every problem and exit non-zero if there is one."""
    settings = settings_or_exit()
    database = settings.effective_database_url.split(":", 1)[0]
    stores = "redis" if settings.redis_url else "memory"
    typer.echo(f"configuration OK (database: {database}, stores: {stores})")


app.add_typer(users_app, name="users")
app.add_typer(tokens_app, name="tokens")
app.add_typer(workspaces_app, name="workspaces")
app.add_typer(vault_app, name="vault")
app.add_typer(audit_app, name="audit")
app.add_typer(workflows_app, name="workflows")
app.add_typer(runs_app, name="runs")
app.command("worker")(worker)
app.command("docker-proxy")(docker_proxy)


@app.command()
def migrate() -> None:
    """Apply pending database migrations."""
    settings = settings_or_exit()
    migrations.upgrade(settings.effective_database_url)
    revision = migrations.current_revision(settings.effective_database_url)
    typer.echo(f"database schema at revision {revision}")
