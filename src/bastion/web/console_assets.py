"""/app/…: the console's own scripts, for signed-in users only.

Public assets (the sign-in page's) live under /static; everything that reveals how the
console talks to the API stays behind the session.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bastion.web.auth.guard import current_session
from bastion.web.static_files import CachedStaticFiles

APP_DIR = Path(__file__).parent / "app_assets"


class ConsoleAssets:
    bastion_access = "signed-in"

    def __init__(self) -> None:
        # Private: a shared cache must never hand the bundle to someone else.
        self._files = CachedStaticFiles(
            directory=str(APP_DIR), cache_control="private, max-age=300"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if await current_session(Request(scope)) is None:
            response = Response(
                '{"error":"unauthorized","message":"sign in first"}',
                status_code=401,
                media_type="application/json",
            )
            await response(scope, receive, send)
            return
        await self._files(scope, receive, send)
