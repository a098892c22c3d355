"""One scheduler process for the multi-process test in test_scheduler.py.

Run as `python scheduler_process.py DATABASE_URL`, with the audit master key (hex) in
BASTION_TEST_MASTER_KEY. It builds its own Database, Dispatcher, Gate and Scheduler,
prints "ready", reads "START END" (ISO instants) from standard input, then ticks with the
real clock from START until END and prints one JSON line: how many ticks it made, how
many runs it started, and the errors its ticks raised (none, when exactly-once holds).
Runs are only recorded, never executed: the executor takes them and does nothing.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sys
from datetime import datetime

from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db.types import utcnow
from bastion.execution.dispatcher import Dispatcher
from bastion.runs.ledger import Ledger
from bastion.triggers.gate import Gate
from bastion.triggers.scheduler import Scheduler


class Parked:
    """Takes runs and starts none: only their scheduling is under test."""

    name = "parked"

    async def submit(self, run_id: str, workspace_id: int) -> None:
        pass

    def cancel(self, run_id: str) -> None:
        pass

    async def stop(self) -> None:
        pass


async def main(url: str) -> dict[str, object]:
    db = Database(url)
    try:
        audit = AuditLog(db, Keyring(bytes.fromhex(os.environ["BASTION_TEST_MASTER_KEY"])))
        ledger = Ledger(db)
        scheduler = Scheduler(Gate(Dispatcher(db, ledger, Parked(), max_input_bytes=65536), audit))
        await db.ping()
        print("ready", flush=True)
        line = await asyncio.to_thread(sys.stdin.readline)
        start, end = (datetime.fromisoformat(part) for part in line.split())
        await asyncio.sleep(max(0.0, (start - utcnow()).total_seconds()))
        ticks = runs = 0
        errors: list[str] = []
        while True:
            now = utcnow()
            try:
                runs += await scheduler.tick(now)
            except Exception as exc:  # reported, and the test fails on it
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
            ticks += 1
            if now >= end:
                break
            await asyncio.sleep(random.uniform(0.0, 0.05))
        return {"pid": os.getpid(), "ticks": ticks, "runs": runs, "errors": errors}
    finally:
        await db.dispose()


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))), flush=True)
