"""A console with four people, one workspace and hostile text in every place it can be.

root is an administrator; olive owns workspace "ops"; vic views it; mallory is signed in
with no role anywhere. The workflow's description, a node's parameters, a run's input,
an audit record and a log line all carry markup that must reach pages only escaped.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from bastion.accounts.rbac import Role
from bastion.accounts.users import create_user
from bastion.accounts.workspaces import create_workspace, grant
from bastion.audit.chain import Event
from bastion.crypto import passwords
from bastion.db import Database
from bastion.web.app import Services, create_app
from tests.web.api.conftest import signed_in
from tests.web.auth.conftest import Answers, Console
from tests.web.conftest import another_client, make_settings, serving

HOSTILE = "<script>alert('x')</script>"
HOSTILE_ESCAPED = "&lt;script&gt;alert("
GRAPH: dict[str, Any] = {
    "nodes": [
        {
            "id": "seed",
            "type": "set",
            "params": {"values": {"note": HOSTILE, "n": "{{ input.n }}"}},
        },
        {"id": "pick", "type": "transform", "params": {"expression": "steps.seed.n"}},
    ],
    "edges": [{"from": "seed", "to": "pick"}],
}


@dataclass
class Seeded:
    root: httpx.AsyncClient
    olive: httpx.AsyncClient
    vic: httpx.AsyncClient
    mallory: httpx.AsyncClient
    anonymous: httpx.AsyncClient
    services: Services
    workflow_id: str
    run_id: str
    credential_id: str
    log_dir: Path
    answers: Answers

    async def failed_sign_in(self, username: str) -> None:
        answer = await Console(self.anonymous, self.answers).sign_in(username, "wrong password")
        assert answer.status_code == 401


def services_of(http: httpx.AsyncClient) -> Services:
    transport = http._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    cells = dict(zip(app.__code__.co_freevars, app.__closure__ or (), strict=True))
    found = cells["state"].cell_contents["services"]
    assert isinstance(found, Services)
    return found


async def finished(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            run: dict[str, Any] = (await http.get(f"/api/v1/runs/{run_id}")).json()
            if run["status"] not in ("queued", "running", "scheduled"):
                return run
            await asyncio.sleep(0.05)


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four sign-ins per test: light argon2 parameters keep the setup short."""
    monkeypatch.setattr(
        passwords, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    )


@pytest.fixture
def console_env() -> dict[str, str]:
    """Extra settings for the seeded app (a test module may override this fixture)."""
    return {}


@pytest.fixture
async def seeded(
    base_env: dict[str, str], console_env: dict[str, str], tmp_path: Path, log_file: Path
) -> AsyncIterator[Seeded]:
    env = {
        **base_env,
        **console_env,
        "BASTION_LOG_DIR": str(log_file.parent),
        "BASTION_AUDIT_JSONL_PATH": str(tmp_path / "audit" / "audit.jsonl"),
    }
    settings = make_settings(env)
    db = Database(settings.effective_database_url)
    async with db.transaction() as session:
        await create_user(session, "root", "correct horse battery staple", is_admin=True)
        olive = await create_user(session, "olive", "correct horse battery staple")
        vic = await create_user(session, "vic", "correct horse battery staple")
        await create_user(session, "mallory", "correct horse battery staple")
        ops = await create_workspace(session, "ops", "Operations")
        await grant(session, olive.id, ops.id, Role.OWNER)
        await grant(session, vic.id, ops.id, Role.VIEWER)
    await db.dispose()
    answers = Answers()
    app = create_app(settings, captcha_answers=answers)
    async with (
        serving(app, base_url="https://bastion.test") as r,
        another_client(r, ("198.51.100.9", 1)) as o,
        another_client(r, ("198.51.100.10", 1)) as v,
        another_client(r, ("198.51.100.11", 1)) as m,
        another_client(r, ("198.51.100.12", 1)) as anonymous,
    ):
        for client, name in ((r, "root"), (o, "olive"), (v, "vic"), (m, "mallory")):
            client.headers["user-agent"] = f"test browser of {name} {HOSTILE}"
            client.headers["x-csrf-token"] = await signed_in(Console(client, answers), name)
            client.headers["origin"] = "https://bastion.test"
        created = await o.post(
            "/api/v1/workflows?workspace_id=1",
            json={"name": "deploy", "description": f"ships {HOSTILE}", "graph": GRAPH},
        )
        assert created.status_code == 201, created.text
        workflow_id = created.json()["id"]
        started = await o.post(
            f"/api/v1/workflows/{workflow_id}/runs",
            json={"input": {"n": 3, "who": HOSTILE}, "reason": f"because {HOSTILE}"},
        )
        assert started.status_code == 202, started.text
        run = await finished(o, started.json()["id"])
        credential = await o.post(
            "/api/v1/credentials?workspace_id=1",
            json={"name": "hook-secret", "fields": {"value": "s3cret-value-9f1"}},
        )
        assert credential.status_code == 201, credential.text
        services = services_of(r)
        await services.audit.record(Event("test.hostile", f"user:{HOSTILE}", reason=HOSTILE))
        logging.getLogger("bastion.test").warning("hostile line %s", HOSTILE)
        yield Seeded(
            r,
            o,
            v,
            m,
            anonymous,
            services,
            workflow_id,
            run["id"],
            credential.json()["id"],
            log_file.parent,
            answers,
        )
