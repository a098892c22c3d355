"""The controller against a real Docker engine and a real HAProxy: a replica whose
healthcheck never passes, the engine stopped mid-rotation, a replica started by hand,
a restart of the controller, and the service loop itself."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from bastion.db.types import utcnow
from bastion.rotation.client import DockerClient, DockerEndpoint
from bastion.rotation.controller import Controller
from bastion.rotation.haproxy import HAProxy
from bastion.rotation.pools import PoolConfig
from bastion.rotation.state import RotationStore
from tests.docker_engine import DockerEngine
from tests.haproxy import HAProxyServer
from tests.rotation.conftest import Replicas
from tests.rotation.fakes import Ordered

pytestmark = pytest.mark.services


@dataclass
class Setup:
    pool: PoolConfig
    names: list[str]
    proxy: HAProxyServer
    store: RotationStore
    engine: DockerEngine
    controller: Controller

    async def settle(self, limit: int = 20) -> int:
        for done in range(limit):
            if not await self.controller.step(self.pool):
                return done
        raise AssertionError("the controller never settled")

    async def due_now(self) -> None:
        await self.store.schedule(self.pool.name, utcnow())

    def running(self) -> set[str]:
        return {n for n in self.names if self.engine.state(n) == "running"}

    async def served(self) -> str:
        async with httpx.AsyncClient(base_url=self.proxy.url, timeout=5) as http:
            return (await http.get("/")).text.strip()


@pytest.fixture
async def make_setup(
    docker_engine: DockerEngine,
    replicas: Replicas,
    haproxy: Callable[[Mapping[str, int]], HAProxyServer],
    store: RotationStore,
) -> AsyncIterator[Callable[..., Any]]:
    clients: list[DockerClient] = []

    def make(*, unhealthy: tuple[int, ...] = (), timeout: float = 2, **options: Any) -> Setup:
        ports = replicas(3, unhealthy=unhealthy)
        proxy = haproxy(ports)
        names = list(ports)
        pool = PoolConfig(
            name="web",
            replicas=tuple(names),
            interval_seconds=3600,
            health_timeout_seconds=timeout,
            stop_timeout_seconds=1,
            drain_seconds=1,
            haproxy={"address": proxy.admin_address, "backend": proxy.backend},
            **options,
        )
        client = DockerClient(DockerEndpoint(docker_engine.host, "t"))
        clients.append(client)
        controller = Controller([pool], client, store, rng=Ordered(*names))
        return Setup(pool, names, proxy, store, docker_engine, controller)

    yield make
    for client in clients:
        await client.aclose()


async def test_a_replica_that_never_becomes_healthy_is_skipped_and_rotation_carries_on(
    make_setup: Callable[..., Setup],
) -> None:
    setup = make_setup(unhealthy=(1,))
    a, b, c = setup.names
    await setup.store.ensure([setup.pool])
    await setup.settle()
    assert (await setup.store.pool("web")).active_replica == a
    assert await setup.served() == a
    await setup.due_now()
    started = time.monotonic()
    await setup.settle()
    assert time.monotonic() - started >= setup.pool.health_timeout_seconds
    assert (await setup.store.pool("web")).active_replica == c
    assert setup.running() == {c}
    assert await setup.served() == c
    entry = (await setup.store.history("web"))[0]
    ((skipped),) = json.loads(entry.skipped)
    assert skipped["replica"] == b
    assert skipped["reason"].startswith("not healthy within 2 s (health: ")
    await setup.due_now()  # and the next one works as usual
    await setup.settle()
    assert (await setup.store.pool("web")).active_replica == a
    assert setup.running() == {a}


async def test_the_engine_stopped_mid_rotation_gives_clean_errors_and_a_consistent_pool(
    make_setup: Callable[..., Setup],
) -> None:
    setup = make_setup(unhealthy=(1,), timeout=3)
    a, b, c = setup.names
    await setup.store.ensure([setup.pool])
    await setup.settle()
    await setup.due_now()
    rotation = asyncio.create_task(setup.controller.step(setup.pool))
    for _ in range(100):  # the candidate b runs and is waited for
        if setup.engine.state(b) == "running":
            break
        await asyncio.sleep(0.05)
    await asyncio.to_thread(setup.engine.stop_daemon)
    try:
        assert await rotation is True
        entry = (await setup.store.history("web"))[0]
        assert entry.outcome == "failed"
        # The daemon kills its containers before it stops answering: the candidate may
        # be seen dying, or the engine gone. Either way a reason, not a traceback.
        assert entry.error.startswith(
            ("rotation stopped: cannot reach the docker proxy", "no replica became healthy")
        ), entry.error
        assert await setup.controller.step(setup.pool) is False  # fails cleanly while down
        errors = json.loads((await setup.store.pool("web")).last_errors)
        assert any("cannot reach the docker proxy" in e["message"] for e in errors)
    finally:
        await asyncio.to_thread(setup.engine.start_daemon)
    await setup.settle()
    row = await setup.store.pool("web")
    assert row.active_replica in (a, c)
    assert setup.running() == {row.active_replica}
    servers = await HAProxy(setup.pool.haproxy).servers()  # type: ignore[arg-type]
    assert {n for n, s in servers.items() if s.admin == "ready"} == {row.active_replica}
    assert await setup.served() == row.active_replica


async def test_a_replica_started_by_hand_is_stopped_and_the_drift_recorded(
    make_setup: Callable[..., Setup],
) -> None:
    setup = make_setup()
    a, _, c = setup.names
    await setup.store.ensure([setup.pool])
    await setup.settle()
    setup.engine.docker("start", c)
    assert setup.running() == {a, c}
    assert await setup.settle() == 1
    assert setup.running() == {a}
    drift = [e for e in await setup.store.audit.events() if e.action == "rotation.drift"]
    assert len(drift) == 1
    assert json.loads(drift[0].details) == {"replica": c}


async def test_a_restarted_controller_keeps_the_state_and_the_loop_rotates_on_schedule(
    make_setup: Callable[..., Setup], docker_engine: DockerEngine
) -> None:
    setup = make_setup(jitter_seconds=0)
    await setup.store.ensure([setup.pool])
    await setup.settle()
    await setup.due_now()
    await setup.settle()
    before = await setup.store.pool("web")
    assert before.rotation_count == 2
    restarted = Controller(
        [setup.pool],
        DockerClient(DockerEndpoint(docker_engine.host, "t")),
        setup.store,
        owner=setup.controller.owner,
    )
    setup.controller = restarted
    try:
        assert await setup.settle() == 0
        after = await setup.store.pool("web")
        assert (after.active_replica, after.rotation_count, after.next_rotation_at) == (
            before.active_replica,
            before.rotation_count,
            before.next_rotation_at,
        )
        fast = setup.pool.model_copy(update={"interval_seconds": 1})
        loop = Controller([fast], restarted.docker, setup.store, owner="loop")
        await setup.store.release("web", setup.controller.owner)
        await setup.due_now()
        service = asyncio.create_task(loop.run())
        try:
            for _ in range(200):
                if (await setup.store.pool("web")).rotation_count >= 4:
                    break
                await asyncio.sleep(0.1)
        finally:
            service.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await service
        row = await setup.store.pool("web")
        assert row.rotation_count >= 4
        assert row.lease_owner is None  # released on shutdown
        assert len(setup.running()) <= 2  # at most mid-switch when cancelled
    finally:
        await restarted.docker.aclose()
