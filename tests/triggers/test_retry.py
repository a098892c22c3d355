"""Retry policies with a real engine, dispatcher and scheduler (SQLite and PostgreSQL): how
many attempts, when each is due, which failures are retried, cancellation of pending
retries, a retry that outlives its server; and the policy settings' own rules."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db.tables import AuditEvent, Run, Workflow, Workspace
from bastion.db.types import utcnow
from bastion.execution.checkpoints import open_checkpointer
from bastion.execution.dispatcher import Dispatcher
from bastion.execution.engine import Engine
from bastion.execution.inline import InlineExecutor
from bastion.execution.sandbox import Sandbox
from bastion.runs.ledger import Ledger
from bastion.runs.records import FINISHED, Status, Trigger
from bastion.triggers.gate import Gate, Origin, RunRequest
from bastion.triggers.retry import DEFAULT_RETRY_ON, RetryPlanner, RetryPolicies, RetrySettings
from bastion.triggers.scheduler import Scheduler
from bastion.vault.credentials import Vault
from bastion.workflows import graph as graphs
from bastion.workflows.egress import DEFAULT_DENY, EgressPolicy
from bastion.workflows.errors import Failure
from bastion.workflows.nodes.http_request import new_client
from bastion.workflows.store import Workflows

FAIL = {"nodes": [{"id": "stop", "type": "fail", "params": {"message": "upstream said no"}}]}
SLACK = timedelta(seconds=5)  # between a failure being recorded and its retry planned
MS = timedelta(milliseconds=1)
LATER = timedelta(days=30)


@dataclass
class Stack:
    """One server's worth: engine (with the retry planner), inline executor, dispatcher,
    scheduler."""

    db: Database
    audit: AuditLog
    workflows: Workflows
    policies: RetryPolicies
    dispatcher: Dispatcher
    scheduler: Scheduler

    async def workflow(self, graph: dict[str, Any], policy: RetrySettings | None) -> Workflow:
        workflow = await self.workflows.create(1, "wf", "", graphs.parse(graph), "user:olive")
        if policy is not None:
            await self.policies.put(workflow.id, policy, "user:olive")
        return workflow

    async def start(self, workflow: Workflow) -> Run:
        [run] = await Gate(self.dispatcher, self.audit).start(
            workflow, [RunRequest({"n": 1})], Origin(Trigger.MANUAL, "user:olive")
        )
        return run

    async def get(self, run_id: str) -> Run:
        async with self.db.session() as session:
            run = await session.get(Run, run_id)
        assert run is not None
        return run

    async def until(self, run_id: str, statuses: Sequence[str], timeout: float = 20) -> Run:
        async with asyncio.timeout(timeout):
            while True:
                run = await self.get(run_id)
                if run.status in statuses:
                    return run
                await asyncio.sleep(0.01)

    async def finished(self, run_id: str) -> Run:
        return await self.until(run_id, list(FINISHED))

    async def retries_of(self, run_id: str) -> list[Run]:
        async with self.db.session() as session:
            return list(await session.scalars(select(Run).where(Run.parent_run_id == run_id)))

    async def runs(self, workflow: Workflow) -> list[Run]:
        async with self.db.session() as session:
            found = await session.scalars(select(Run).where(Run.workflow_id == workflow.id))
            return sorted(found, key=lambda run: run.attempt)

    async def tick(self, at: Any) -> int:
        return await self.scheduler.tick(at)


@asynccontextmanager
async def open_stack(
    db: Database, keyring: Keyring, rng: random.Random | None = None, owner: str = "engine-a"
) -> AsyncIterator[Stack]:
    audit = AuditLog(db, keyring)
    ledger = Ledger(db)
    workflows = Workflows(db)
    async with open_checkpointer(db.url) as checkpointer, new_client() as http:
        engine = Engine(
            ledger=ledger,
            workflows=workflows,
            vault=Vault(db, keyring, audit),
            checkpointer=checkpointer,
            egress=EgressPolicy.parse(DEFAULT_DENY, ["127.0.0.1/32"]),  # the test server
            http=http,
            code=Sandbox(),
            owner=owner,
            retries=RetryPlanner(audit, rng),
        )
        executor = InlineExecutor(engine, concurrency=8, workspace_concurrency=8)
        dispatcher = Dispatcher(db, ledger, executor, max_input_bytes=64 * 1024)
        scheduler = Scheduler(Gate(dispatcher, audit))
        try:
            yield Stack(db, audit, workflows, RetryPolicies(db), dispatcher, scheduler)
        finally:
            await executor.stop()


@pytest.fixture
async def db(migrated_db: Database) -> Database:
    async with migrated_db.transaction() as session:
        session.add(Workspace(id=1, slug="ops", name="Ops"))
    return migrated_db


@pytest.fixture
async def stack(db: Database, keyring: Keyring) -> AsyncIterator[Stack]:
    async with open_stack(db, keyring) as opened:
        yield opened


def policy(max_attempts: int, **kw: Any) -> RetrySettings:
    return RetrySettings(max_attempts=max_attempts, **kw)


# -- attempts and their times ---------------------------------------------------------------


async def test_a_retryable_failure_runs_max_attempts_times_with_exponential_backoff(
    stack: Stack,
) -> None:
    settings = policy(
        7,
        initial_delay_seconds=10,
        multiplier=3,
        max_delay_seconds=100,
        jitter=False,
        retry_on=[Failure.NODE_ERROR],
    )
    workflow = await stack.workflow(FAIL, settings)
    first = await stack.start(workflow)
    chain = [await stack.finished(first.id)]
    for attempt in range(2, 8):
        failed = chain[-1]
        assert (failed.status, failed.failure) == (Status.FAILED, Failure.NODE_ERROR)
        [retry] = await stack.retries_of(failed.id)
        assert (retry.status, retry.attempt, retry.trigger, retry.actor) == (
            Status.SCHEDULED,
            attempt,
            Trigger.RETRY,
            "retry-policy",
        )
        assert (retry.input, retry.version) == (first.input, first.version)
        assert retry.reason == f"retry of {failed.id} after node_error"
        # The delay before attempt n + 1 is min(max, initial * multiplier ** (n - 1)).
        bound = timedelta(seconds=min(100, 10 * 3 ** (attempt - 2)))
        assert retry.not_before is not None and failed.finished_at is not None
        assert bound <= retry.not_before - failed.finished_at < bound + SLACK
        # Queued (and so run) once the scheduler's clock reaches not_before, not before.
        assert await stack.tick(retry.not_before - MS) == 0
        assert (await stack.get(retry.id)).status == Status.SCHEDULED
        assert await stack.tick(retry.not_before) == 1
        chain.append(await stack.finished(retry.id))

    assert [run.attempt for run in chain] == [1, 2, 3, 4, 5, 6, 7]
    assert [run.parent_run_id for run in chain] == [None] + [run.id for run in chain[:-1]]
    assert {run.status for run in chain} == {Status.FAILED}
    assert await stack.retries_of(chain[-1].id) == []  # the seventh was the last
    assert await stack.tick(utcnow() + LATER) == 0
    assert [run.id for run in await stack.runs(workflow)] == [run.id for run in chain]
    async with stack.db.session() as session:
        events = list(
            await session.scalars(select(AuditEvent).where(AuditEvent.action == "run.retry"))
        )
    assert sorted(e.target for e in events) == sorted(run.id for run in chain[1:])
    assert sorted(json.loads(e.details)["attempt"] for e in events) == [2, 3, 4, 5, 6, 7]


async def test_with_full_jitter_each_delay_is_drawn_between_zero_and_its_bound(
    db: Database, keyring: Keyring
) -> None:
    settings = policy(4, initial_delay_seconds=60, multiplier=2, retry_on=[Failure.NODE_ERROR])
    assert settings.jitter  # the default
    mirror = random.Random(1234)  # the planner's draws, predicted
    async with open_stack(db, keyring, rng=random.Random(1234)) as stack:
        workflow = await stack.workflow(FAIL, settings)
        failed = await stack.finished((await stack.start(workflow)).id)
        for attempt in (2, 3, 4):
            [retry] = await stack.retries_of(failed.id)
            bound = timedelta(seconds=60 * 2 ** (attempt - 2))
            drawn = settings.delay(attempt - 1, mirror)
            assert timedelta(0) <= drawn <= bound
            assert retry.not_before is not None and failed.finished_at is not None
            assert drawn <= retry.not_before - failed.finished_at < drawn + SLACK
            assert await stack.tick(retry.not_before) == 1
            failed = await stack.finished(retry.id)
        assert failed.attempt == 4
        assert await stack.retries_of(failed.id) == []


# -- which failures ---------------------------------------------------------------------------


async def test_a_failure_class_not_in_retry_on_is_not_retried(stack: Stack) -> None:
    workflow = await stack.workflow(FAIL, policy(5))  # default retry_on: no node_error
    assert Failure.NODE_ERROR not in DEFAULT_RETRY_ON
    run = await stack.finished((await stack.start(workflow)).id)
    assert (run.status, run.failure) == (Status.FAILED, Failure.NODE_ERROR)
    assert await stack.retries_of(run.id) == []
    assert await stack.tick(utcnow() + LATER) == 0
    assert len(await stack.runs(workflow)) == 1


async def test_without_a_policy_or_with_one_attempt_nothing_is_retried(stack: Stack) -> None:
    once = await stack.workflow(FAIL, policy(1, retry_on=[Failure.NODE_ERROR]))
    run = await stack.finished((await stack.start(once)).id)
    assert await stack.retries_of(run.id) == []
    await stack.policies.delete(once.id)
    run = await stack.finished((await stack.start(once)).id)
    assert run.status == Status.FAILED
    assert await stack.retries_of(run.id) == []


@asynccontextmanager
async def answering(statuses: list[int]) -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 answering with `statuses`, one per request, then 200;
    the URL to ask."""
    answered: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            status = statuses[len(answered)] if len(answered) < len(statuses) else 200
            answered.append(status)
            writer.write(
                f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                "Content-Length: 2\r\nConnection: close\r\n\r\n{}".encode()
            )
            await writer.drain()
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"
    finally:
        server.close()
        await server.wait_closed()


