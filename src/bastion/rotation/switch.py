"""Switching a pool's traffic from one replica to another, in the pool's strategy.

make_before_break (the default):
  1. start the candidate; wait until Docker reports it healthy (the pool's timeout);
  2. HAProxy: candidate `ready`; wait until HAProxy sees it up;
  3. record it as the active replica;
  4. HAProxy: old `drain` (no new requests); wait until its sessions end (at most the
     pool's drain time); then `maint`;
  5. stop the old one.
break_before_make (replicas that must never run side by side):
  1. HAProxy: old `maint`; stop the old one;
  2. start the candidate, wait healthy, `ready`, wait up; record it as active.

A candidate that fails anywhere before it takes traffic is taken out of HAProxy and
stopped, and CandidateFailed says why; the caller tries the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from bastion.rotation.client import DockerClient
from bastion.rotation.errors import (
    CandidateFailed,
    ContainerNotFound,
    DockerError,
    DockerFailed,
    HAProxyError,
)
from bastion.rotation.haproxy import HAProxy
from bastion.rotation.pools import PoolConfig, Strategy
from bastion.rotation.state import Outcome, RotationStore

log = logging.getLogger("bastion.rotation")
POLL_SECONDS = 0.2  # health and HAProxy polling; Docker health checks run on their own period

Clock = Callable[[], datetime]
Sleep = Callable[[float], Awaitable[None]]


@dataclass
class Switch:
    """One rotation's switch: the pool, the replica it leaves, and what it measured."""

    pool: PoolConfig
    old: str | None
    outcome: Outcome
    old_left_at: datetime | None = None  # break_before_make: the old one out of service


