"""`bastion vault …`: credentials from the command line, and moving them to a new master key.

Secret values never travel as command-line arguments (other users see those in `ps`,
and shells keep them in their history): a field is `name=@path` (read from a UTF-8 file)
or `name=-` (read from stdin; a terminal is prompted without echo). One trailing newline
is dropped from either. The CLI acts as the audit actor "cli" with admin rights.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select

from bastion.accounts.workspaces import get_workspace
from bastion.audit.log import AuditLog
from bastion.cli_setup import fail, prepared_settings, run_with_database
from bastion.config import Settings
from bastion.db import Database
from bastion.db.tables import Credential
from bastion.vault.credentials import Vault, VaultLimits
from bastion.vault.errors import CredentialNotFound
from bastion.vault.health import HealthChecker
from bastion.vault.policy import ADMIN, AccessContext
from bastion.vault.rekey import RekeyReport, rekey
from bastion.vault.secret import Secret

T = TypeVar("T")
ACTOR = "cli"

app = typer.Typer(help="The credential vault.", no_args_is_help=True)


class Kind(StrEnum):
    SECRET = "secret"  # noqa: S105 - the kind's name, not a password
    OAUTH2 = "oauth2"


FieldOption = Annotated[
    list[str] | None,
    typer.Option(
        "--field",
        metavar="NAME=@FILE|NAME=-",
        help="A secret field, read from a UTF-8 file (@FILE) or stdin (-); repeatable. "
        "Values on the command line are refused.",
    ),
]
WorkspaceOption = Annotated[str, typer.Option(help="Workspace slug.")]


# -- reading secret fields ----------------------------------------------------------------


def _without_newline(text: str) -> str:
    for ending in ("\r\n", "\n"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


def _read_stdin(name: str) -> str:
    if sys.stdin.isatty():
        value: str = typer.prompt(name, hide_input=True, err=True)
        return value
    try:
        return _without_newline(sys.stdin.buffer.read().decode("utf-8"))
    except UnicodeDecodeError:
        fail(f"--field {name}: stdin is not UTF-8 text")


def _read_file(name: str, path: Path) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        fail(f"--field {name}: cannot read {path}: {exc.strerror or exc}")
    try:
        return _without_newline(raw.decode("utf-8"))
    except UnicodeDecodeError:
        fail(f"--field {name}: {path} is not UTF-8 text")


def read_fields(specs: list[str] | None) -> dict[str, Secret]:
    """`name=@path` and `name=-` specs read into secrets; anything else is refused."""
    if not specs:
        fail("give at least one --field NAME=@FILE or --field NAME=-")
    parsed: list[tuple[str, str]] = []
    for spec in specs:
        name, sep, source = spec.partition("=")
        name = name.strip()
        if not sep or not name:
            # The whole spec might be a secret: it is not repeated.
            fail("--field takes NAME=@FILE or NAME=- (stdin)")
        if source != "-" and not (source.startswith("@") and len(source) > 1):
            # Never echo the value: it may already be in a shell history, not in our logs too.
            fail(
                f"--field {name[:64]}: secret values are not accepted on the command line "
                f"(visible in ps and shell history); use {name[:64]}=@FILE or {name[:64]}=-"
            )
        if any(name == seen for seen, _ in parsed):
            fail(f"--field {name[:64]} is given twice")
        parsed.append((name, source))
    if sum(source == "-" for _, source in parsed) > 1:
        fail("only one --field can be read from stdin (-); use @FILE for the others")
    fields: dict[str, Secret] = {}
    for name, source in parsed:
        text = _read_stdin(name) if source == "-" else _read_file(name, Path(source[1:]))
        fields[name] = Secret(text)
    return fields


# -- running against the vault -----------------------------------------------------------


@dataclass(frozen=True)
class Services:
    settings: Settings
    db: Database
    audit: AuditLog
    vault: Vault

    async def context(self, slug: str) -> AccessContext:
        async with self.db.session() as session:
            workspace = await get_workspace(session, slug)
        return AccessContext(ACTOR, workspace.id, frozenset({ADMIN}))

    async def find(self, context: AccessContext, name: str, slug: str) -> Credential:
        async with self.db.session() as session:
            credential = await session.scalar(
                select(Credential).where(
                    Credential.workspace_id == context.workspace_id, Credential.name == name
                )
            )
        if credential is None:
            raise CredentialNotFound(f"no credential {name[:100]!r} in workspace {slug!r}")
        return credential


def run(work: Callable[[Services], Awaitable[T]], settings: Settings | None = None) -> T:
    """Run `work` with the vault; a Bastion error is one line on stderr and exit 1."""
    settings = settings or prepared_settings()

    async def with_vault(db: Database) -> T:
        keyring = settings.keyring()
        audit = AuditLog(db, keyring, fail_closed=settings.audit_fail_closed)
        limits = VaultLimits.of(settings)
        return await work(Services(settings, db, audit, Vault(db, keyring, audit, limits)))

    return run_with_database(settings, with_vault)


# -- commands -----------------------------------------------------------------------------


@app.command("list")
def list_(workspace: WorkspaceOption) -> None:
    """List a workspace's credentials (metadata and field names, never values)."""

    async def work(s: Services) -> list[tuple[Credential, list[str]]]:
        context = await s.context(workspace)
        credentials = await s.vault.list_in_scope(context)
        return [(c, await s.vault.field_names(c.id, c.version)) for c in credentials]

    table = Table(
        "name", "kind", "version", "fields", "health", "rotated", "expires", "description"
    )
    for credential, fields in run(work):
        table.add_row(
            credential.name,
            credential.kind,
            str(credential.version),
            ", ".join(fields),
            credential.health,
            f"{credential.rotated_at:%Y-%m-%d}",
            f"{credential.expires_at:%Y-%m-%d %H:%M}" if credential.expires_at else "",
            credential.description,
        )
    Console(width=160).print(table)


