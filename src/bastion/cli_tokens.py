"""`bastion tokens …` and `bastion workspaces …`."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.accounts import tokens as api_tokens
from bastion.accounts.rbac import Principal, Role
from bastion.accounts.users import get_user
from bastion.accounts.workspaces import create_workspace, get_workspace, grant, list_workspaces
from bastion.cli_setup import prepared_settings, run_in_transaction
from bastion.db.tables import ApiToken

tokens_app = typer.Typer(help="API tokens.", no_args_is_help=True)
workspaces_app = typer.Typer(help="Workspaces and roles.", no_args_is_help=True)


@tokens_app.command("create")
def create(
    user: Annotated[str, typer.Option(help="The user the token acts for.")],
    workspace: Annotated[str, typer.Option(help="Workspace slug.")],
    role: Annotated[Role, typer.Option(help="Role within the workspace.")],
    name: Annotated[str, typer.Option(help="What the token is for.")],
    days: Annotated[int, typer.Option(min=1, max=366, help="Lifetime in days.")] = 90,
) -> None:
    """Create a token; it is printed once and only its hash is kept."""

    async def work(session: AsyncSession) -> tuple[str, ApiToken]:
        owner = await get_user(session, user)
        space = await get_workspace(session, workspace)
        return await api_tokens.create_token(
            session,
            owner,
            name=name,
            workspace_id=space.id,
            role=role,
            lifetime=timedelta(days=days),
        )

    token, record = run_in_transaction(prepared_settings(), work)
    typer.echo(
        f"token {record.id} for {user!r} in {workspace!r} as {role.value}, "
        f"expires {record.expires_at:%Y-%m-%d}"
    )
    typer.echo(token)


@tokens_app.command("list")
def list_() -> None:
    """List tokens (never their values)."""
    records = run_in_transaction(prepared_settings(), api_tokens.list_tokens)
    table = Table("id", "name", "user", "workspace", "role", "expires", "last used", "revoked")
    for r in records:
        table.add_row(
            str(r.id),
            r.name,
            str(r.user_id),
            str(r.workspace_id),
            r.role,
            f"{r.expires_at:%Y-%m-%d}",
            f"{r.last_used_at:%Y-%m-%d %H:%M}" if r.last_used_at else "",
            "yes" if r.revoked_at else "",
        )
    Console(width=140).print(table)


@tokens_app.command("revoke")
def revoke(token_id: int) -> None:
    """Revoke a token at once."""
    operator = Principal(user_id=0, username="cli", is_admin=True)
    run_in_transaction(
        prepared_settings(), lambda s: api_tokens.revoke_token(s, token_id, by=operator)
    )
    typer.echo(f"revoked token {token_id}")


@workspaces_app.command("add")
def add(slug: str, name: Annotated[str | None, typer.Option()] = None) -> None:
    """Create a workspace."""
    space = run_in_transaction(prepared_settings(), lambda s: create_workspace(s, slug, name))
    typer.echo(f"created workspace {space.slug!r} (id {space.id})")


@workspaces_app.command("list")
def list_spaces() -> None:
    """List workspaces."""
    spaces = run_in_transaction(prepared_settings(), list_workspaces)
    for space in spaces:
        typer.echo(f"{space.id}\t{space.slug}\t{space.name}")


@workspaces_app.command("grant")
def grant_role(user: str, workspace: str, role: Role) -> None:
    """Give a user a role in a workspace (replacing any role held there)."""

    async def work(session: AsyncSession) -> None:
        member = await get_user(session, user)
        space = await get_workspace(session, workspace)
        await grant(session, member.id, space.id, role)

    run_in_transaction(prepared_settings(), work)
    typer.echo(f"{user!r} is {role.value} in {workspace!r}")
