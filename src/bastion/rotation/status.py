"""What the API and the status stream show of the pools: one snapshot shared by every
caller for a moment, and the difference between two snapshots (the stream sends only
that, once a second; the history has its own endpoint and never rides along).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bastion.db.tables import RotationPool, RotationReplica
from bastion.db.types import utcnow
from bastion.rotation.client import ContainerInfo, DockerClient
from bastion.rotation.errors import DockerError
from bastion.rotation.pools import PoolConfig
from bastion.rotation.state import RotationStore, errors_of
from bastion.rotation.telemetry import Telemetry

SHARED_SECONDS = 0.9  # callers within this long of each other share one snapshot


@dataclass(frozen=True)
class Snapshot:
    taken_at: datetime
    pools: dict[str, dict[str, Any]]  # pool name -> its status (JSON-ready)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def pool_status(
    config: PoolConfig,
    row: RotationPool | None,
    replicas: Mapping[str, RotationReplica],
    containers: Mapping[str, ContainerInfo | str],
    telemetry: Telemetry,
) -> dict[str, Any]:
    """A pool's status; `containers` holds each replica's inspect answer, or why not."""
    active = row.active_replica if row else None
    listed = {}
    for name in config.replicas:
        info, record, sample = containers.get(name), replicas.get(name), telemetry.latest(name)
        listed[name] = {
            "active": name == active,
            "state": info.status if isinstance(info, ContainerInfo) else (info or "unknown"),
            "health": info.health if isinstance(info, ContainerInfo) else "unknown",
            "read_only": info.read_only if isinstance(info, ContainerInfo) else None,
            "started_at": _iso(info.started_at)
            if isinstance(info, ContainerInfo) and info.running
            else None,
            "last_activated_at": _iso(record.last_activated_at) if record else None,
            "activations": record.activations if record else 0,
            "last_error": record.last_error if record else "",
            "cpu_percent": sample.cpu_percent if sample else None,
            "memory_bytes": sample.memory_bytes if sample else None,
            "rx_bytes": sample.rx_bytes if sample else None,
            "tx_bytes": sample.tx_bytes if sample else None,
        }
    return {
        "name": config.name,
        "workspace": config.workspace,
        "strategy": config.strategy.value,
        "state": row.state if row else "running",
        "paused": row is not None and row.state != "running",
        "pending_action": row.pending_action if row else None,
        "active_replica": active,
        "activated_at": _iso(row.activated_at) if row else None,
        "rotation_count": row.rotation_count if row else 0,
        "last_rotation_at": _iso(row.last_rotation_at) if row else None,
        "next_rotation_at": _iso(row.next_rotation_at) if row else None,
        "interval_seconds": config.interval_seconds,
        "jitter_seconds": config.jitter_seconds,
        "healthy": sum(1 for r in listed.values() if r["health"] == "healthy"),
        "replicas": listed,
        "last_errors": errors_of(row) if row else [],
    }


class Status:
    def __init__(
        self,
        pools: Sequence[PoolConfig],
        docker: DockerClient,
        store: RotationStore,
        telemetry: Telemetry,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.pools = {pool.name: pool for pool in pools}
        self.docker = docker
        self.store = store
        self.telemetry = telemetry
        self.clock = clock
        self._shared: tuple[float, Snapshot] | None = None
        self._taking = asyncio.Lock()

    async def snapshot(self) -> Snapshot:
        async with self._taking:
            if self._shared is not None and time.monotonic() - self._shared[0] < SHARED_SECONDS:
                return self._shared[1]
            snapshot = await self._take()
            self._shared = (time.monotonic(), snapshot)
            return snapshot

    async def _inspect(self, name: str) -> ContainerInfo | str:
        try:
            return await self.docker.inspect(name)  # cached: at most one call per 2 s
        except DockerError as exc:
            return "missing" if getattr(exc, "permanent", False) else "unknown"

    async def _take(self) -> Snapshot:
        rows = {row.name: row for row in await self.store.pools()}
        names = [name for pool in self.pools.values() for name in pool.replicas]
        answers = await asyncio.gather(*(self._inspect(name) for name in names))
        containers = dict(zip(names, answers, strict=True))
        replicas = await self.store.all_replicas()
        pools = {
            name: pool_status(
                config, rows.get(name), replicas.get(name, {}), containers, self.telemetry
            )
            for name, config in self.pools.items()
        }
        return Snapshot(self.clock(), pools)


def delta(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """What changed from `before` to `after`, recursively through dicts; a key that is
    gone maps to None."""
    changed: dict[str, Any] = {}
    for key, value in after.items():
        old = before.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            inner = delta(old, value)
            if inner:
                changed[key] = inner
        elif key not in before or old != value:
            changed[key] = value
    for key in before.keys() - after.keys():
        changed[key] = None
    return changed
