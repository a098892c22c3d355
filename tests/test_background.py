from __future__ import annotations

import asyncio
import itertools

from bastion.background import BackgroundService, Supervisor


async def test_services_run_until_stopped() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    supervisor = Supervisor([BackgroundService("ticker", ticker)])
    await supervisor.start()
    await asyncio.sleep(0.1)
    await supervisor.stop(timeout=1)
    seen = ticks
    await asyncio.sleep(0.05)
    assert seen > 3
    assert ticks == seen


async def test_a_crashing_service_is_restarted_with_a_growing_delay() -> None:
    starts: list[float] = []
    loop = asyncio.get_running_loop()

    async def flaky() -> None:
        starts.append(loop.time())
        raise RuntimeError("boom")

    supervisor = Supervisor(
        [BackgroundService("flaky", flaky)], restart_delay=0.02, max_restart_delay=0.08
    )
    await supervisor.start()
    await asyncio.sleep(0.4)
    await supervisor.stop(timeout=1)
    assert len(starts) >= 4
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert gaps[1] > gaps[0]
    assert max(gaps) < 0.2


async def test_stop_gives_up_on_a_service_that_ignores_cancellation() -> None:
    async def stubborn() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            await asyncio.sleep(0.5)  # ignores the cancellation for a while

    supervisor = Supervisor([BackgroundService("stubborn", stubborn)])
    await supervisor.start()
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await supervisor.stop(timeout=0.1)
    assert loop.time() - began < 0.4
    await asyncio.sleep(0.6)  # let it finish so no task outlives the test
