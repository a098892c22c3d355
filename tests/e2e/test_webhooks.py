"""Webhooks against real `bastion serve` processes: limits shared through Redis, and
deliveries answered 202 surviving a SIGKILL under load.

1. Two servers on one Redis and one SQLite file (as tests/e2e/test_shared_redis.py runs
   them): a trigger's rate limit is one budget for the deployment, not one per process.
2. One server takes signed deliveries concurrently and is killed with SIGKILL mid-load;
   after a restart on the same data dir, every delivery it answered 202 has its run, and
   that run succeeds. Deliveries that got no answer may or may not have a run.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_durable_runs import Deployment, api, kill, prepared, serving
from tests.services import free_port

pytestmark = pytest.mark.services

SECRET = "e2e webhook secret, not a real one"
# One node: the run only has to prove it was stored and executed.
ECHO = {"nodes": [{"id": "echo", "type": "set", "params": {"values": {"n": "{{ input.body.n }}"}}}]}


def _webhook(http: httpx.Client, workflow_id: str, **limits: str) -> str:
    """A hmac_sha256 webhook on `workflow_id` with its secret in the vault; its URL path."""
    secret = http.post(
        "/credentials?workspace_id=1",
        json={"name": "hook-secret", "kind": "secret", "fields": {"value": SECRET}},
    )
    assert secret.status_code == 201, secret.text
    created = http.post(
        f"/workflows/{workflow_id}/triggers",
        json={
            "kind": "webhook",
            "name": "github",
            "settings": {
                "scheme": "hmac_sha256",
                "secret_credential": "hook-secret",
                **limits,
            },
        },
    )
    assert created.status_code == 201, created.text
    return str(created.json()["url"])


def _signed(n: int) -> tuple[bytes, dict[str, str]]:
    """A GitHub-style delivery: its body and headers, with a delivery id of its own."""
    body = json.dumps({"n": n}).encode()
    return body, {
        "content-type": "application/json",
        "x-github-delivery": f"delivery-{n}",
        "x-hub-signature-256": "sha256="
        + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest(),
    }


# -- 1. the rate limit counts across both servers --------------------------------------


@pytest.fixture
def pair(tmp_path: Path, redis_url: str) -> Iterator[tuple[Deployment, int, int]]:
    deployment = prepared(tmp_path, BASTION_REDIS_URL=redis_url)
    a, b = free_port(), free_port()
    with serving(deployment, a), serving(deployment, b):
        yield deployment, a, b


def test_a_webhook_rate_limit_is_one_budget_across_servers_sharing_redis(
    pair: tuple[Deployment, int, int],
) -> None:
    deployment, a, b = pair
    workflow = asyncio.run(deployment.workflow("echo", ECHO))
    with api(a, deployment.token) as http:
        path = _webhook(http, workflow, rate_limit="10/minute", ip_rate_limit="1000/minute")
    answers: list[tuple[int, httpx.Response]] = []
    with httpx.Client(timeout=10) as client:
        for n in range(30):
            port = (a, b)[n % 2]  # alternate: a, b, a, b, ...
            body, headers = _signed(n)
            response = client.post(f"http://127.0.0.1:{port}{path}", content=body, headers=headers)
            answers.append((port, response))

    accepted = [(port, r) for port, r in answers if r.status_code == 202]
    refused = [r for _, r in answers if r.status_code != 202]
    assert len(accepted) == 10, [r.status_code for _, r in answers]
    # The first ten, five on each server: one budget, not ten per process.
    assert [r.status_code for _, r in answers[:10]] == [202] * 10
    assert {port for port, _ in accepted} == {a, b}
    assert len(refused) == 20
    for response in refused:
        assert response.status_code == 429, response.text
        assert 1 <= int(response.headers["retry-after"]) <= 60
    # The accepted deliveries each have their own run; the refused ones left nothing.
    run_ids = {r.json()["run_id"] for _, r in accepted}
    assert len(run_ids) == 10
    with api(b, deployment.token) as http:
        page = http.get("/runs", params={"workspace_id": 1, "workflow_id": workflow, "limit": 100})
        assert page.status_code == 200, page.text
        assert {run["id"] for run in page.json()["runs"]} == run_ids


# -- 2. 202 means stored: a SIGKILL under load loses no accepted delivery --------------

DELIVERIES = 400
RATE = 160.0  # deliveries/s offered: ~2.5 s for all of them
SENDERS = 16  # at most this many in flight
KILL_AFTER = 1.2  # seconds into the load


@dataclass
class Tally:
    accepted: dict[int, str] = field(default_factory=dict)  # delivery -> run id
    other: dict[int, int] = field(default_factory=dict)  # delivery -> any other status
    unanswered: list[int] = field(default_factory=list)  # sent; no answer (the kill)
    unsent: int = 0


async def _load_then_kill(url: str, proc: subprocess.Popen[bytes]) -> Tally:
    """Offer DELIVERIES at RATE from SENDERS concurrent senders; SIGKILL the server
    KILL_AFTER seconds in, while the load goes on."""
    tally = Tally()
    requests = [_signed(n) for n in range(DELIVERIES)]
    numbers = iter(range(DELIVERIES))
    killed = asyncio.Event()
    started = time.monotonic()

    async def sender(client: httpx.AsyncClient) -> None:
        for n in numbers:
            delay = started + n / RATE - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if killed.is_set():
                tally.unsent += 1
                continue
            body, headers = requests[n]
            try:
                response = await client.post(url, content=body, headers=headers)
            except httpx.TransportError:
                tally.unanswered.append(n)
                continue
            if response.status_code == 202:
                tally.accepted[n] = response.json()["run_id"]
            else:
                tally.other[n] = response.status_code

    async def killer() -> None:
        await asyncio.sleep(KILL_AFTER)
        await asyncio.to_thread(kill, proc)
        killed.set()

    limits = httpx.Limits(max_connections=SENDERS, max_keepalive_connections=SENDERS)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        await asyncio.gather(killer(), *(sender(client) for _ in range(SENDERS)))
    return tally


def _statuses(http: httpx.Client, workflow_id: str) -> dict[str, str]:
    """Every run of the workflow: id -> status, read page by page through the API."""
    found: dict[str, str] = {}
    before: str | None = None
    while True:
        params: dict[str, Any] = {"workspace_id": 1, "workflow_id": workflow_id, "limit": 500}
        if before is not None:
            params["before"] = before
        page = http.get("/runs", params=params)
        assert page.status_code == 200, page.text
        found.update({run["id"]: run["status"] for run in page.json()["runs"]})
        before = page.json()["next_before"]
        if before is None:
            return found


def test_every_delivery_answered_202_before_a_sigkill_runs_after_the_restart(
    tmp_path: Path,
) -> None:
    # A lapsed lease is noticed soon: runs the kill caught mid-way resume within seconds.
    deployment = prepared(tmp_path, BASTION_RUN_LEASE_SECONDS="2")
    workflow = asyncio.run(deployment.workflow("echo", ECHO))
    port = free_port()
    with serving(deployment, port) as proc:
        with api(port, deployment.token) as http:
            # Limits far above the offered load: every refusal here would be a failure.
            path = _webhook(http, workflow, rate_limit="5000/second", ip_rate_limit="5000/second")
        tally = asyncio.run(_load_then_kill(f"http://127.0.0.1:{port}{path}", proc))

    assert tally.other == {}, f"answers other than 202 before the kill: {tally.other}"
    assert len(tally.accepted) >= 20, f"too little load before the kill: {len(tally.accepted)}"
    assert tally.unanswered, "the kill came after the load, not during it"
    assert len(set(tally.accepted.values())) == len(tally.accepted)

    with serving(deployment, port), api(port, deployment.token) as http:
        deadline = time.monotonic() + 30
        while True:
            statuses = _statuses(http, workflow)
            pending = {
                n: statuses.get(run_id)
                for n, run_id in tally.accepted.items()
                if statuses.get(run_id) != "succeeded"
            }
            missing = [n for n, status in pending.items() if status is None]
            assert not missing, f"deliveries answered 202 have no run: {missing}"
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    assert pending == {}, f"accepted deliveries whose run did not succeed: {pending}"
    # Unanswered deliveries may have been stored just before the kill; nothing else may be.
    extra = set(statuses) - set(tally.accepted.values())
    assert len(extra) <= len(tally.unanswered)
