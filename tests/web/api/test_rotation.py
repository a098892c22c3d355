"""/api/v1/rotation through the real app, a real Docker engine behind it: every control
transition, valid and refused, with a console session + CSRF and with an API token; the
audit trail of every attempt; who may read and who may act; status, history, stream.

The controller's loop is held still here, and the test runs its passes itself, so each
pending action is carried out exactly when the test says (the loop itself runs in
tests/rotation/test_engine.py and tests/e2e/test_rotation.py).
"""

from __future__ import annotations

import asyncio
import json
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
from bastion.crypto import passwords
from bastion.db import Database
from bastion.rotation import controls
from bastion.rotation.controller import Controller
from bastion.rotation.service import Rotation
from bastion.rotation.telemetry import Telemetry
from bastion.web.api import rotation as rotation_api
from bastion.web.app import create_app
from tests.docker_engine import DockerEngine
from tests.services import free_port
from tests.web.api.conftest import signed_in
from tests.web.api.test_triggers import services
from tests.web.auth.conftest import PASSWORD, Answers, Console
from tests.web.conftest import another_client, make_settings, serving

pytestmark = pytest.mark.services


@dataclass
class Crew:
    olive: httpx.AsyncClient  # owner of "ops"
    otto: httpx.AsyncClient  # operator of "ops"
    vic: httpx.AsyncClient  # viewer of "ops"
    mallory: httpx.AsyncClient  # signed in, no role anywhere
    root: httpx.AsyncClient  # administrator
    names: list[str]

    @property
    def rotation(self) -> Rotation:
        found = services(self.olive).rotation
        assert found is not None
        return found

    async def carry_out(self) -> None:
        """The controller's passes over "web" until it has nothing left to do."""
        pool = self.rotation.pools["web"]
        for _ in range(10):
            if not await self.rotation.controller.step(pool):
                return
        raise AssertionError("the controller never settled")

    async def audit(self) -> list[dict[str, Any]]:
        rows = await services(self.olive).audit.events(limit=100_000)
        return [
            {
                "action": row.action,
                "actor": row.actor,
                "client_ip": row.client_ip,
                "target": row.target,
                "outcome": row.outcome,
                "reason": row.reason,
                "details": json.loads(row.details),
            }
            for row in rows
            if row.action.startswith("rotation.")
        ]


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    light = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(passwords, "_hasher", light)


@pytest.fixture
async def crew(
    base_env: dict[str, str],
    tmp_path: Path,
    docker_engine: DockerEngine,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Crew]:
    async def idle(self: object) -> None:
        await asyncio.Event().wait()

    monkeypatch.setattr(Controller, "run", idle)
    monkeypatch.setattr(Telemetry, "run", idle)
    prefix = f"api{tmp_path.name[-12:]}".replace("_", "-")
    names = [f"{prefix}-{letter}" for letter in "abc"]
    for name in names:
        docker_engine.create_replica(name, free_port(), stop_timeout=1)
    pools = tmp_path / "pools.toml"
    pools.write_text(
        f'[[pools]]\nname = "web"\nworkspace = "ops"\nreplicas = {json.dumps(names[:2])}\n'
        "health_timeout_seconds = 5\nstop_timeout_seconds = 1\n"
        f'[[pools]]\nname = "core"\nreplicas = ["{names[2]}", "{prefix}-spare"]\n'
    )
    env = {
        **base_env,
        "BASTION_ROTATION_POOLS_FILE": str(pools),
        "BASTION_ROTATION_DOCKER_URL": docker_engine.host,
        "BASTION_ROTATION_DOCKER_TOKEN": "token-of-the-test-engine",
    }
    settings = make_settings(env)
    db = Database(settings.effective_database_url)
    async with db.transaction() as session:
        ops = await create_workspace(session, "ops")
        for name, role in (("olive", Role.OWNER), ("otto", Role.OPERATOR), ("vic", Role.VIEWER)):
            user = await create_user(session, name, PASSWORD)
            await grant(session, user.id, ops.id, role)
        await create_user(session, "mallory", PASSWORD)
        await create_user(session, "root", PASSWORD, is_admin=True)
    await db.dispose()
    answers = Answers()
    try:
        async with (
            serving(
                create_app(settings, captcha_answers=answers), base_url="https://bastion.test"
            ) as olive,
            another_client(olive, ("198.51.100.21", 1)) as otto,
            another_client(olive, ("198.51.100.22", 1)) as vic,
            another_client(olive, ("198.51.100.23", 1)) as mallory,
            another_client(olive, ("198.51.100.24", 1)) as root,
        ):
            clients = {"olive": olive, "otto": otto, "vic": vic, "mallory": mallory, "root": root}
            for name, client in clients.items():
                client.headers["x-csrf-token"] = await signed_in(Console(client, answers), name)
                client.headers["origin"] = "https://bastion.test"
            yield Crew(olive, otto, vic, mallory, root, names)
    finally:
        docker_engine.remove(*names)


