"""Stand-ins for Docker, HAProxy and time, for the controller's logic. What they cannot
show (real health checks, a real engine going away, real traffic) the engine and
end-to-end tests do."""

from __future__ import annotations

import asyncio
import random
from collections.abc import MutableSequence, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bastion.rotation.client import ContainerInfo
from bastion.rotation.errors import ContainerNotFound, DockerFailed, DockerUnreachable
from bastion.rotation.haproxy import ServerState


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    async def sleep(self, seconds: float) -> None:
        self.advance(seconds)
        await asyncio.sleep(0)


@dataclass
class FakeContainer:
    status: str = "created"
    healthy_after: int | None = 1  # inspections after a start until healthy; None: never
    start_error: str | None = None
    polls: int = 0


@dataclass
class FakeDocker:
    names: Sequence[str]
    log: list[tuple[str, ...]] = field(default_factory=list)
    unreachable: bool = False
    containers: dict[str, FakeContainer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.containers = {name: FakeContainer() for name in self.names}

    def _check(self) -> None:
        if self.unreachable:
            raise DockerUnreachable("cannot reach the docker proxy at fake (ConnectError)")

    def _get(self, name: str) -> FakeContainer:
        if name not in self.containers:
            raise ContainerNotFound(f"no container {name!r}")
        return self.containers[name]

    def running(self) -> set[str]:
        return {n for n, c in self.containers.items() if c.status == "running"}

    async def list_containers(self) -> dict[str, str]:
        self._check()
        return {name: c.status for name, c in self.containers.items()}

    async def inspect(self, name: str, *, fresh: bool = False) -> ContainerInfo:
        self._check()
        container = self._get(name)
        health = "none"
        if container.status == "running":
            container.polls += 1
            after = container.healthy_after
            health = "healthy" if after is not None and container.polls > after else "starting"
        return ContainerInfo(name, name, container.status, health, None, None, 0)

    async def start(self, name: str) -> None:
        self._check()
        container = self._get(name)
        self.log.append(("start", name))
        if container.start_error:
            raise DockerFailed(container.start_error)
        container.status, container.polls = "running", 0

    async def stop(self, name: str, timeout_seconds: int) -> None:
        self._check()
        self.log.append(("stop", name))
        self._get(name).status = "exited"

    async def kill(self, name: str) -> None:
        self._check()
        self.log.append(("kill", name))
        self._get(name).status = "exited"

    async def ping(self) -> None:
        self._check()

    async def stats(self, name: str) -> dict[str, Any]:
        self._check()
        return {}


@dataclass
class FakeHAProxy:
    docker: FakeDocker
    log: MutableSequence[tuple[str, ...]]
    backend: str = "pool"
    admin: dict[str, str] = field(default_factory=dict)
    busy: dict[str, int] = field(default_factory=dict)  # sessions left, one fewer per read

    def __post_init__(self) -> None:
        self.admin = {name: "maint" for name in self.docker.names}

    async def set_state(self, server: str, state: str) -> None:
        self.log.append((state, server))
        self.admin[server] = state

    async def servers(self) -> dict[str, ServerState]:
        running = self.docker.running()
        return {
            name: ServerState(name, admin, "up" if name in running else "down")  # type: ignore[arg-type]
            for name, admin in self.admin.items()
        }

    async def sessions(self) -> dict[str, int]:
        counts = dict(self.busy)
        self.busy = {name: max(0, n - 1) for name, n in self.busy.items()}
        return counts


class Ordered(random.Random):
    """A "random" source that tries candidates in a fixed order of preference."""

    def __init__(self, *preferred: str) -> None:
        super().__init__(0)
        self.preferred = list(preferred)

    def shuffle(self, x: list[Any]) -> None:  # type: ignore[override]
        x.sort(key=lambda name: self.preferred.index(name) if name in self.preferred else 99)