def fetch(url: str) -> dict[str, Any]:
    params = {"url": url, "fail_on_status": True}
    return {"nodes": [{"id": "fetch", "type": "http_request", "params": params}]}


async def test_an_http_4xx_answer_is_not_retried_by_the_default_classes(stack: Stack) -> None:
    async with answering([404]) as url:
        workflow = await stack.workflow(fetch(url), policy(3, jitter=False))
        run = await stack.finished((await stack.start(workflow)).id)
    assert (run.status, run.failure) == (Status.FAILED, Failure.HTTP_4XX)
    assert await stack.retries_of(run.id) == []


# -- cancellation -----------------------------------------------------------------------------


async def test_cancelling_a_failed_run_cancels_its_scheduled_retry(stack: Stack) -> None:
    settings = policy(5, initial_delay_seconds=30, jitter=False, retry_on=[Failure.NODE_ERROR])
    workflow = await stack.workflow(FAIL, settings)
    failed = await stack.finished((await stack.start(workflow)).id)
    [retry] = await stack.retries_of(failed.id)
    assert retry.status == Status.SCHEDULED

    run, cancelled = await stack.dispatcher.cancel(failed.id)
    assert run is not None and (run.status, cancelled) == (Status.FAILED, 1)
    retry = await stack.get(retry.id)
    assert (retry.status, retry.error) == (
        Status.CANCELLED,
        "cancelled with the run it would have retried",
    )
    assert await stack.tick(utcnow() + LATER) == 0
    assert [r.status for r in await stack.runs(workflow)] == [Status.FAILED, Status.CANCELLED]


