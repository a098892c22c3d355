"""The vault: credentials (names of fields only, never values), health, alerts, OAuth."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import timedelta

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from bastion.db.tables import Credential, CredentialAlert, CredentialField
from bastion.db.types import utcnow
from bastion.vault import alerts
from bastion.vault.credentials import in_scope
from bastion.vault.policy import AccessContext, ScopePolicy
from bastion.web.console._page import Viewer, page, render


@page()
async def vault_page(request: Request, viewer: Viewer) -> Response:
    query = select(Credential).order_by(Credential.workspace_id, Credential.name)
    fields = select(CredentialField.credential_id, CredentialField.name).join(
        Credential,
        (Credential.id == CredentialField.credential_id)
        & (Credential.version == CredentialField.version),
    )
    if viewer.scope is not None:
        query = query.where(Credential.workspace_id.in_(viewer.scope))
        fields = fields.where(Credential.workspace_id.in_(viewer.scope))
    async with request.state.services.db.session() as session:
        # The page shows what the API shows: a credential scoped away from this viewer's
        # role is not listed, nor are its field names or alerts.
        credentials = [
            c
            for c in (await session.scalars(query)).all()
            if in_scope(c, AccessContext.of(viewer.principal, c.workspace_id))
        ]
        visible = {c.id for c in credentials}
        names: dict[str, list[str]] = defaultdict(list)
        for credential_id, name in await session.execute(fields.order_by(CredentialField.name)):
            names[credential_id].append(name)
        alert_rows = await alerts.list_alerts(session, viewer.scope)
    by_credential: dict[str, list[CredentialAlert]] = defaultdict(list)
    alert_rows = [(a, c) for a, c in alert_rows if c.id in visible]
    for alert, credential in alert_rows:
        by_credential[credential.id].append(alert)
    now = utcnow()
    views = []
    for credential in credentials:
        policy = ScopePolicy.from_json(credential.policy)
        due = (
            credential.rotated_at + timedelta(days=credential.rotation_period_days)
            if credential.rotation_period_days
            else None
        )
        views.append(
            {
                "c": credential,
                "fields": names.get(credential.id, []),
                "settings": json.loads(credential.settings),
                "policy": policy,
                "alerts": by_credential.get(credential.id, []),
                "rotation_due": due,
                "overdue": due is not None and due < now,
            }
        )
    return render(
        request,
        viewer,
        "console/vault.html",
        title="Vault",
        credentials=views,
        alerts=alert_rows,
        creatable=[ws for ws in viewer.workspaces if viewer.can("credentials:manage", ws)],
    )
