"""`bastion audit …`: verify the hash chain, hash a value as the trail does, read records."""

from __future__ import annotations

import asyncio
import os
import sys
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import Select, select

from bastion.audit.chain import hash_value, to_json
from bastion.audit.export import as_record
from bastion.audit.log import AuditLog
from bastion.audit.verify import verify as verify_chain
from bastion.cli_setup import fail, prepared_settings, run_with_database, settings_or_exit
from bastion.db import Database
from bastion.db.tables import AuditEvent

T = TypeVar("T")
Q = TypeVar("Q", bound=Select[Any])
BATCH = 1000
POLL_SECONDS = 1.0

app = typer.Typer(help="The tamper-evident audit trail.", no_args_is_help=True)


class Format(StrEnum):
    JSONL = "jsonl"


@contextmanager
def _stdout_closable() -> Iterator[None]:
    """`bastion audit export | head`: a reader that stops early is no error."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        # Nothing more can be written; keep the interpreter's final flush from failing too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(1) from None


def _write(lines: Sequence[str]) -> None:
    if lines:
        sys.stdout.write("".join(line + "\n" for line in lines))
        sys.stdout.flush()


# -- verify and hash ----------------------------------------------------------------------


@app.command()
def verify() -> None:
    """Check every record against its hash and predecessor; exit 1 at the first break."""
    settings = prepared_settings()
    verdict = run_with_database(settings, lambda db: verify_chain(db, settings.keyring()))
    if verdict.ok:
        typer.echo(f"audit chain OK: {verdict.checked} record(s) verified, head {verdict.head}")
        return
    typer.echo(
        f"audit chain BROKEN at record {verdict.first_bad_seq}: {verdict.problem} "
        f"({verdict.checked} record(s) read, head {verdict.head})"
    )
    raise typer.Exit(1)


@app.command("hash")
def hash_(
    value: Annotated[str, typer.Argument(help="The value, or - to read it from stdin.")],
) -> None:
    """Print a value as audit details hold it (hmac-sha256:…), to search the trail for it."""
    settings = settings_or_exit()
    if value == "-":
        try:
            value = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError:
            fail("stdin is not UTF-8 text")
        value = value.removesuffix("\n").removesuffix("\r") if value.endswith("\n") else value
    typer.echo(hash_value(settings.keyring(), value))


# -- reading records ----------------------------------------------------------------------


def _bound(option: str, text: str) -> int | datetime:
    """A record number, or an ISO 8601 date/time (UTC unless it names its zone)."""
    text = text.strip()
    if text.isdigit():
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"{option}: expected a record number or an ISO 8601 date/time, got {text[:40]!r}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _filtered(query: Q, since: int | datetime, until: int | datetime | None) -> Q:
    if isinstance(since, int):
        query = query.where(AuditEvent.seq >= since)
    else:
        query = query.where(AuditEvent.time >= since)
    if isinstance(until, int):
        query = query.where(AuditEvent.seq <= until)
    elif until is not None:
        query = query.where(AuditEvent.time <= until)
    return query


@app.command()
def export(
    since: Annotated[
        str, typer.Option(help="First record: a seq, or an ISO 8601 date/time (UTC by default).")
    ],
    until: Annotated[
        str | None, typer.Option(help="Last record (inclusive): a seq or a date/time.")
    ] = None,
    fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.JSONL,
) -> None:
    """Print records as JSON lines, oldest first."""
    start, end = _bound("--since", since), None if until is None else _bound("--until", until)
    settings = prepared_settings()

    async def work(db: Database) -> None:
        after = 0
        async with db.session() as session:
            while True:
                query = _filtered(select(AuditEvent).where(AuditEvent.seq > after), start, end)
                rows = (await session.scalars(query.order_by(AuditEvent.seq).limit(BATCH))).all()
                _write([to_json(as_record(row)) for row in rows])
                if len(rows) < BATCH:
                    return
                after = rows[-1].seq

    with _stdout_closable():
        run_with_database(settings, work)


def _safe(text: str) -> str:
    # Audit fields carry what clients sent: control characters must not reach a terminal.
    return "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cc", "Cf") else c for c in text
    )


def _line(row: AuditEvent) -> str:
    parts = [
        str(row.seq),
        f"{row.time:%Y-%m-%dT%H:%M:%S}Z",
        row.outcome,
        _safe(row.action),
        f"actor={_safe(row.actor)}",
    ]
    if row.target:
        parts.append(f"target={_safe(row.target)}")
    if row.reason:
        parts.append(f"reason={_safe(row.reason)!r}")
    if row.client_ip:
        parts.append(f"ip={_safe(row.client_ip)}")
    return "  ".join(parts)


@app.command()
def tail(
    lines: Annotated[int, typer.Option("-n", "--lines", min=0, help="How many records.")] = 20,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new records (Ctrl-C stops).")
    ] = False,
    json_lines: Annotated[
        bool, typer.Option("--json", help="JSON lines, as `export` prints them.")
    ] = False,
) -> None:
    """Print the last records, oldest first."""
    settings = prepared_settings()

    def show(rows: Sequence[AuditEvent]) -> None:
        _write([to_json(as_record(row)) if json_lines else _line(row) for row in rows])

    async def work(db: Database) -> None:
        async with db.session() as session:
            query = select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(lines)
            rows = list(reversed((await session.scalars(query)).all()))
        show(rows)
        if not follow:
            return
        log = AuditLog(db, settings.keyring())
        last = rows[-1].seq if rows else await log.head()
        while True:
            await asyncio.sleep(POLL_SECONDS)
            while fresh := await log.events(after=last, limit=BATCH):
                show(fresh)
                last = fresh[-1].seq

    try:
        with _stdout_closable():
            run_with_database(settings, work)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
