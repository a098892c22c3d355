from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from bastion.accounts.rbac import Role
from bastion.accounts.users import create_user
from bastion.accounts.workspaces import create_workspace, grant
from bastion.db import Database
from bastion.web.app import create_app
from tests.web.auth.conftest import PASSWORD, Answers, Console
from tests.web.conftest import another_client, make_settings, serving


@dataclass
class Actors:
    """Alice operates workspace 1; Charlie belongs nowhere; both sign in to one app."""

    alice: Console
    charlie: Console
    csrf: dict[str, str]


async def signed_in(console: Console, name: str) -> str:
    assert (await console.sign_in(name)).status_code == 303
    page = await console.http.get("/")
    return page.text.split('name="csrf-token" content="')[1].split('"')[0]


async def _actors(env: dict[str, str], second: str, *, admin: bool) -> AsyncIterator[Actors]:
    settings = make_settings(env)
    db = Database(settings.effective_database_url)
    async with db.transaction() as session:
        alice = await create_user(session, "alice", PASSWORD)
        await create_user(session, second, PASSWORD, is_admin=admin)
        ops = await create_workspace(session, "ops")
        await grant(session, alice.id, ops.id, Role.OPERATOR)
    await db.dispose()
    answers = Answers()
    app = create_app(settings, captcha_answers=answers)
    async with (
        serving(app, base_url="https://bastion.test") as a,
        another_client(a, ("198.51.100.8", 1)) as c,
    ):
        alice_console, charlie_console = Console(a, answers), Console(c, answers)
        csrf = {
            "alice": await signed_in(alice_console, "alice"),
            "charlie": await signed_in(charlie_console, second),
        }
        yield Actors(alice_console, charlie_console, csrf)


@pytest.fixture
async def actors(base_env: dict[str, str]) -> AsyncIterator[Actors]:
    async for value in _actors(base_env, "charlie", admin=False):
        yield value


@pytest.fixture
async def actors_with_admin(base_env: dict[str, str]) -> AsyncIterator[Actors]:
    async for value in _actors(base_env, "root", admin=True):
        yield value


@dataclass
class Team:
    olive: httpx.AsyncClient  # owner of workspace 1
    vic: httpx.AsyncClient  # viewer of workspace 1
    mallory: httpx.AsyncClient  # signed in, no role anywhere
    settings_env: dict[str, str]


@pytest.fixture
async def team(base_env: dict[str, str], tmp_path: Path, log_file: Path) -> AsyncIterator[Team]:
    env = {**base_env, "BASTION_AUDIT_JSONL_PATH": str(tmp_path / "audit" / "audit.jsonl")}
    settings = make_settings(env)
    db = Database(settings.effective_database_url)
    async with db.transaction() as session:
        olive = await create_user(session, "olive", PASSWORD)
        vic = await create_user(session, "vic", PASSWORD)
        await create_user(session, "mallory", PASSWORD)
        ops = await create_workspace(session, "ops")
        await grant(session, olive.id, ops.id, Role.OWNER)
        await grant(session, vic.id, ops.id, Role.VIEWER)
    await db.dispose()
    answers = Answers()
    async with (
        serving(
            create_app(settings, captcha_answers=answers), base_url="https://bastion.test"
        ) as a,
        another_client(a, ("198.51.100.9", 1)) as v,
        another_client(a, ("198.51.100.10", 1)) as m,
    ):
        for client, name in ((a, "olive"), (v, "vic"), (m, "mallory")):
            client.headers["x-csrf-token"] = await signed_in(Console(client, answers), name)
            client.headers["origin"] = "https://bastion.test"
        yield Team(a, v, m, env)
