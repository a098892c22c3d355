"""Durable runs: a real `bastion serve` process is killed with SIGKILL and started again.

A run accepted as queued is executed after the restart; a run cut off mid-way resumes
from its last checkpoint (earlier steps are not repeated); a run cut off inside a step
that may have side effects is failed instead of repeated.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from bastion.accounts.rbac import Role
from bastion.accounts.tokens import create_token
from bastion.accounts.users import get_user
from bastion.accounts.workspaces import create_workspace, grant
from bastion.config import load_settings
from bastion.db import Database
from bastion.workflows import graph as graphs
from bastion.workflows.store import Workflows
from tests.e2e.conftest import bastion_env
from tests.services import free_port, port_open, stop_process, wait_until

pytestmark = pytest.mark.services


@dataclass
class Deployment:
    env: dict[str, str]
    token: str
    workdir: Path

    async def workflow(self, name: str, graph: dict[str, Any]) -> str:
        db = Database(load_settings(self.env).settings.effective_database_url)
        try:
            return (await Workflows(db).create(1, name, "", graphs.parse(graph), "test")).id
        finally:
            await db.dispose()


@contextlib.contextmanager
def serving(deployment: Deployment, port: int) -> Iterator[subprocess.Popen[bytes]]:
    with (deployment.workdir / f"server-{time.monotonic_ns()}.err").open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bastion", "serve", "--port", str(port)],
            env=deployment.env,
            cwd=deployment.workdir,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            wait_until(lambda: port_open(port), timeout=30, what="bastion serve")
            yield proc
        finally:
            stop_process(proc)


def prepared(tmp_path: Path, **extra: str) -> Deployment:
    """`bastion init`, then workspace 1 ("ops") with the admin as owner and their token."""
    env, _ = bastion_env(tmp_path, **extra)

    async def prepare() -> str:
        db = Database(load_settings(env).settings.effective_database_url)
        try:
            async with db.transaction() as session:
                admin = await get_user(session, "admin")
                ops = await create_workspace(session, "ops")
                await grant(session, admin.id, ops.id, Role.OWNER)
                token, _ = await create_token(
                    session,
                    admin,
                    name="e2e",
                    workspace_id=ops.id,
                    role=Role.OWNER,
                    lifetime=timedelta(days=1),
                )
                return token
        finally:
            await db.dispose()

    return Deployment(env, asyncio.run(prepare()), tmp_path)


@pytest.fixture
def deployment(tmp_path: Path) -> Deployment:
    return prepared(tmp_path, BASTION_RUN_LEASE_SECONDS="2")


def api(port: int, token: str) -> httpx.Client:
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}/api/v1",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )


def run_of(http: httpx.Client, run_id: str) -> dict[str, Any]:
    answer = http.get(f"/runs/{run_id}")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


def wait_for(http: httpx.Client, run_id: str, done: Any, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = run_of(http, run_id)
        if done(run):
            return run
        time.sleep(0.05)
    raise TimeoutError(f"run {run_id} did not get there: {run_of(http, run_id)['status']}")


def ended(run: dict[str, Any]) -> bool:
    return run["status"] not in ("queued", "running")


def start(http: httpx.Client, workflow_id: str) -> str:
    answer = http.post(f"/workflows/{workflow_id}/runs", json={"input": {"n": 1}})
    assert answer.status_code == 202, answer.text
    return str(answer.json()["id"])


def kill(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)


SLOW_MIDDLE = {
    "nodes": [
        {"id": "before", "type": "set", "params": {"values": {"n": "{{ input.n }}"}}},
        {"id": "pause", "type": "delay", "params": {"seconds": 1.5}},
        {"id": "after", "type": "transform", "params": {"expression": "steps.before.n"}},
    ],
    "edges": [{"from": "before", "to": "pause"}, {"from": "pause", "to": "after"}],
}


def test_a_run_accepted_right_before_a_kill_is_executed_after_restart(
    deployment: Deployment,
) -> None:
    workflow = asyncio.run(deployment.workflow("slow", SLOW_MIDDLE))
    port = free_port()
    with serving(deployment, port) as proc, api(port, deployment.token) as http:
        run_id = start(http, workflow)
        kill(proc)  # the 202 was the only promise made
    with serving(deployment, port), api(port, deployment.token) as http:
        run = wait_for(http, run_id, ended)
    assert run["status"] == "succeeded", run["error"]
    assert run["output"] == 1


def test_a_run_killed_mid_way_resumes_from_its_last_checkpoint(deployment: Deployment) -> None:
    workflow = asyncio.run(deployment.workflow("slow", SLOW_MIDDLE))
    port = free_port()
    with serving(deployment, port) as proc, api(port, deployment.token) as http:
        run_id = start(http, workflow)
        wait_for(http, run_id, lambda run: [s["node"] for s in run["steps"]] == ["before"])
        kill(proc)  # inside the pause
    with serving(deployment, port), api(port, deployment.token) as http:
        run = wait_for(http, run_id, ended)
    assert run["status"] == "succeeded", run["error"]
    # "before" ran once: its result came back from the checkpoint, not from a second run.
    assert [s["node"] for s in run["steps"]] == ["before", "pause", "after"]
    assert run["output"] == 1


class _SlowPost(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        type(self).received += 1
        time.sleep(5)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_run_killed_inside_a_side_effect_is_failed_not_repeated(
    deployment: Deployment,
) -> None:
    target = ThreadingHTTPServer(("127.0.0.1", 0), _SlowPost)
    threading.Thread(target=target.serve_forever, daemon=True).start()
    address = f"127.0.0.1:{target.server_address[1]}"
    deployment.env["BASTION_EGRESS_ALLOW"] = address
    graph = {
        "nodes": [
            {
                "id": "pay",
                "type": "http_request",
                "params": {"method": "POST", "url": f"http://{address}/pay"},
            }
        ]
    }
    workflow = asyncio.run(deployment.workflow("payment", graph))
    port = free_port()
    try:
        with serving(deployment, port) as proc, api(port, deployment.token) as http:
            run_id = start(http, workflow)
            wait_until(lambda: _SlowPost.received == 1, timeout=20, what="the POST")
            kill(proc)
        with serving(deployment, port), api(port, deployment.token) as http:
            run = wait_for(http, run_id, ended)
    finally:
        target.shutdown()
        target.server_close()
    assert run["status"] == "failed"
    assert "interrupted during node 'pay'" in run["error"]
    assert _SlowPost.received == 1  # the payment was not sent twice
