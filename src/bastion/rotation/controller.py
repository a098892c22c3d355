"""The rotation controller: a background service of `bastion serve`, one loop per pool.

Each pass over a pool, while this server holds the pool's lease, runs the first step
that finds work (each returns "did I do something?"), then the next pass starts at once;
a pass with nothing to do waits for a tick or a wake-up (an accepted control action):
  1. carry_out_pending: an accepted `kill` or `rotate`;
  2. reconcile: the single-active invariant. Any running replica that is not the
     active one is taken out of HAProxy and stopped, and the drift recorded; a dead
     active replica (or none) is replaced at once;
  3. rotate_if_due: the schedule (interval plus random jitter).
Docker or HAProxy failing makes a step fail cleanly: the error is recorded on the pool
and the next pass tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from prometheus_client import Counter

from bastion.db.tables import RotationPool
from bastion.db.types import utcnow
from bastion.rotation.client import DockerClient
from bastion.rotation.controls import Action, PoolState
from bastion.rotation.errors import CandidateFailed, DockerError, HAProxyError, LeaseLost
from bastion.rotation.haproxy import AdminState, HAProxy
from bastion.rotation.pools import PoolConfig
from bastion.rotation.state import ACTOR, Outcome, RotationStore
from bastion.rotation.switch import Clock, Sleep, Switch, Switcher

log = logging.getLogger("bastion.rotation")
TICK_SECONDS = 1.0
LEASE_SECONDS = 30.0
RETRY_SECONDS = 30.0  # after a failed rotation, the next attempt comes at most this late
NOTE_AGAIN_SECONDS = 60.0  # a persisting error is written again this often, not every pass

ROTATIONS = Counter("bastion_rotations", "Rotation attempts", ["pool", "outcome"])
DRIFT = Counter("bastion_rotation_drift", "Drift corrected by reconcile", ["pool"])


class Controller:
    def __init__(
        self,
        pools: Sequence[PoolConfig],
        docker: DockerClient,
        store: RotationStore,
        *,
        haproxy: Callable[[PoolConfig], HAProxy | None] | None = None,
        clock: Clock = utcnow,
        sleep: Sleep = asyncio.sleep,
        rng: random.Random | None = None,
        owner: str | None = None,
    ) -> None:
        self.pools = {pool.name: pool for pool in pools}
        self.docker = docker
        self.store = store
        self.clock = clock
        self.sleep = sleep
        # The next replica must not be predictable from earlier choices.
        self.rng = rng or secrets.SystemRandom()
        self.owner = owner or f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"
        self._haproxies = {
            p.name: HAProxy(p.haproxy) if p.haproxy else None for p in self.pools.values()
        }
        self.haproxy = haproxy or (lambda pool: self._haproxies[pool.name])
        self.switcher = Switcher(
            docker, store, self.haproxy, clock=clock, sleep=sleep, keep_lease=self._keep_lease
        )
        self._held: dict[str, datetime] = {}
        self._retry_after: dict[str, datetime] = {}
        self._noted: dict[str, tuple[str, datetime]] = {}
        self._wake = {name: asyncio.Event() for name in self.pools}

    def wake(self, pool: str) -> None:
        """An action was accepted in this process: act now, not at the next tick."""
        if pool in self._wake:
            self._wake[pool].set()

    async def run(self) -> None:
        await self.store.ensure(list(self.pools.values()))
        try:
            async with asyncio.TaskGroup() as group:
                for pool in self.pools.values():
                    group.create_task(self._loop(pool), name=f"rotation-{pool.name}")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._release_all())

    async def _loop(self, pool: PoolConfig) -> None:
        wake = self._wake[pool.name]
        while True:
            wake.clear()
            try:
                if await self.step(pool):
                    continue
            except Exception:
                # The database, most likely: wait longer before the next pass rather than
                # spin, and keep the other pools going.
                log.exception("rotation of pool %s failed; next pass in %g s", pool.name, 5)
                await self.sleep(5 * TICK_SECONDS)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), TICK_SECONDS)

    async def _release_all(self) -> None:
        for name in list(self._held):
            await self.store.release(name, self.owner)
        self._held.clear()

    async def step(self, pool: PoolConfig) -> bool:
        """One pass over `pool`: the first step with work does it. True when one did."""
        if not await self._hold(pool):
            return False
        row = await self.store.pool(pool.name)
        try:
            return (
                await self.carry_out_pending(pool, row)
                or await self.reconcile(pool, row)
                or await self.rotate_if_due(pool, row)
            )
        except (DockerError, HAProxyError, LeaseLost) as exc:
            # Failures so far may have been the engine's: once it answers again, a dead
            # active replica is replaced at once, not after the retry delay.
            self._retry_after.pop(pool.name, None)
            await self.note(pool, str(exc))
            return False

    async def note(self, pool: PoolConfig, message: str) -> None:
        """A problem that blocks the pool: logged and added to its last errors, but a
        persisting one only once a minute, not on every pass."""
        now = self.clock()
        last = self._noted.get(pool.name)
        recent = last is not None and (now - last[1]).total_seconds() < NOTE_AGAIN_SECONDS
        if last is not None and last[0] == message and recent:
            return
        self._noted[pool.name] = (message, now)
        log.warning("rotation of pool %s: %s", pool.name, message)
        await self.store.error(pool.name, message, now)

    # -- leases ------------------------------------------------------------------------

    async def _hold(self, pool: PoolConfig) -> bool:
        now = self.clock()
        held = self._held.get(pool.name)
        if held is not None and (held - now).total_seconds() > LEASE_SECONDS / 2:
            return True
        until = now + timedelta(seconds=LEASE_SECONDS)
        if await self.store.claim(pool.name, self.owner, now, until):
            self._held[pool.name] = until
            return True
        self._held.pop(pool.name, None)
        return False

    async def _keep_lease(self, pool: PoolConfig) -> None:
        if not await self._hold(pool):
            raise LeaseLost("another server took the pool over mid-rotation")

    # -- steps -------------------------------------------------------------------------

    async def carry_out_pending(self, pool: PoolConfig, row: RotationPool) -> bool:
        if row.pending_action == Action.KILL.value:
            await self.kill(pool)
            return True
        if row.pending_action == Action.ROTATE.value:
            await self.rotate(pool, row.active_replica, "manual", row.pending_by or ACTOR)
            return True
        return False

    async def reconcile(self, pool: PoolConfig, row: RotationPool) -> bool:
        states = await self.docker.list_containers()
        running = [name for name in pool.replicas if states.get(name) == "running"]
        active, state = row.active_replica, PoolState(row.state)
        if state is PoolState.KILLED:
            keep = None
        elif active is None and state is PoolState.RUNNING:
            # No active replica (first start, or after a kill): rotate away from one that
            # runs, so whatever serves now keeps serving until a fresh one takes over.
            keep = running[0] if running else None
        else:
            keep = active
        strays = [name for name in running if name != keep]
        for name in strays:
            await self.switcher.retire(pool, name, drain=False)
            what = (
                f"{name} was running beside the active replica ({active}); stopped"
                if keep is not None
                else f"{name} was running while the pool had no active replica; stopped"
            )
            log.warning("pool %s: %s", pool.name, what)
            DRIFT.labels(pool.name).inc()
            await self.store.drift(pool.name, name, what, self.clock())
        if state is PoolState.RUNNING and (keep is None or keep not in running or active is None):
            now = self.clock()
            if self._retry_after.get(pool.name, now) > now:
                return bool(strays)
            if active is not None and active not in running:
                what = f"the active replica {active} is {states.get(active, 'missing')}"
                await self.store.drift(pool.name, active, what + "; replacing it", now)
            await self.rotate(pool, keep, "recovery", ACTOR)
            return True
        if state is PoolState.PAUSED and active is not None and active not in running:
            await self.note(pool, f"the active replica {active} is not running (pool paused)")
        return bool(strays) or await self._sync_haproxy(pool, row, running)

    async def _sync_haproxy(self, pool: PoolConfig, row: RotationPool, running: list[str]) -> bool:
        """HAProxy lost our settings (restarted, reloaded): put them back."""
        haproxy = self.haproxy(pool)
        if haproxy is None:
            return False
        servers = await haproxy.servers()
        fixed = False
        for name in pool.replicas:
            server = servers.get(name)
            want: AdminState = "maint"
            if name == row.active_replica and name in running:
                want = "ready"
            if server is not None and server.admin != want:
                await haproxy.set_state(name, want)
                log.warning(
                    "pool %s: HAProxy had %s %s, set %s", pool.name, name, server.admin, want
                )
                fixed = True
        return fixed

    async def rotate_if_due(self, pool: PoolConfig, row: RotationPool) -> bool:
        if row.state != PoolState.RUNNING.value:
            return False
        now = self.clock()
        if row.next_rotation_at is None:
            await self.store.schedule(pool.name, self._next(pool, now))
            return True
        if row.next_rotation_at > now:
            return False
        await self.rotate(pool, row.active_replica, "schedule", ACTOR)
        return True

    def _next(self, pool: PoolConfig, now: datetime) -> datetime:
        jitter = self.rng.uniform(0, pool.jitter_seconds) if pool.jitter_seconds else 0.0
        return now + timedelta(seconds=pool.interval_seconds + jitter)

    # -- actions -----------------------------------------------------------------------

    async def rotate(self, pool: PoolConfig, current: str | None, trigger: str, actor: str) -> None:
        """Replace `current` by a randomly chosen other replica; candidates that fail are
        skipped. When none works, `current` stays, and the failure is alerted."""
        started = self.clock()
        outcome = Outcome(pool.name, trigger, actor, pool.strategy.value, current, started)
        switch = Switch(pool, current, outcome)
        candidates = [name for name in pool.replicas if name != current]
        self.rng.shuffle(candidates)
        for candidate in candidates:
            try:
                await self.switcher.to(switch, candidate)
                break
            except CandidateFailed as exc:
                log.warning("pool %s: skipped %s: %s", pool.name, candidate, exc)
                outcome.skipped.append({"replica": candidate, "reason": str(exc)})
            except (DockerError, HAProxyError, LeaseLost) as exc:  # not the candidate's fault
                outcome.error = f"rotation stopped: {exc}"
                break
        if outcome.to_replica is None:
            await self._failed(switch)
            next_at = min(self._next(pool, self.clock()), self.clock() + _retry())
            self._retry_after[pool.name] = next_at
        else:
            self._retry_after.pop(pool.name, None)
            next_at = self._next(pool, self.clock())
        ROTATIONS.labels(pool.name, "ok" if outcome.ok else "failed").inc()
        await self.store.finish(outcome, finished_at=self.clock(), next_at=next_at)

    async def _failed(self, switch: Switch) -> None:
        outcome = switch.outcome
        if not outcome.error:
            reasons = "; ".join(f"{s['replica']}: {s['reason']}" for s in outcome.skipped)
            outcome.error = "no replica became healthy" + (f" ({reasons})" if reasons else "")
        try:
            await self.switcher.restore(switch)
        except (CandidateFailed, DockerError, HAProxyError, LeaseLost) as exc:
            outcome.error += f"; {switch.old} could not be brought back: {exc}"
        # The alert: the log's error level and the pool's last errors (the console shows
        # them); the audit record is written with the history row.
        log.error("ALERT pool %s: rotation failed: %s", switch.pool.name, outcome.error)

    async def kill(self, pool: PoolConfig) -> None:
        """Every replica out of HAProxy and killed (SIGKILL: an emergency stop)."""
        stopped: list[str] = []
        errors: list[str] = []
        haproxy = self.haproxy(pool)
        try:
            states = await self.docker.list_containers()
        except DockerError as exc:
            states, errors = {}, [f"cannot list containers: {exc}"]
        for name in pool.replicas:
            try:
                if haproxy is not None:
                    await haproxy.set_state(name, "maint")
                if states.get(name) == "running":
                    await self.docker.kill(name)
                    stopped.append(name)
            except (DockerError, HAProxyError) as exc:
                errors.append(f"{name}: {exc}")
        self._retry_after.pop(pool.name, None)
        await self.store.killed(pool.name, stopped, errors, self.clock())


def _retry() -> timedelta:
    return timedelta(seconds=RETRY_SECONDS)