@app.command()
def put(
    name: str,
    workspace: WorkspaceOption,
    field: FieldOption = None,
    kind: Annotated[Kind, typer.Option(help="secret, or oauth2 (needs client_secret).")] = (
        Kind.SECRET
    ),
    token_url: Annotated[str | None, typer.Option(help="OAuth2 token endpoint.")] = None,
    client_id: Annotated[str | None, typer.Option(help="OAuth2 client id.")] = None,
    scope: Annotated[str | None, typer.Option(help="OAuth2 scope.")] = None,
    rotation_days: Annotated[
        int | None, typer.Option(min=1, max=3650, help="Rotate at least every N days.")
    ] = None,
    description: Annotated[str, typer.Option(help="What it is for.")] = "",
) -> None:
    """Store a new credential."""
    fields = read_fields(field)
    settings: dict[str, Any] = {
        key: value
        for key, value in (("token_url", token_url), ("client_id", client_id), ("scope", scope))
        if value is not None
    }

    async def work(s: Services) -> Credential:
        return await s.vault.create(
            await s.context(workspace),
            name=name,
            kind=kind.value,
            fields=fields,
            settings=settings,
            description=description,
            rotation_period_days=rotation_days,
        )

    credential = run(work)
    typer.echo(
        f"stored credential {credential.name!r} in {workspace!r} "
        f"({credential.kind}; fields: {', '.join(sorted(fields))})"
    )


@app.command()
def rotate(name: str, workspace: WorkspaceOption, field: FieldOption = None) -> None:
    """Store a new version: the fields given replace theirs, the others are kept.

    The version replaced stays for the rollback period (BASTION_VAULT_ROLLBACK_DAYS).
    """
    fields = read_fields(field)

    async def work(s: Services) -> Credential:
        context = await s.context(workspace)
        credential = await s.find(context, name, workspace)
        async with s.db.session() as session:
            current = await s.vault.open_fields(session, credential)
        return await s.vault.rotate(context, credential.id, {**current, **fields})

    credential = run(work)
    typer.echo(f"rotated credential {credential.name!r} to version {credential.version}")


@app.command()
def reveal(
    name: str,
    workspace: WorkspaceOption,
    reason: Annotated[str, typer.Option(help="Why (recorded in the audit trail).")],
) -> None:
    """Print a credential's fields as `name: value` (audited with the reason)."""

    async def work(s: Services) -> dict[str, Secret]:
        context = await s.context(workspace)
        credential = await s.find(context, name, workspace)
        return await s.vault.reveal(context, credential.id, reason=reason)

    for field_name, value in sorted(run(work).items()):
        typer.echo(f"{field_name}: {value.reveal()}")


@app.command()
def delete(
    name: str,
    workspace: WorkspaceOption,
    yes: Annotated[bool, typer.Option("--yes", help="Confirm: the material is destroyed.")] = False,
) -> None:
    """Delete a credential and destroy every version of its material."""
    if not yes:
        fail(f"deleting {name[:100]!r} destroys its material for good; add --yes to confirm")

    async def work(s: Services) -> None:
        context = await s.context(workspace)
        credential = await s.find(context, name, workspace)
        await s.vault.delete(context, credential.id)

    run(work)
    typer.echo(f"deleted credential {name!r} from {workspace!r}")


@app.command()
def test(name: str, workspace: WorkspaceOption) -> None:
    """Validate a credential now (OAuth2: obtain fresh tokens); exit 1 when unhealthy."""

    async def work(s: Services) -> Credential:
        context = await s.context(workspace)
        credential = await s.find(context, name, workspace)
        return await HealthChecker(s.vault).test(context, credential.id)

    credential = run(work)
    if credential.health != "healthy":
        typer.echo(f"credential {name!r} is {credential.health}: {credential.health_reason}")
        raise typer.Exit(1)
    typer.echo(f"credential {name!r} is healthy")


@app.command("rekey")
def rekey_(
    batch: Annotated[int, typer.Option(min=1, max=10_000, help="Fields per transaction.")] = 100,
) -> None:
    """Re-wrap every field under the active master key (online, resumable).

    Exit 0 when no field remains on an old key (the vault no longer needs them),
    1 when fields remain (unreadable: their key is not configured, or they are damaged).
    """
    settings = prepared_settings()
    columns = (
        TextColumn("re-wrapping"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task("rekey", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        async def work(s: Services) -> RekeyReport:
            return await rekey(s.db, s.vault.keyring, batch=batch, progress=progress, audit=s.audit)

        report = run(work, settings)
    _print_report(report)
    if not report.done:
        raise typer.Exit(1)


def _print_report(report: RekeyReport) -> None:
    moved_from = ", ".join(report.moved_from) or "no key"
    typer.echo(f"moved {report.moved} field(s) from {moved_from} to {report.active_id}")
    if report.done:
        typer.echo(
            "no vault field remains on an old key; keep old keys in BASTION_MASTER_KEYS "
            "only while `bastion audit verify` needs them for records they signed"
        )
        return
    for key_id, count in sorted(report.remaining.items()):
        why = " (key not configured: add it to BASTION_MASTER_KEYS)"
        typer.echo(
            f"remaining on {key_id}: {count} field(s){why if key_id in report.unknown_keys else ''}"
        )
    if report.unreadable:
        typer.echo(f"unreadable: {report.unreadable} field(s)")
