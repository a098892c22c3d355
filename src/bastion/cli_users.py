"""`bastion users …`: console accounts from the command line."""

from __future__ import annotations

import sys
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from bastion.accounts import users as accounts
from bastion.cli_setup import prepared_settings, run_in_transaction

T = TypeVar("T")

app = typer.Typer(help="Console users.", no_args_is_help=True)


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    password: str = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    return password


@app.command("add")
def add(
    username: str,
    admin: Annotated[bool, typer.Option("--admin", help="Global administrator.")] = False,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
) -> None:
    """Create a user."""
    settings = prepared_settings()
    password = _read_password(password_stdin)
    user = run_in_transaction(
        settings, lambda s: accounts.create_user(s, username, password, is_admin=admin)
    )
    typer.echo(f"created user {user.username!r}{' (admin)' if admin else ''}")


@app.command("passwd")
def passwd(
    username: str,
    password_stdin: Annotated[bool, typer.Option(help="Read the password from stdin.")] = False,
) -> None:
    """Set a user's password."""
    settings = prepared_settings()
    password = _read_password(password_stdin)
    user = run_in_transaction(settings, lambda s: accounts.set_password(s, username, password))
    typer.echo(f"password changed for {user.username!r}")


@app.command("disable")
def disable(username: str) -> None:
    """Stop a user from signing in (open sessions run to their timeout)."""
    user = run_in_transaction(
        prepared_settings(), lambda s: accounts.set_disabled(s, username, True)
    )
    typer.echo(f"disabled {user.username!r}")


@app.command("enable")
def enable(username: str) -> None:
    """Allow a disabled user to sign in again."""
    user = run_in_transaction(
        prepared_settings(), lambda s: accounts.set_disabled(s, username, False)
    )
    typer.echo(f"enabled {user.username!r}")


@app.command("list")
def list_() -> None:
    """List users."""
    users = run_in_transaction(prepared_settings(), accounts.list_users)
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
