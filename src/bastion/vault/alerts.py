"""Credential alerts: raised when a condition starts, resolved when it ends, never doubled.

The conditions are derived from the credential's state each time it changes (and by the
periodic sweep), so an alert cannot outlive its cause or be raised twice for one cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bastion.db.tables import Credential, CredentialAlert
from bastion.db.types import utcnow
from bastion.errors import NotFound

KINDS = ("token_expiring", "validation_failed", "rotation_overdue")


def conditions(credential: Credential, now: datetime, margin: timedelta) -> dict[str, str]:
    """Which alerts `credential` calls for right now, with their messages."""
    found = {}
    if credential.expires_at is not None and now >= credential.expires_at - margin:
        found["token_expiring"] = f"access token expires at {credential.expires_at.isoformat()}"
    if credential.health == "unhealthy":
        found["validation_failed"] = credential.health_reason or "validation failed"
    if credential.rotation_period_days is not None:
        due = credential.rotated_at + timedelta(days=credential.rotation_period_days)
        if now > due:
            found["rotation_overdue"] = f"rotation was due at {due.isoformat()}"
    return found


async def sync(
    session: AsyncSession, credential: Credential, now: datetime, margin: timedelta
) -> None:
    wanted = conditions(credential, now, margin)
    open_alerts = {
        alert.kind: alert
        for alert in await session.scalars(
            select(CredentialAlert).where(
                CredentialAlert.credential_id == credential.id,
                CredentialAlert.resolved_at.is_(None),
            )
        )
    }
    for kind, alert in open_alerts.items():
        if kind not in wanted:
            alert.resolved_at = now
    for kind, message in wanted.items():
        if kind not in open_alerts:
            session.add(
                CredentialAlert(
                    credential_id=credential.id, kind=kind, message=message[:500], raised_at=now
                )
            )


async def list_alerts(
    session: AsyncSession, workspace_ids: Sequence[int] | None, *, include_resolved: bool = False
) -> Sequence[tuple[CredentialAlert, Credential]]:
    query = select(CredentialAlert, Credential).join(
        Credential, Credential.id == CredentialAlert.credential_id
    )
    if workspace_ids is not None:
        query = query.where(Credential.workspace_id.in_(workspace_ids))
    if not include_resolved:
        query = query.where(CredentialAlert.resolved_at.is_(None))
    rows = await session.execute(query.order_by(CredentialAlert.raised_at.desc()))
    return [(alert, credential) for alert, credential in rows.all()]


async def acknowledge(
    session: AsyncSession, alert_id: int, actor: str, workspace_ids: Sequence[int] | None
) -> CredentialAlert:
    alert = await session.get(CredentialAlert, alert_id)
    credential = None if alert is None else await session.get(Credential, alert.credential_id)
    # Another workspace's alert does not exist for this caller.
    if (
        alert is None
        or credential is None
        or (workspace_ids is not None and credential.workspace_id not in workspace_ids)
    ):
        raise NotFound(f"no alert {alert_id}")
    if alert.acknowledged_at is None:
        alert.acknowledged_at, alert.acknowledged_by = utcnow(), actor[:200]
    return alert
