"""Background services (scheduler, rotation controller, exporters) run under one supervisor.

They start with the application's lifespan, not at import, and stop on shutdown. A
service that crashes is restarted with a growing delay instead of crash-looping.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

log = logging.getLogger("bastion.background")

RESTART_DELAY_FIRST = 1.0
RESTART_DELAY_MAX = 60.0


@dataclass(frozen=True)
class BackgroundService:
    name: str
    run: Callable[[], Awaitable[None]]


class Supervisor:
    def __init__(
        self,
        services: Sequence[BackgroundService],
        *,
        restart_delay: float = RESTART_DELAY_FIRST,
        max_restart_delay: float = RESTART_DELAY_MAX,
    ) -> None:
        self._services = list(services)
        self._tasks: list[asyncio.Task[None]] = []
        self._restart_delay = restart_delay
        self._max_restart_delay = max_restart_delay

    async def start(self) -> None:
        for service in self._services:
            self._tasks.append(asyncio.create_task(self._keep_running(service), name=service.name))
            log.info("background service %s started", service.name)

    async def stop(self, timeout: float = 10.0) -> None:
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            _, still_running = await asyncio.wait(self._tasks, timeout=timeout)
            for task in still_running:
                log.error(
                    "background service %s did not stop within %s s", task.get_name(), timeout
                )
        self._tasks.clear()

    async def _keep_running(self, service: BackgroundService) -> None:
        delay = self._restart_delay
        while True:
            try:
                await service.run()
                log.info("background service %s finished", service.name)
                return
            except asyncio.CancelledError:
                log.info("background service %s stopped", service.name)
                raise
            except Exception:
                log.exception(
                    "background service %s crashed; restarting in %.1f s", service.name, delay
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._max_restart_delay)