async def test_cancelling_the_first_run_cancels_a_retry_further_down_the_chain(
    stack: Stack,
) -> None:
    settings = policy(5, initial_delay_seconds=5, jitter=False, retry_on=[Failure.NODE_ERROR])
    workflow = await stack.workflow(FAIL, settings)
    first = await stack.finished((await stack.start(workflow)).id)
    [second] = await stack.retries_of(first.id)
    assert second.not_before is not None
    await stack.tick(second.not_before)
    await stack.finished(second.id)
    [third] = await stack.retries_of(second.id)
    assert third.status == Status.SCHEDULED

    _, cancelled = await stack.dispatcher.cancel(first.id)
    assert cancelled == 1
    assert (await stack.get(third.id)).status == Status.CANCELLED
    assert await stack.tick(utcnow() + LATER) == 0
    assert len(await stack.runs(workflow)) == 3


async def test_cancelling_the_chain_while_a_retry_runs_stops_further_retries(stack: Stack) -> None:
    slow_fail = {
        "nodes": [
            {"id": "wait", "type": "delay", "params": {"seconds": 1.0}},
            {"id": "stop", "type": "fail", "params": {}},
        ],
        "edges": [{"from": "wait", "to": "stop"}],
    }
    settings = policy(5, initial_delay_seconds=1, jitter=False, retry_on=[Failure.NODE_ERROR])
    workflow = await stack.workflow(slow_fail, settings)
    first = await stack.finished((await stack.start(workflow)).id)
    [second] = await stack.retries_of(first.id)
    assert second.not_before is not None
    assert await stack.tick(second.not_before) == 1
    await stack.until(second.id, [Status.RUNNING])

    await stack.dispatcher.cancel(first.id)  # the first has failed; its retry is running
    second = await stack.finished(second.id)
    assert second.status in (Status.FAILED, Status.CANCELLED)
    # The chain ends here: no retry follows (or, had the retry failed before the cancel
    # came, the one it planned was cancelled with the chain).
    assert [r.status for r in await stack.retries_of(second.id)] in ([], [Status.CANCELLED])
    assert await stack.tick(utcnow() + LATER) == 0


