from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI

from bastion.config import Settings, load_settings
from bastion.db import migrate as migrations


def make_settings(env: dict[str, str]) -> Settings:
    settings = load_settings(env).settings
    migrations.upgrade(settings.effective_database_url)
    return settings


@asynccontextmanager
async def serving(
    app: FastAPI, client: tuple[str, int] = ("198.51.100.7", 40000)
) -> AsyncIterator[httpx.AsyncClient]:
    """Run the app's lifespan and talk to it in-process, as a client at `client`."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url="http://bastion.test") as http:
            yield http
