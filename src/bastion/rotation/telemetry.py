"""CPU, memory and network use of the running replicas, sampled through the docker proxy
(`stats?stream=false`) every few seconds and kept in memory: the latest sample per
replica, and a short series for the console's sparklines.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bastion.db.types import utcnow
from bastion.rotation.client import DockerClient
from bastion.rotation.errors import DockerError
from bastion.rotation.pools import PoolConfig

log = logging.getLogger("bastion.rotation.telemetry")
INTERVAL_SECONDS = 5.0
KEPT = 60  # samples per replica: five minutes at the default interval
CONCURRENCY = 8  # stats calls at once (each takes the engine about a second)


@dataclass(frozen=True)
class Sample:
    at: datetime
    cpu_percent: float | None
    memory_bytes: int | None
    memory_limit_bytes: int | None
    rx_bytes: int | None  # None: the container has no network of its own (host network)
    tx_bytes: int | None

    def public(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "cpu_percent": self.cpu_percent,
            "memory_bytes": self.memory_bytes,
            "memory_limit_bytes": self.memory_limit_bytes,
            "rx_bytes": self.rx_bytes,
            "tx_bytes": self.tx_bytes,
        }


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def _cpu_percent(stats: Mapping[str, Any]) -> float | None:
    """Share of one CPU, over the engine's two readings about a second apart."""
    cpu, previous = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    usage = cpu.get("cpu_usage") or {}
    used = _int(usage.get("total_usage"))
    used_before = _int((previous.get("cpu_usage") or {}).get("total_usage"))
    system = _int(cpu.get("system_cpu_usage"))
    system_before = _int(previous.get("system_cpu_usage"))
    if used is None or used_before is None or system is None or system_before is None:
        return None
    if system <= system_before:
        return None
    cpus = _int(cpu.get("online_cpus")) or len(usage.get("percpu_usage") or [1])
    return round(max(0, used - used_before) / (system - system_before) * cpus * 100, 2)


def sample_of(stats: Mapping[str, Any], at: datetime) -> Sample:
    """What `docker stats` shows, computed the way the docker CLI does (cgroup v1 and v2)."""
    memory = stats.get("memory_stats") or {}
    usage = _int(memory.get("usage"))
    details = memory.get("stats") or {}
    # Page cache the kernel can drop is not the container's own use.
    inactive = _int(details.get("total_inactive_file", details.get("inactive_file"))) or 0
    networks = stats.get("networks")
    rx = tx = None
    if isinstance(networks, dict) and networks:
        rx = sum(_int(n.get("rx_bytes")) or 0 for n in networks.values())
        tx = sum(_int(n.get("tx_bytes")) or 0 for n in networks.values())
    return Sample(
        at=at,
        cpu_percent=_cpu_percent(stats),
        memory_bytes=max(0, usage - inactive) if usage is not None else None,
        memory_limit_bytes=_int(memory.get("limit")),
        rx_bytes=rx,
        tx_bytes=tx,
    )


class Telemetry:
    def __init__(
        self,
        pools: Sequence[PoolConfig],
        docker: DockerClient,
        *,
        clock: Callable[[], datetime] = utcnow,
        interval: float = INTERVAL_SECONDS,
    ) -> None:
        self.replicas = [name for pool in pools for name in pool.replicas]
        self.docker = docker
        self.clock = clock
        self.interval = interval
        self._series: dict[str, deque[Sample]] = {}
        self._limit = asyncio.Semaphore(CONCURRENCY)

    def latest(self, replica: str) -> Sample | None:
        series = self._series.get(replica)
        return series[-1] if series else None

    def series(self, replica: str) -> list[Sample]:
        return list(self._series.get(replica, ()))

    async def collect(self) -> int:
        """One sample of every running replica; how many were taken."""
        states = await self.docker.list_containers()
        running = [name for name in self.replicas if states.get(name) == "running"]
        for name in set(self._series) - set(running):
            del self._series[name]  # stopped: its numbers would be stale
        taken = await asyncio.gather(*(self._sample(name) for name in running))
        return sum(taken)

    async def _sample(self, name: str) -> bool:
        async with self._limit:
            try:
                stats = await self.docker.stats(name)
            except DockerError as exc:
                log.debug("no stats for %s: %s", name, exc)
                return False
        self._series.setdefault(name, deque(maxlen=KEPT)).append(sample_of(stats, self.clock()))
        return True

    async def run(self) -> None:
        while True:
            try:
                await self.collect()
            except DockerError as exc:  # the controller records it on the pool
                log.debug("telemetry: %s", exc)
            await asyncio.sleep(self.interval)