class Switcher:
    def __init__(
        self,
        docker: DockerClient,
        store: RotationStore,
        haproxy: Callable[[PoolConfig], HAProxy | None],
        *,
        clock: Clock,
        sleep: Sleep,
        keep_lease: Callable[[PoolConfig], Awaitable[None]],
    ) -> None:
        self.docker = docker
        self.store = store
        self.haproxy = haproxy
        self.clock = clock
        self.sleep = sleep
        self.keep_lease = keep_lease

    async def to(self, switch: Switch, candidate: str) -> None:
        if switch.pool.strategy is Strategy.BREAK_BEFORE_MAKE:
            await self._break_before_make(switch, candidate)
        else:
            await self._make_before_break(switch, candidate)

    async def _make_before_break(self, switch: Switch, candidate: str) -> None:
        pool, outcome = switch.pool, switch.outcome
        await self.start_healthy(pool, candidate)
        healthy_at = self.clock()
        await self._take_traffic(pool, candidate)
        serving_at = self.clock()
        await self.store.activate(pool.name, candidate, serving_at)
        outcome.to_replica = candidate
        outcome.traffic_seconds = (serving_at - outcome.started_at).total_seconds()
        if switch.old is not None:
            try:
                await self.retire(pool, switch.old, drain=True)
            except (DockerError, HAProxyError) as exc:
                # The new replica serves; reconcile stops the old one once it can.
                outcome.error = f"{switch.old} not stopped yet: {exc}"
        outcome.switch_seconds = (self.clock() - healthy_at).total_seconds()

    async def _break_before_make(self, switch: Switch, candidate: str) -> None:
        pool, outcome = switch.pool, switch.outcome
        if switch.old is not None and switch.old_left_at is None:
            switch.old_left_at = self.clock()
            await self.retire(pool, switch.old, drain=False)
        await self.start_healthy(pool, candidate)
        await self._take_traffic(pool, candidate)
        serving_at = self.clock()
        await self.store.activate(pool.name, candidate, serving_at)
        outcome.to_replica = candidate
        outcome.traffic_seconds = (serving_at - outcome.started_at).total_seconds()
        if switch.old_left_at is not None:  # the gap: nothing served in between
            outcome.switch_seconds = (serving_at - switch.old_left_at).total_seconds()

    async def restore(self, switch: Switch) -> None:
        """break_before_make found no candidate: bring the old replica back."""
        if switch.old is None or switch.old_left_at is None:
            return
        await self.start_healthy(switch.pool, switch.old)
        await self._take_traffic(switch.pool, switch.old)

    async def start_healthy(self, pool: PoolConfig, name: str) -> None:
        """Start `name` and wait until Docker says it is healthy; CandidateFailed (with the
        container stopped again) when it does not start or get there in time."""
        try:
            await self.docker.start(name)
        except ContainerNotFound:
            raise CandidateFailed("the container does not exist") from None
        except DockerFailed as exc:
            await self._stop_quietly(pool, name)
            raise CandidateFailed(f"did not start: {exc}") from None
        deadline = self.clock().timestamp() + pool.health_timeout_seconds
        try:
            while True:
                info = await self.docker.inspect(name, fresh=True)
                if info.running and info.health in ("healthy", "none"):
                    if info.health == "none":
                        log.warning("%s has no healthcheck: running counts as healthy", name)
                    return
                if not info.running:
                    raise CandidateFailed(f"exited (code {info.exit_code}) before it was healthy")
                if self.clock().timestamp() >= deadline:
                    raise CandidateFailed(
                        f"not healthy within {pool.health_timeout_seconds:g} s "
                        f"(health: {info.health})"
                    )
                await self.keep_lease(pool)
                await self.sleep(POLL_SECONDS)
        except Exception:  # not on cancellation: reconcile stops a stray after a restart
            await self._stop_quietly(pool, name)
            raise

    async def _take_traffic(self, pool: PoolConfig, name: str) -> None:
        """HAProxy sends `name` requests from now on (and sees it up)."""
        haproxy = self.haproxy(pool)
        if haproxy is None:
            return
        deadline = self.clock().timestamp() + pool.health_timeout_seconds
        try:
            await haproxy.set_state(name, "ready")
            while True:
                server = (await haproxy.servers()).get(name)
                if server is None:
                    raise CandidateFailed(f"HAProxy backend {haproxy.backend!r} has no {name!r}")
                if server.serving:
                    return
                if self.clock().timestamp() >= deadline:
                    raise CandidateFailed(
                        f"HAProxy did not see it up within {pool.health_timeout_seconds:g} s"
                    )
                await self.sleep(POLL_SECONDS)
        except Exception:  # not on cancellation: reconcile stops a stray after a restart
            await self._stop_quietly(pool, name)
            raise

    async def retire(self, pool: PoolConfig, name: str, *, drain: bool) -> None:
        """Out of HAProxy (draining first when asked), then stopped."""
        haproxy = self.haproxy(pool)
        if haproxy is not None:
            if drain:
                await haproxy.set_state(name, "drain")
                await self._drained(pool, haproxy, name)
            # Out of the farm before the container stops: HAProxy never sends a request
            # to a replica that is shutting down.
            await haproxy.set_state(name, "maint")
        await self.docker.stop(name, pool.stop_timeout_seconds)

    async def _drained(self, pool: PoolConfig, haproxy: HAProxy, name: str) -> None:
        deadline = self.clock().timestamp() + pool.drain_seconds
        while (await haproxy.sessions()).get(name, 0) > 0:
            if self.clock().timestamp() >= deadline:
                log.info("%s: still busy after %g s of draining", name, pool.drain_seconds)
                return
            await self.sleep(POLL_SECONDS / 2)

    async def _stop_quietly(self, pool: PoolConfig, name: str) -> None:
        """Best effort for a candidate that failed: out of HAProxy, stopped. What cannot be
        done now (Docker unreachable) reconcile does later: it is not the active replica."""
        try:
            await self.retire(pool, name, drain=False)
        except (DockerError, HAProxyError) as exc:
            log.warning("could not stop the failed candidate %s: %s", name, exc)
