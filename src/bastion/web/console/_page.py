"""What every console page shares: who is looking, what they may see, how a page renders.

A page is a Starlette endpoint declared "signed-in": without a session it sends the
browser to the sign-in form (and back afterwards); with one it loads the viewer's roles,
so each page reads only the workspaces the viewer holds a role in (all, for admins) and
shows a control only where the API would accept it. The API checks again: the page's
choice is a convenience, never the defence.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bastion.accounts.rbac import Permission, Principal
from bastion.accounts.workspaces import list_workspaces, roles_of
from bastion.errors import InvalidInput, NotFound
from bastion.runs.records import Status
from bastion.web.access import declare
from bastion.web.auth.guard import current_session
from bastion.web.auth.sessions import Session
from bastion.web.templates import templates

log = logging.getLogger("bastion.console")

NAV = [
    ("/", "Overview"),
    ("/rotation", "Rotation"),
    ("/workflows", "Workflows"),
    ("/runs", "Runs"),
    ("/vault", "Vault"),
    ("/audit", "Audit"),
    ("/logs", "Logs"),
    ("/settings", "Settings"),
]
STATUSES = tuple(Status)


@dataclass(frozen=True)
class Viewer:
    session: Session
    principal: Principal
    workspaces: dict[int, str]  # id -> name, every workspace this viewer can read

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin

    @property
    def scope(self) -> tuple[int, ...] | None:
        """For queries: None reads every workspace (admins), else these ids."""
        return None if self.is_admin else tuple(self.workspaces)

    def can(self, permission: Permission | str, workspace_id: int) -> bool:
        return self.principal.can(Permission(permission), workspace_id)

    def can_anywhere(self, permission: Permission | str) -> bool:
        return any(self.can(permission, ws) for ws in self.workspaces)

    def workspace_name(self, workspace_id: int) -> str:
        return self.workspaces.get(workspace_id, f"#{workspace_id}")

    def role(self, workspace_id: int) -> str:
        role = self.principal.roles.get(workspace_id)
        return role.value if role else ("admin" if self.is_admin else "")


async def load_viewer(request: Request, session: Session) -> Viewer:
    db = request.state.services.db
    async with db.session() as conn:
        roles = await roles_of(conn, session.user_id)
        spaces = await list_workspaces(conn)
    principal = Principal(session.user_id, session.username, session.is_admin, roles)
    visible = {space.id: space.name for space in spaces if session.is_admin or space.id in roles}
    return Viewer(session, principal, visible)


Handler = Callable[[Request, Viewer], Awaitable[Response]]


def page(*, admin: bool = False) -> Callable[[Handler], Callable[[Request], Awaitable[Response]]]:
    """Turn `handler(request, viewer)` into a console endpoint."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @declare("signed-in")
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            session = await current_session(request)
            if session is None:
                target = request.url.path
                if request.url.query:
                    target += "?" + request.url.query
                return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
            viewer = await load_viewer(request, session)
            if admin and not viewer.is_admin:
                return problem(request, viewer, 403, "This page is for administrators only.")
            try:
                return await handler(request, viewer)
            except NotFound as exc:
                return problem(request, viewer, 404, str(exc) or "Not found.")
            except InvalidInput as exc:
                return problem(request, viewer, 400, str(exc))

        return endpoint

    return wrap


def render(
    request: Request, viewer: Viewer, template: str, *, status: int = 200, **context: Any
) -> Response:
    context.setdefault("active", "/" + request.url.path.strip("/").split("/")[0])
    return templates.TemplateResponse(
        request,
        template,
        {
            "viewer": viewer,
            "session": viewer.session,
            "csrf_token": viewer.session.csrf_token,
            "nav": NAV,
            "statuses": STATUSES,
            **context,
        },
        status_code=status,
    )


def problem(request: Request, viewer: Viewer, status: int, message: str) -> Response:
    return render(
        request, viewer, "console/problem.html", status=status, message=message, code=status
    )


# -- small helpers the pages share ---------------------------------------------------------


def query_int(request: Request, name: str) -> int | None:
    raw = request.query_params.get(name, "").strip()
    return int(raw) if raw.isdigit() and len(raw) < 12 else None


def query_text(request: Request, name: str, limit: int = 200) -> str:
    return request.query_params.get(name, "").strip()[:limit]


def query_choice(request: Request, name: str, choices: tuple[str, ...] | list[str]) -> str:
    value = request.query_params.get(name, "")
    return value if value in choices else ""


def query_time(request: Request, name: str) -> datetime | None:
    """A `datetime-local` (or ISO 8601) field, read as UTC unless it names its zone."""
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw[:40])
    except ValueError:
        raise InvalidInput(f"{name}: expected a date and time such as 2025-01-31T14:00") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def link(path: str, **params: object) -> str:
    """`path` with the non-empty parameters as its query string."""
    kept = {k: v for k, v in params.items() if v not in (None, "")}
    return path + ("?" + urlencode(kept) if kept else "")


def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
