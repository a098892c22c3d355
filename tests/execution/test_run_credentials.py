"""Credentials at run time: fetched through the vault for the node that names them, used,
and kept out of everything the run leaves behind."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import select

from bastion.db.tables import AuditEvent, Credential, Run, RunStep
from bastion.execution.checkpoints import sqlite_path
from bastion.runs.records import Status
from bastion.vault.credentials import Vault
from bastion.vault.policy import ScopePolicy
from bastion.vault.secret import Secret
from tests.execution.conftest import OPS, OTHER, Harness
from tests.vault.conftest import owner
from tests.workflows.test_http_request import Server

TOKEN = "ghp_canary_5e8c1d0b7a9f4e2c"


@pytest.fixture
async def echo() -> AsyncIterator[Server]:
    async with Server() as server:
        yield server


async def github(vault: Vault, *, workspace: int = OPS, **kwargs: object) -> Credential:
    return await vault.create(
        owner(workspace),
        name="github",
        kind="secret",
        fields={"token": Secret(TOKEN)},
        **kwargs,  # type: ignore[arg-type]
    )


def call(url: str) -> dict[str, object]:
    return {
        "nodes": [
            {
                "id": "fetch",
                "type": "http_request",
                "params": {
                    "method": "POST",
                    "url": url,
                    "headers": {"Authorization": "Bearer {{ credentials.github.token }}"},
                    "body": {"token_again": "{{ credentials.github.token }}"},
                },
            },
            {"id": "after", "type": "transform", "params": {"expression": "steps.fetch.body"}},
        ],
        "edges": [{"from": "fetch", "to": "after"}],
    }


async def everything_stored(harness: Harness, run: Run) -> str:
    async with harness.db.session() as session:
        steps = (await session.scalars(select(RunStep).where(RunStep.run_id == run.id))).all()
        events = (await session.scalars(select(AuditEvent))).all()
    parts = [run.input, run.output or "", run.error]
    parts += [step.output + step.error for step in steps]
    parts += [event.details + event.reason + event.target for event in events]
    return "\n".join(parts)


async def test_a_credential_reaches_the_request_but_not_the_run_history(
    harness: Harness, echo: Server
) -> None:
    await github(harness.vault)
    run = await harness.run(call(echo.url("/echo")))
    assert run.status == Status.SUCCEEDED, run.error
    # The endpoint received the real value, in the header and in the body...
    assert echo.requests[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN in echo.requests[0].body.decode()
    # ...and echoed it back, which the engine masked before the state took it in.
    body = json.loads(run.output or "")
    assert body["headers"]["authorization"] == "Bearer [redacted]"
    assert TOKEN not in await everything_stored(harness, run)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_no_credential_value_is_written_to_the_checkpoint_file(
    harness: Harness, echo: Server
) -> None:
    await github(harness.vault)
    run = await harness.run(call(echo.url("/echo")))
    assert run.status == Status.SUCCEEDED, run.error
    path = sqlite_path(harness.db.url)
    written = b"".join(p.read_bytes() for p in path.parent.glob(f"{path.name}*"))
    assert written and TOKEN.encode() not in written


async def test_every_run_time_use_of_a_credential_is_audited(
    harness: Harness, echo: Server
) -> None:
    credential = await github(harness.vault)
    run = await harness.run(call(echo.url("/echo")))
    uses = [e for e in await harness.audit.events() if e.action == "credential.use"]
    assert [(e.actor, e.target, e.outcome) for e in uses] == [
        (f"run:{run.id}", credential.id, "success")
    ]


async def test_an_unhealthy_credential_blocks_the_run(harness: Harness, echo: Server) -> None:
    credential = await github(harness.vault)
    await harness.vault.set_health(credential.id, "unhealthy", "invalid_grant")
    run = await harness.run(call(echo.url("/echo")))
    assert run.status == Status.BLOCKED
    assert "unhealthy: invalid_grant" in run.error
    assert echo.requests == []


async def test_a_missing_credential_fails_the_run_naming_it(harness: Harness, echo: Server) -> None:
    run = await harness.run(call(echo.url("/echo")))
    assert run.status == Status.FAILED
    assert "credential 'github' does not exist in this workspace" in run.error
    assert echo.requests == []


async def test_a_run_never_sees_another_workspaces_credential(
    harness: Harness, echo: Server
) -> None:
    await github(harness.vault, workspace=OTHER)
    run = await harness.run(call(echo.url("/echo")))
    assert run.status == Status.FAILED
    assert "does not exist in this workspace" in run.error
    assert echo.requests == []


async def test_a_credential_scoped_to_other_workflows_is_refused_and_audited(
    harness: Harness, echo: Server
) -> None:
    await github(harness.vault, policy=ScopePolicy(workflows=("some-other-workflow",)))
    run = await harness.run(call(echo.url("/echo")))
    assert run.status == Status.FAILED
    assert "may not be used here: workflow not in the credential's scope" in run.error
    denied = [e for e in await harness.audit.events() if e.outcome == "denied"]
    assert [e.action for e in denied] == ["credential.use"]
    assert echo.requests == []


async def test_code_sees_only_the_credentials_its_args_name(harness: Harness) -> None:
    await github(harness.vault)
    await harness.vault.create(
        owner(), name="other", kind="secret", fields={"token": Secret("other-canary-value")}
    )
    graph = {
        "nodes": [
            {
                "id": "code",
                "type": "code",
                "params": {
                    "code": (
                        "import os\n"
                        "def main(data):\n"
                        "    token = data['args']['token']\n"
                        "    return {'length': len(token), 'env': dict(os.environ),\n"
                        "            'keys': sorted(data)}\n"
                    ),
                    "args": {"token": "{{ credentials.github.token }}"},
                },
            }
        ]
    }
    run = await harness.run(graph)
    assert run.status == Status.SUCCEEDED, run.error
    assert json.loads(run.output or "") == {
        "length": len(TOKEN),
        "env": {},
        "keys": ["args", "input", "steps"],
    }
    assert "other-canary-value" not in await everything_stored(harness, run)


async def test_a_code_node_error_is_a_failed_run_and_the_engine_goes_on(harness: Harness) -> None:
    bomb = {
        "nodes": [
            {
                "id": "bomb",
                "type": "code",
                "params": {
                    "code": "import os\ndef main(data):\n    while True:\n        os.fork()\n"
                },
            }
        ]
    }
    run = await harness.run(bomb)
    assert run.status == Status.FAILED
    assert run.error.startswith("node 'bomb' (code): ")
    fine = {
        "nodes": [
            {"id": "ok", "type": "code", "params": {"code": "def main(data):\n    return 1\n"}}
        ]
    }
    assert (await harness.run(fine, name="fine")).status == Status.SUCCEEDED


def test_sqlite_checkpoints_live_next_to_the_database(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bastion.db'}"
    assert sqlite_path(url) == tmp_path / "bastion.checkpoints.sqlite"
