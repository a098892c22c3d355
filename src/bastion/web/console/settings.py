"""Settings: users and roles, API tokens, sessions, and the audit exporters' lag."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import Response

from bastion.accounts import tokens
from bastion.accounts.rbac import Role
from bastion.accounts.users import list_users
from bastion.audit.search import exporter_status
from bastion.db.tables import Membership, User
from bastion.web.api.audit import configured_exporters
from bastion.web.api.sessions import current_handle
from bastion.web.console._page import Viewer, page, render


@page()
async def settings_page(request: Request, viewer: Viewer) -> Response:
    services = request.state.services
    users: list[User] = []
    roles: dict[int, list[tuple[int, str]]] = defaultdict(list)
    async with services.db.session() as session:
        if viewer.is_admin:
            users = await list_users(session)
            for member in await session.scalars(select(Membership)):
                roles[member.user_id].append((member.workspace_id, member.role))
        token_rows = await tokens.list_tokens(
            session, None if viewer.is_admin else viewer.session.user_id
        )
        owners = {
            key: value for key, value in await session.execute(select(User.id, User.username))
        }
    if viewer.is_admin:
        sessions = [s for user in users for s in await services.sessions.list_for(user.id)]
    else:
        sessions = list(await services.sessions.list_for(viewer.session.user_id))
    exporters = (
        await exporter_status(services.db, configured_exporters(services.settings))
        if viewer.is_admin
        else []
    )
    return render(
        request,
        viewer,
        "console/settings.html",
        title="Settings",
        users=users,
        roles=roles,
        tokens=token_rows,
        owners=owners,
        sessions=sessions,
        current=current_handle(request),
        exporters=exporters,
        token_roles=[role.value for role in Role],
        utc=lambda stamp: datetime.fromtimestamp(stamp, UTC),
        now=datetime.now(UTC),
    )
