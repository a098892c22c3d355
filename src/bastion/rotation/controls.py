"""The control state machine of a pool: pause, resume, rotate, kill.

    running --pause--> paused --kill--> killed
       ^                 |                |
       +-----resume------+-----resume-----+

`rotate` asks for a rotation now; while paused or killed only with `force` (the operator
says so explicitly: a paused pool is usually paused for a reason). `kill` stops every
replica of the pool at once; it is refused while rotation runs, so a stray click cannot
take a live service down: pause first.

An accepted `rotate` or `kill` becomes the pool's pending action, which the controller
carries out; a second one is refused until then.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bastion.rotation.errors import TransitionRefused


class PoolState(StrEnum):
    RUNNING = "running"
    PAUSED = "paused"
    KILLED = "killed"  # paused, every replica stopped


class Action(StrEnum):
    PAUSE = "pause"
    RESUME = "resume"
    ROTATE = "rotate"
    KILL = "kill"


# Why a transition is refused: stable texts the console shows and the audit keeps.
ALREADY_PAUSED = "the pool is already paused"
NOT_PAUSED = "the pool is not paused"
ROTATION_PENDING = "a rotation is already pending"
KILL_PENDING = "a kill is being carried out"
PAUSED_NEEDS_FORCE = "the pool is paused: rotate it anyway with force"
KILL_WHILE_RUNNING = "kill is refused while rotation runs: pause the pool first"
ALREADY_KILLED = "the pool is already killed"


@dataclass(frozen=True)
class Control:
    """A pool's control state: what the state machine decides on."""

    state: PoolState
    pending: Action | None = None


def decide(current: Control, action: Action, *, force: bool = False) -> Control:
    """The state after `action`, or TransitionRefused with the reason."""
    state, pending = current.state, current.pending
    if pending is Action.KILL:
        raise TransitionRefused(KILL_PENDING)
    if action is Action.PAUSE:
        if state is not PoolState.RUNNING:
            raise TransitionRefused(ALREADY_PAUSED)
        return Control(PoolState.PAUSED)  # a rotation not yet begun is dropped too
    if action is Action.RESUME:
        if state is PoolState.RUNNING:
            raise TransitionRefused(NOT_PAUSED)
        return Control(PoolState.RUNNING, pending)
    if action is Action.ROTATE:
        if pending is Action.ROTATE:
            raise TransitionRefused(ROTATION_PENDING)
        if state is not PoolState.RUNNING and not force:
            raise TransitionRefused(PAUSED_NEEDS_FORCE)
        # A forced rotation of a killed pool brings a replica back: it is paused again.
        next_state = PoolState.PAUSED if state is PoolState.KILLED else state
        return Control(next_state, Action.ROTATE)
    if state is PoolState.RUNNING:
        raise TransitionRefused(KILL_WHILE_RUNNING)
    if state is PoolState.KILLED:
        raise TransitionRefused(ALREADY_KILLED)
    return Control(PoolState.KILLED, Action.KILL)
