"""Who is asking: the console session behind a request's cookie."""

from __future__ import annotations

from starlette.requests import Request

from bastion.config import Settings
from bastion.web.auth.sessions import PLAIN_COOKIE, SECURE_COOKIE, Session


def cookie_name(settings: Settings) -> str:
    # `__Host-` makes the browser insist on Secure, Path=/ and no Domain, so a sibling
    # subdomain cannot plant or overwrite the session cookie (ASVS 3.4.4).
    return SECURE_COOKIE if settings.session_cookie_secure else PLAIN_COOKIE


async def current_session(request: Request) -> Session | None:
    services = request.state.services
    value = request.cookies.get(cookie_name(services.settings))
    session: Session | None = await services.sessions.load(value)
    return session
