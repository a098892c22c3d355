from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from bastion.config import Settings, load_settings
from bastion.db import migrate as migrations


def make_settings(env: dict[str, str]) -> Settings:
    settings = load_settings(env).settings
    migrations.upgrade(settings.effective_database_url)
    return settings


@asynccontextmanager
async def serving(
    app: Starlette,
    client: tuple[str, int] = ("198.51.100.7", 40000),
    base_url: str = "http://bastion.test",
) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk to it in-process, as a client at `client`."""
    async with app.router.lifespan_context(app) as state:

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            # What the server does: a copy of the lifespan state in every request.
            await app({**scope, "state": dict(state or {})}, receive, send)

        transport = httpx.ASGITransport(app=with_state, client=client)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as http:
            yield http


def another_client(http: httpx.AsyncClient, client: tuple[str, int]) -> httpx.AsyncClient:
    """A second browser on the same running app (same lifespan, same stores)."""
    transport = http._transport
    assert isinstance(transport, httpx.ASGITransport)
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=transport.app, client=client), base_url=http.base_url
    )
