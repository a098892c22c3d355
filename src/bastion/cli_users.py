"""`bastion users …`: console accounts from the command line."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.accounts import users as accounts
from bastion.cli_setup import prepared_settings
from bastion.config import Settings
from bastion.db import Database
from bastion.errors import BastionError

T = TypeVar("T")

app = typer.Typer(help="Console users.", no_args_is_help=True)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


def _run(settings: Settings, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
    async def go() -> T:
        db = Database(settings.effective_database_url)
        try:
            async with db.transaction() as session:
                return await work(session)
        finally:
            await db.dispose()

    try:
        return asyncio.run(go())
    except BastionError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("add")
def add(
    username: str,
    admin: Annotated[bool, typer.Option("--admin", help="Global administrator.")] = False,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
) -> None:
    """Create a user."""
    settings = prepared_settings()
    password = _read_password(password_stdin)
    user = _run(settings, lambda s: accounts.create_user(s, username, password, is_admin=admin))
    typer.echo(f"created user {user.username!r}{' (admin)' if admin else ''}")


@app.command("passwd")
def passwd(
    username: str,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
) -> None:
    """Set a user's password."""
    settings = prepared_settings()
    password = _read_password(password_stdin)
    user = _run(settings, lambda s: accounts.set_password(s, username, password))
    typer.echo(f"password changed for {user.username!r}")


@app.command("disable")
def disable(username: str) -> None:
    """Stop a user from signing in (open sessions run to their timeout)."""
    user = _run(prepared_settings(), lambda s: accounts.set_disabled(s, username, True))
    typer.echo(f"disabled {user.username!r}")


@app.command("enable")
def enable(username: str) -> None:
    """Allow a disabled user to sign in again."""
    user = _run(prepared_settings(), lambda s: accounts.set_disabled(s, username, False))
    typer.echo(f"enabled {user.username!r}")


@app.command("list")
def list_() -> None:
    """List users."""
    users = _run(prepared_settings(), accounts.list_users)
    table = Table("user", "admin", "disabled", "created", "password changed")
    for user in users:
        table.add_row(
            user.username,
            "yes" if user.is_admin else "",
            "yes" if user.disabled else "",
            user.created_at.strftime("%Y-%m-%d %H:%M"),
            user.password_changed_at.strftime("%Y-%m-%d %H:%M"),
        )
    Console(width=120).print(table)