async def act(client: httpx.AsyncClient, action: str, force: bool = False) -> httpx.Response:
    return await client.post(
        "/api/v1/rotation/pools/web/actions", json={"action": action, "force": force}
    )


async def token_client(crew: Crew, role: str) -> httpx.AsyncClient:
    """A client presenting olive's API token with `role` in "ops" (no cookie, no CSRF)."""
    created = await crew.olive.post(
        "/api/v1/tokens", json={"name": f"rotation-{role}", "workspace_id": 1, "role": role}
    )
    assert created.status_code == 201, created.text
    client = another_client(crew.olive, ("198.51.100.30", 1))
    client.headers["authorization"] = f"Bearer {created.json()['token']}"
    return client


# (action, force, expected status, refusal reason, carry out pending actions after)
SCRIPT = [
    ("resume", False, 409, controls.NOT_PAUSED, False),
    ("kill", False, 409, controls.KILL_WHILE_RUNNING, False),
    ("kill", True, 409, controls.KILL_WHILE_RUNNING, False),
    ("rotate", False, 202, None, False),
    ("rotate", False, 409, controls.ROTATION_PENDING, True),
    ("pause", False, 202, None, False),
    ("pause", False, 409, controls.ALREADY_PAUSED, False),
    ("rotate", False, 409, controls.PAUSED_NEEDS_FORCE, False),
    ("rotate", True, 202, None, True),
    ("kill", False, 202, None, False),
    ("resume", False, 409, controls.KILL_PENDING, False),
    ("rotate", True, 409, controls.KILL_PENDING, True),
    ("pause", False, 409, controls.ALREADY_PAUSED, False),
    ("kill", False, 409, controls.ALREADY_KILLED, False),
    ("rotate", False, 409, controls.PAUSED_NEEDS_FORCE, False),
    ("rotate", True, 202, None, True),
    ("resume", False, 202, None, True),
]


@pytest.mark.parametrize("credential", ["session", "token"])
async def test_every_transition_valid_and_refused_is_answered_and_audited(
    crew: Crew, credential: str
) -> None:
    caller = crew.otto if credential == "session" else await token_client(crew, "operator")
    await crew.carry_out()  # the first replica comes up
    for action, force, status, reason, carry_out in SCRIPT:
        answer = await act(caller, action, force)
        assert answer.status_code == status, (action, force, answer.text)
        if reason is not None:
            assert answer.json() == {"error": "conflict", "message": reason}
        if carry_out:
            await crew.carry_out()
    pool = (await crew.vic.get("/api/v1/rotation/pools/web")).json()
    assert (pool["state"], pool["paused"], pool["pending_action"]) == ("running", False, None)
    assert sum(r["state"] == "running" for r in pool["replicas"].values()) == 1
    requested = [e for e in await crew.audit() if e["actor"].startswith(("user:", "token"))]
    assert len(requested) == len(SCRIPT)
    actor = "user:otto" if credential == "session" else "user:olive (token "
    address = "198.51.100.21" if credential == "session" else "198.51.100.30"
    for event, (action, force, status, reason, _) in zip(requested, SCRIPT, strict=True):
        assert event["action"] == f"rotation.{action}"
        assert event["actor"].startswith(actor)
        assert event["client_ip"] == address
        assert event["target"] == "pool:web"
        assert event["outcome"] == ("success" if status == 202 else "denied")
        assert event["reason"] == (reason or "")
        assert event["details"]["force"] is force
    if caller is not crew.otto:
        await caller.aclose()


async def test_viewers_read_but_may_not_act_and_outsiders_see_nothing(crew: Crew) -> None:
    await crew.carry_out()
    assert [p["name"] for p in (await crew.vic.get("/api/v1/rotation/pools")).json()] == ["web"]
    assert (await crew.vic.get("/api/v1/rotation/pools/web")).status_code == 200
    assert (await crew.vic.get("/api/v1/rotation/pools/web/history")).status_code == 200
    refused = await act(crew.vic, "pause")
    assert refused.status_code == 403
    viewer_token = await token_client(crew, "viewer")
    assert (await act(viewer_token, "pause")).status_code == 403
    await viewer_token.aclose()
    assert (await crew.mallory.get("/api/v1/rotation/pools")).json() == []
    for path in ("/api/v1/rotation/pools/web", "/api/v1/rotation/pools/web/history"):
        assert (await crew.mallory.get(path)).status_code == 404
    assert (await act(crew.mallory, "pause")).status_code == 404
    # A pool naming no workspace is for administrators only, even for owners elsewhere.
    assert (await crew.olive.get("/api/v1/rotation/pools/core")).status_code == 404
    assert (await crew.root.get("/api/v1/rotation/pools/core")).status_code == 200
    everything = (await crew.root.get("/api/v1/rotation/pools")).json()
    assert [p["name"] for p in everything] == ["web", "core"]  # as the pools file lists them
    denied = [e for e in await crew.audit() if e["outcome"] == "denied"]
    assert [(e["actor"], e["client_ip"], e["reason"]) for e in denied] == [
        ("user:vic", "198.51.100.22", "missing permission rotation:control"),
        (denied[1]["actor"], "198.51.100.30", "missing permission rotation:control"),
        ("user:mallory", "198.51.100.23", "no pool 'web'"),
    ]
    assert (await crew.olive.get("/api/v1/rotation/pools")).json()[0]["state"] == "running"