# -- restart ----------------------------------------------------------------------------------


async def test_a_scheduled_retry_survives_a_restart(db: Database, keyring: Keyring) -> None:
    settings = policy(3, initial_delay_seconds=20, jitter=False)  # default classes: http_5xx
    async with answering([503]) as url:
        async with open_stack(db, keyring, owner="engine-a") as before:
            workflow = await before.workflow(fetch(url), settings)
            failed = await before.finished((await before.start(workflow)).id)
            assert (failed.status, failed.failure) == (Status.FAILED, Failure.HTTP_5XX)
            [retry] = await before.retries_of(failed.id)
            assert retry.status == Status.SCHEDULED and retry.not_before is not None
        # The server is gone. Another one, with its own Database object, takes over.
        again = Database(db.url)
        try:
            async with open_stack(again, keyring, owner="engine-b") as after:
                assert await after.tick(retry.not_before - MS) == 0
                assert await after.tick(retry.not_before) == 1
                done = await after.finished(retry.id)
        finally:
            await again.dispose()
    assert (done.status, done.attempt, done.parent_run_id) == (Status.SUCCEEDED, 2, failed.id)
    assert json.loads(done.output or "")["status"] == 200
    assert done.lease_owner is None
    assert (await before.get(failed.id)).status == Status.FAILED


# -- the settings -----------------------------------------------------------------------------


@pytest.mark.parametrize("attempts", [0, 101])
def test_max_attempts_outside_1_to_100_is_refused(attempts: int) -> None:
    with pytest.raises(ValidationError, match="max_attempts"):
        RetrySettings(max_attempts=attempts)


def test_max_attempts_1_and_100_are_accepted() -> None:
    assert RetrySettings(max_attempts=1).max_attempts == 1
    assert RetrySettings(max_attempts=100).max_attempts == 100


def test_a_max_delay_below_the_initial_delay_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_delay_seconds must not be below"):
        RetrySettings(max_attempts=3, initial_delay_seconds=60, max_delay_seconds=30)
    assert RetrySettings(max_attempts=3, initial_delay_seconds=30, max_delay_seconds=30)


@pytest.mark.parametrize(
    "bad",
    [
        {"retry_on": []},
        {"retry_on": ["teapot"]},
        {"multiplier": 0.5},
        {"initial_delay_seconds": -1},
        {"max_delay_seconds": 8 * 86400},
        {"unknown": 1},
    ],
)
def test_other_invalid_settings_are_refused(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        RetrySettings.model_validate({"max_attempts": 3, **bad})


def test_without_jitter_the_delay_is_the_capped_exponential_bound() -> None:
    settings = RetrySettings(
        max_attempts=100,
        initial_delay_seconds=2,
        multiplier=3,
        max_delay_seconds=500,
        jitter=False,
    )
    rng = random.Random(0)
    expected = [2, 6, 18, 54, 162, 486, 500, 500]
    assert [settings.delay(n, rng).total_seconds() for n in range(1, 9)] == expected
    assert settings.delay(99, rng) == timedelta(seconds=500)  # no overflow on the way
    assert RetrySettings(max_attempts=3, initial_delay_seconds=0, jitter=False).delay(
        2, rng
    ) == timedelta(0)


def test_with_full_jitter_the_delay_stays_between_zero_and_the_bound() -> None:
    settings = RetrySettings(
        max_attempts=100, initial_delay_seconds=4, multiplier=2, max_delay_seconds=100
    )
    rng = random.Random(42)
    for attempt, bound in [(1, 4), (2, 8), (3, 16), (5, 64), (6, 100), (40, 100)]:
        drawn = [settings.delay(attempt, rng).total_seconds() for _ in range(2000)]
        assert min(drawn) >= 0 and max(drawn) <= bound
        # Spread over the whole range, not bunched at either end.
        assert min(drawn) < bound * 0.05 and max(drawn) > bound * 0.95


async def test_a_policy_is_stored_and_read_back(stack: Stack) -> None:
    workflow = await stack.workflow(FAIL, None)
    assert await stack.policies.get(workflow.id) is None
    settings = policy(
        4, jitter=False, retry_on=[Failure.HTTP_5XX, Failure.TIMEOUT, Failure.HTTP_5XX]
    )
    await stack.policies.put(workflow.id, settings, "user:olive")
    stored = await stack.policies.get(workflow.id)
    assert stored is not None
    assert (stored.max_attempts, stored.jitter) == (4, False)
    assert stored.retry_on == [Failure.HTTP_5XX, Failure.TIMEOUT]  # once each
    assert await stack.policies.delete(workflow.id)
    assert not await stack.policies.delete(workflow.id)
