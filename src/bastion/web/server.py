"""Running the application under uvicorn, the one way `bastion serve` does it."""

from __future__ import annotations

import uvicorn
from starlette.types import ASGIApp


def run(app: ASGIApp, *, host: str, port: int) -> None:
    uvicorn.run(
        app,
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
