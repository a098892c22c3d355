"""A request id on every log line of a request, and the last line of defence for errors.

Unhandled exceptions are logged with the request id and answered with a bare 500; no
traceback or exception text ever reaches the client.
"""

from __future__ import annotations

import logging
import os

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bastion.logs import request_id

log = logging.getLogger("bastion.http")

_BARE_500 = b'{"error":"internal_error","message":"internal server error"}'


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Always our own id: a client-chosen one could collide with, or impersonate,
        # another request's lines in the log.
        rid = os.urandom(8).hex()
        token = request_id.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error in %s %s", scope.get("method"), scope.get("path"))
            if not started:
                await send_with_id(
                    {
                        "type": "http.response.start",
                        "status": 500,
                        "headers": [(b"content-type", b"application/json")],
                    }
                )
                await send({"type": "http.response.body", "body": _BARE_500})
        finally:
            request_id.reset(token)
