"""Workflow runs: throughput and latency from "accepted" to "succeeded".

1. A 3-node workflow (`set → transform → condition`) on the inline executor and SQLite,
   the embedded default: `--runs` runs accepted by 64 concurrent callers (accepted = the
   run is committed `queued`, which is when the API answers 202). Runs/s over the whole
   batch, and p50/p99 of finished_at - queued_at as Bastion records them.
2. The same with the Celery executor (`--celery`): a real Redis and one `bastion worker`
   with two prefork processes, started here on loopback, sharing the SQLite file.
3. The Windmill-style flow: one run of 40 sequential tasks of ~10 ms (`delay` nodes),
   inline; orchestration overhead per task = (wall time - 40 x 10 ms) / 40.

Baselines, same run: the same graphs in bare LangGraph, without a checkpointer and with
LangGraph's SQLite saver checkpointing every step as Bastion configures it, but with no
records, leases or credentials (what any LangGraph engine with per-step persistence pays).
Peers' published figures for context: n8n 220 executions/s on 2 vCPU; Windmill's
40 x 10 ms flow: Hatchet 1.2 s, Temporal 3.0 s.

Targets: ≥ 500 runs/s inline; overhead < 5 ms per task in the 40-task flow.

    .venv/bin/python -m bench.runs [--runs 3000] [--celery]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import uvloop
from sqlalchemy import func, select
from tests.services import run_redis

from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db import migrate as migrations
from bastion.db.tables import Run, Workflow, Workspace
from bastion.execution.celery_executor import CeleryExecutor, celery_app
from bastion.execution.checkpoints import open_checkpointer
from bastion.execution.dispatcher import Dispatcher
from bastion.execution.engine import Engine, EngineLimits
from bastion.execution.inline import InlineExecutor
from bastion.execution.sandbox import Sandbox
from bastion.runs.ledger import Ledger
from bastion.runs.records import FINISHED, Trigger
from bastion.triggers.gate import Gate, Origin, RunRequest
from bastion.vault.credentials import Vault
from bastion.workflows import graph as graphs
from bastion.workflows import templates
from bastion.workflows.compiler import Compiled
from bastion.workflows.egress import DEFAULT_DENY, EgressPolicy
from bastion.workflows.nodes.catalog import NODE_TYPES
from bastion.workflows.nodes.http_request import new_client
from bastion.workflows.store import Workflows
from bench.harness import emit

CALLERS = 64
THREE = {
    "nodes": [
        {"id": "seed", "type": "set", "params": {"values": {"n": "{{ input.n }}"}}},
        {"id": "pick", "type": "transform", "params": {"expression": "steps.seed.n"}},
        {"id": "big", "type": "condition", "params": {"expression": "steps.pick > `10`"}},
    ],
    "edges": [{"from": "seed", "to": "pick"}, {"from": "pick", "to": "big"}],
}
TASKS, TASK_SECONDS = 40, 0.01
CHAIN = {
    "nodes": [
        {"id": f"t{i}", "type": "delay", "params": {"seconds": TASK_SECONDS}} for i in range(TASKS)
    ],
    "edges": [{"from": f"t{i}", "to": f"t{i + 1}"} for i in range(TASKS - 1)],
}


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 2)

    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99)}


async def prepared(url: str) -> Database:
    await asyncio.to_thread(migrations.upgrade, url)
    db = Database(url)
    async with db.transaction() as session:
        session.add(Workspace(id=1, slug="bench", name="Bench"))
    return db


@asynccontextmanager
async def inline_gate(db: Database, concurrency: int) -> AsyncIterator[Gate]:
    keyring = Keyring(os.urandom(32))
    audit = AuditLog(db, keyring)
    ledger = Ledger(db)
    async with open_checkpointer(db.url) as checkpointer, new_client() as http:
        engine = Engine(
            ledger=ledger,
            workflows=Workflows(db),
            vault=Vault(db, keyring, audit),
            checkpointer=checkpointer,
            egress=EgressPolicy.parse(DEFAULT_DENY),
            http=http,
            code=Sandbox(),
            owner="bench",
            limits=EngineLimits(),
        )
        executor = InlineExecutor(
            engine, concurrency=concurrency, workspace_concurrency=concurrency
        )
        leases = asyncio.create_task(engine.keep_leases())  # as the server runs it
        # Runs start as every trigger starts them: the health guard and a run.start record.
        yield Gate(Dispatcher(db, ledger, executor, max_input_bytes=2**20), audit)
        leases.cancel()
        await executor.stop()


async def batch(db: Database, gate: Gate, workflow: Workflow, count: int) -> dict[str, Any]:
    """Accept `count` runs from CALLERS concurrent callers; wait for all to finish."""
    numbers = iter(range(count))

    async def caller() -> None:
        for n in numbers:
            await start(gate, workflow, n)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(CALLERS)))
    accepted = time.perf_counter() - started
    while True:
        async with db.session() as session:
            done = await session.scalar(
                select(func.count()).where(Run.workflow_id == workflow.id, Run.status.in_(FINISHED))
            )
        if done == count:
            break
        await asyncio.sleep(0.05)
    async with db.session() as session:
        rows = (
            await session.execute(
                select(Run.queued_at, Run.finished_at, Run.status).where(
                    Run.workflow_id == workflow.id
                )
            )
        ).all()
    first = min(row.queued_at for row in rows)
    last = max(row.finished_at for row in rows)
    failed = sum(row.status != "succeeded" for row in rows)
    latencies = [(row.finished_at - row.queued_at).total_seconds() for row in rows]
    return {
        "runs": count,
        "failed": failed,
        "runs_per_second": round(count / (last - first).total_seconds(), 1),
        "accepted_per_second": round(count / accepted, 1),
        **percentiles(latencies),
    }


async def start(gate: Gate, workflow: Workflow, n: int) -> Run:
    [run] = await gate.start(workflow, [RunRequest({"n": n})], Origin(Trigger.API, "bench"))
    return run


async def timed_run(db: Database, gate: Gate, workflow: Workflow) -> float:
    """Seconds from dispatch to a finished status, polled every 2 ms."""
    started = time.perf_counter()
    run = await start(gate, workflow, 1)
    while True:
        async with db.session() as session:
            status = await session.scalar(select(Run.status).where(Run.id == run.id))
        if status in FINISHED:
            return time.perf_counter() - started
        await asyncio.sleep(0.002)


async def one_at_a_time(db: Database, gate: Gate, workflow: Workflow, count: int) -> dict[str, Any]:
    """Latency without queueing: each run dispatched after the previous one finished."""
    return percentiles([await timed_run(db, gate, workflow) for _ in range(count)])


async def inline_runs(url: str, count: int) -> tuple[dict[str, Any], dict[str, Any]]:
    db = await prepared(url)
    try:
        async with inline_gate(db, concurrency=64) as gate:
            workflows = Workflows(db)
            warm = await workflows.create(1, "warm", "", graphs.parse(THREE), "bench")
            await batch(db, gate, warm, 200)
            three = await workflows.create(1, "three", "", graphs.parse(THREE), "bench")
            measured = await batch(db, gate, three, count)
            alone = await workflows.create(1, "alone", "", graphs.parse(THREE), "bench")
            measured["unloaded"] = await one_at_a_time(db, gate, alone, 200)
            chain = await workflows.create(1, "chain", "", graphs.parse(CHAIN), "bench")
            await batch(db, gate, chain, 1)  # warm: compile and cache
            walls = [await timed_run(db, gate, chain) for _ in range(5)]
    finally:
        await db.dispose()
    wall = sorted(walls)[len(walls) // 2]
    flow = {
        "tasks": TASKS,
        "task_ms": TASK_SECONDS * 1000,
        "wall_s_median_of_5": round(wall, 3),
        "overhead_ms_per_task": round((wall - TASKS * TASK_SECONDS) / TASKS * 1000, 2),
    }
    return measured, flow


async def bare_langgraph(
    count: int, checkpoints_url: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The floor: the same graphs compiled by Bastion's compiler, nodes run directly (no
    credentials, records, leases). Without `checkpoints_url`, no checkpointer at all; with
    it, LangGraph's SQLite saver as Bastion configures it, a checkpoint after every step."""
    if checkpoints_url is not None:
        async with open_checkpointer(checkpoints_url) as saver:
            return await _bare(count, saver)
    return await _bare(count, None)


