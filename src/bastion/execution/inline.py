"""The inline executor (the embedded default): runs execute in the server's event loop.

Bounded twice: at most `concurrency` runs at once in this server, and at most
`workspace_concurrency` of them from one workspace, so a workspace that fires a thousand
runs cannot starve the others. Runs waiting for a slot stay `queued` in the database; if
the server dies, the dispatcher's recovery finds them there.
"""

from __future__ import annotations

import asyncio
import logging

from bastion.execution.engine import Engine

log = logging.getLogger("bastion.execution")
MAX_BACKLOG = 10_000  # runs waiting in memory; beyond it they wait in the database


class InlineExecutor:
    name = "inline"

    def __init__(self, engine: Engine, *, concurrency: int, workspace_concurrency: int) -> None:
        self.engine = engine
        self._slots = asyncio.Semaphore(concurrency)
        self._workspace_concurrency = workspace_concurrency
        self._workspaces: dict[int, asyncio.Semaphore] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def submit(self, run_id: str, workspace_id: int) -> None:
        if run_id in self._tasks or len(self._tasks) >= MAX_BACKLOG:
            return
        task = asyncio.create_task(self._execute(run_id, workspace_id), name=f"run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(run_id, None))

    def cancel(self, run_id: str) -> None:
        self.engine.cancel(run_id)

    async def _execute(self, run_id: str, workspace_id: int) -> None:
        workspace = self._workspaces.setdefault(
            workspace_id, asyncio.Semaphore(self._workspace_concurrency)
        )
        # Workspace slot first: a saturated workspace must not hold global slots waiting.
        async with workspace, self._slots:
            try:
                await self.engine.execute(run_id)
            except Exception:
                log.exception("run %s could not be executed; recovery will retry it", run_id)

    async def stop(self) -> None:
        """Stop at once; interrupted runs keep their lease until it lapses, then resume."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