async def test_without_csrf_or_credentials_nothing_is_done(crew: Crew) -> None:
    forged = httpx.AsyncClient(  # the session cookie rides along, the CSRF token does not
        transport=crew.olive._transport,
        base_url=crew.olive.base_url,
        cookies=crew.olive.cookies,
        headers={"origin": "https://bastion.test"},
    )
    assert (await act(forged, "pause")).status_code == 403
    await forged.aclose()
    anonymous = httpx.AsyncClient(transport=crew.olive._transport, base_url=crew.olive.base_url)
    assert (await anonymous.get("/api/v1/rotation/pools")).status_code == 401
    assert (await act(anonymous, "pause")).status_code == 401
    assert (await act(crew.olive, "explode")).status_code == 422
    await anonymous.aclose()
    assert (await crew.olive.get("/api/v1/rotation/pools/web")).json()["state"] == "running"


async def test_status_history_and_readiness(crew: Crew) -> None:
    a, b, _ = crew.names
    await crew.carry_out()
    first = (await crew.olive.get("/api/v1/rotation/pools/web")).json()
    active = first["active_replica"]
    assert active in (a, b)
    replica = first["replicas"][active]
    assert (replica["active"], replica["state"], replica["activations"]) == (True, "running", 1)
    assert replica["uptime_seconds"] is not None and replica["uptime_seconds"] >= 0
    assert first["replicas"][b if active == a else a]["state"] == "created"
    assert first["rotation_count"] == 1 and first["next_rotation_at"] is not None
    assert (await act(crew.olive, "rotate")).status_code == 202
    await crew.carry_out()
    history = (await crew.olive.get("/api/v1/rotation/pools/web/history?limit=1")).json()
    (latest,) = history["entries"]
    assert (latest["trigger"], latest["actor"], latest["outcome"]) == ("manual", "user:olive", "ok")
    assert latest["from_replica"] == active and latest["to_replica"] != active
    assert latest["switch_seconds"] is not None
    assert history["next_before"] == latest["id"]
    older = await crew.olive.get(f"/api/v1/rotation/pools/web/history?before={latest['id']}")
    assert [e["trigger"] for e in older.json()["entries"]] == ["recovery"]
    ready = await crew.olive.get("/readyz")
    assert ready.json()["checks"]["docker_proxy"] == {"status": "ok"}


async def test_the_stream_sends_a_snapshot_then_small_deltas_and_never_the_history(
    crew: Crew, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rotation_api, "STREAM_SECONDS", 2.5)
    await crew.carry_out()
    watching = asyncio.create_task(crew.vic.get("/api/v1/rotation/stream"))
    outsider = asyncio.create_task(crew.mallory.get("/api/v1/rotation/stream"))
    await asyncio.sleep(1.2)
    assert (await act(crew.olive, "pause")).status_code == 202
    response, hidden = await watching, await outsider
    assert response.headers["content-type"].startswith("text/event-stream")
    blocks = [b for b in response.text.split("\n\n") if b.startswith("event:")]
    kinds = [b.split("\n")[0].removeprefix("event: ") for b in blocks]
    assert kinds[0] == "snapshot"
    snapshot = json.loads(blocks[0].split("data: ", 1)[1])
    assert list(snapshot["pools"]) == ["web"]
    assert "history" not in blocks[0]
    deltas = [json.loads(b.split("data: ", 1)[1]) for b in blocks[1:]]
    assert {"web": {"state": "paused", "paused": True}} in [
        {pool: {k: v for k, v in change.items() if k in ("state", "paused")}}
        for d in deltas
        for pool, change in d["pools"].items()
    ]
    assert all(len(b) < 2000 for b in blocks[1:])  # deltas, not whole pools
    assert json.loads(hidden.text.split("data: ", 1)[1]) == {"pools": {}}