async def _bare(count: int, saver: Any) -> tuple[dict[str, Any], dict[str, Any]]:

    async def plain(node: Any, state: Any, context: Any) -> Any:
        kind = NODE_TYPES[node.type]
        params = templates.render(node.params, templates.state_lookup(state, {}))
        return await kind.run(kind.params.model_validate(params), _BareContext(state))

    three = Compiled(graphs.parse(THREE), plain, saver)
    sem = asyncio.Semaphore(64)
    latencies: list[float] = []

    async def one(n: int) -> None:
        async with sem:
            started = time.perf_counter()
            await three.langgraph.ainvoke(
                {"input": {"n": n}, "steps": {}, "last": ""},
                {"configurable": {"thread_id": f"three-{n}"}},
                context=None,
            )
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(count)))
    elapsed = time.perf_counter() - started
    chain = Compiled(graphs.parse(CHAIN), plain, saver)
    walls = []
    for attempt in range(5):
        begun = time.perf_counter()
        await chain.langgraph.ainvoke(
            {"input": {}, "steps": {}, "last": ""},
            {"configurable": {"thread_id": f"chain-{attempt}"}},
            context=None,
        )
        walls.append(time.perf_counter() - begun)
    wall = sorted(walls)[len(walls) // 2]
    return (
        {"runs": count, "runs_per_second": round(count / elapsed, 1), **percentiles(latencies)},
        {
            "wall_s_median_of_5": round(wall, 3),
            "overhead_ms_per_task": round((wall - TASKS * TASK_SECONDS) / TASKS * 1000, 2),
        },
    )


class _BareContext:
    """Just enough of a NodeContext for the compute-only nodes the baseline runs."""

    def __init__(self, state: Any) -> None:
        self.state = state
        self.runtime = _BareRuntime()


class _BareRuntime:
    max_delay_seconds = 3600.0


async def celery_runs(url: str, redis_url: str, root: Path, count: int) -> dict[str, Any]:
    """The same batch through Redis to one `bastion worker` with two prefork processes."""
    db = await prepared(url)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("BASTION_")},
        "BASTION_DATA_DIR": str(root / "data"),
        "BASTION_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
        "BASTION_DATABASE_URL": url,
        "BASTION_EXECUTOR": "celery",
        "BASTION_REDIS_URL": redis_url,
    }
    executor = CeleryExecutor(celery_app(redis_url))
    gate = Gate(
        Dispatcher(db, Ledger(db), executor, max_input_bytes=2**20),
        AuditLog(db, Keyring(os.urandom(32))),
    )
    worker = await asyncio.create_subprocess_exec(
        *[sys.executable, "-m", "bastion", "worker", "--concurrency", "2"],
        env=env,
        cwd=root,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        workflows = Workflows(db)
        warm = await workflows.create(1, "warm", "", graphs.parse(THREE), "bench")
        await batch(db, gate, warm, 100)  # also waits until the worker is up
        three = await workflows.create(1, "three", "", graphs.parse(THREE), "bench")
        measured = await batch(db, gate, three, count)
        alone = await workflows.create(1, "alone", "", graphs.parse(THREE), "bench")
        measured["unloaded"] = await one_at_a_time(db, gate, alone, 100)
        return measured
    finally:
        worker.terminate()  # the main process only: its pool finishes and exits
        await asyncio.wait_for(worker.wait(), 30)
        await executor.stop()
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3000)
    parser.add_argument("--celery", action="store_true", help="also measure the Celery executor")
    args = parser.parse_args()
    celery = None
    with tempfile.TemporaryDirectory(prefix="bastion-bench-runs-") as tmp, ExitStack() as stack:
        url = f"sqlite+aiosqlite:///{Path(tmp) / 'bastion.db'}"
        inline, flow = uvloop.run(inline_runs(url, args.runs))
        bare, bare_flow = uvloop.run(bare_langgraph(args.runs))
        saved = f"sqlite+aiosqlite:///{Path(tmp) / 'bare.db'}"
        checkpointed, checkpointed_flow = uvloop.run(bare_langgraph(args.runs, saved))
        if args.celery:
            redis = stack.enter_context(run_redis())
            celery_url = f"sqlite+aiosqlite:///{Path(tmp) / 'celery.db'}"
            celery = uvloop.run(celery_runs(celery_url, redis.url, Path(tmp), args.runs))
    emit(
        "runs",
        {"inline_sqlite": inline, "celery_sqlite": celery, "flow_40x10ms": flow},
        baseline={
            "bare_langgraph": bare,
            "flow_40x10ms": bare_flow,
            "langgraph_sqlite_checkpoints": checkpointed,
            "flow_40x10ms_sqlite_checkpoints": checkpointed_flow,
        },
        ratio=round(inline["runs_per_second"] / bare["runs_per_second"], 2),
        ratio_means="inline runs/s / bare LangGraph runs/s (no persistence)",
        target=">= 500 runs/s inline on SQLite; < 5 ms overhead per task in the 40-task flow",
        passed=inline["runs_per_second"] >= 500 and flow["overhead_ms_per_task"] < 5,
        ratio_to_checkpointed_langgraph=round(
            inline["runs_per_second"] / checkpointed["runs_per_second"], 2
        ),
        peers={"n8n_runs_per_second": 220, "windmill_40x10ms_hatchet_s": 1.2, "temporal_s": 3.0},
    )


if __name__ == "__main__":
    main()
