"""In-process wake-ups for run watchers (SSE streams).

Watchers read state from the database, which is the truth across processes; a signal
only lets a watcher in the same process look again at once instead of at its next poll.
"""

from __future__ import annotations

import asyncio
import contextlib


class RunSignals:
    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

    def notify(self, run_id: str) -> None:
        for event in self._waiting.get(run_id, ()):
            event.set()

    async def wait(self, run_id: str, timeout: float) -> None:
        """Return when `run_id` changed in this process, or after `timeout` seconds."""
        event = asyncio.Event()
        self._waiting.setdefault(run_id, set()).add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        finally:
            waiting = self._waiting[run_id]
            waiting.discard(event)
            if not waiting:
                del self._waiting[run_id]
