"""Finding audit records: newest first, filtered, paged by seq; and the exporters' lag."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import or_, select

from bastion.audit.log import head_seq
from bastion.db import Database
from bastion.db.tables import AuditCursor, AuditEvent

MAX_LIMIT = 500
# Shown on the overview: what an operator should notice without asking.
SECURITY_ACTIONS = (
    "auth.csrf_rejected",
    "auth.sessions_ended",
    "auth.session_ended",
    "credential.reveal",
    "http.csp_violation",
    "webhook.auth_failed",
)


def _like(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@dataclass(frozen=True)
class AuditQuery:
    text: str = ""  # in action, actor, target or reason
    action: str = ""  # exact, or a prefix ending in "." ("auth.")
    actor: str = ""
    outcome: str = ""
    value_hash: str = ""  # "hmac-sha256:…", as `bastion audit hash` prints it
    since: datetime | None = None
    until: datetime | None = None
    before: int | None = None  # a seq: page after it
    limit: int = 50


async def search(db: Database, query: AuditQuery) -> Sequence[AuditEvent]:
    statement = select(AuditEvent)
    if query.text:
        pattern = _like(query.text)
        statement = statement.where(
            or_(
                *(
                    column.ilike(pattern, escape="\\")
                    for column in (
                        AuditEvent.action,
                        AuditEvent.actor,
                        AuditEvent.target,
                        AuditEvent.reason,
                    )
                )
            )
        )
    if query.action.endswith("."):
        statement = statement.where(AuditEvent.action.startswith(query.action, autoescape=True))
    elif query.action:
        statement = statement.where(AuditEvent.action == query.action)
    if query.actor:
        statement = statement.where(AuditEvent.actor == query.actor)
    if query.outcome:
        statement = statement.where(AuditEvent.outcome == query.outcome)
    if query.value_hash:
        statement = statement.where(AuditEvent.details.like(_like(query.value_hash), escape="\\"))
    if query.since is not None:
        statement = statement.where(AuditEvent.time >= query.since)
    if query.until is not None:
        statement = statement.where(AuditEvent.time < query.until)
    if query.before is not None:
        statement = statement.where(AuditEvent.seq < query.before)
    limit = max(1, min(query.limit, MAX_LIMIT))
    async with db.session() as session:
        found = await session.scalars(statement.order_by(AuditEvent.seq.desc()).limit(limit))
        return found.all()


async def recent_security(db: Database, limit: int = 10) -> Sequence[AuditEvent]:
    """Refusals and failures of any kind, and the events that are sensitive even when
    they succeed (reveals, CSP reports, ended sessions), newest first."""
    statement = (
        select(AuditEvent)
        .where(or_(AuditEvent.outcome != "success", AuditEvent.action.in_(SECURITY_ACTIONS)))
        .order_by(AuditEvent.seq.desc())
        .limit(limit)
    )
    async with db.session() as session:
        return (await session.scalars(statement)).all()


@dataclass(frozen=True)
class ExporterStatus:
    name: str
    delivered: int  # seq of the last record delivered
    lag: int  # records not yet delivered
    updated_at: datetime | None
    configured: bool


async def exporter_status(db: Database, configured: Sequence[str]) -> list[ExporterStatus]:
    """Every configured exporter, and any with a cursor left from an earlier setup."""
    head = await head_seq(db)
    async with db.session() as session:
        cursors = {row.exporter: row for row in await session.scalars(select(AuditCursor))}
    names = [*configured, *sorted(set(cursors) - set(configured))]
    found = []
    for name in names:
        cursor = cursors.get(name)
        delivered = cursor.seq if cursor else 0
        found.append(
            ExporterStatus(
                name,
                delivered,
                max(0, head - delivered),
                cursor.updated_at if cursor else None,
                name in configured,
            )
        )
    return found
