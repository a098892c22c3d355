"""Running the application under uvicorn, the one way `bastion serve` does it."""

from __future__ import annotations

import gc

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def run(app: ASGIApp, *, host: str, port: int) -> None:
    uvicorn.run(
        _FreezeAfterStartup(app),
        host=host,
        port=port,
        loop="uvloop",
        http="httptools",
        # Bastion resolves the client address itself from BASTION_PROXY_TRUST_COUNT;
        # uvicorn's own X-Forwarded-For handling would trust any loopback peer.
        proxy_headers=False,
        server_header=False,
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=10,
    )


class _FreezeAfterStartup:
    """Freezes what exists once the application has started.

    The modules of the whole stack and the services built at startup (~300,000 objects)
    live as long as the process. Left to the collector, every full collection walks them
    all and stalls every request for 150-200 ms; frozen, it walks only what came after.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return

        async def send_and_freeze(message: Message) -> None:
            if message["type"] == "lifespan.startup.complete":
                gc.collect()  # what is garbage now must not be frozen with the rest
                gc.freeze()
            await send(message)

        await self.app(scope, receive, send_and_freeze)
