"""Every transition of the control state machine, valid and refused."""

from __future__ import annotations

import pytest

from bastion.rotation import controls
from bastion.rotation.controls import Action, Control, PoolState, decide
from bastion.rotation.errors import TransitionRefused

RUNNING, PAUSED, KILLED = PoolState.RUNNING, PoolState.PAUSED, PoolState.KILLED
PAUSE, RESUME, ROTATE, KILL = Action.PAUSE, Action.RESUME, Action.ROTATE, Action.KILL

ACCEPTED = [
    (Control(RUNNING), PAUSE, False, Control(PAUSED)),
    (Control(RUNNING, ROTATE), PAUSE, False, Control(PAUSED)),  # not yet begun: dropped
    (Control(PAUSED), RESUME, False, Control(RUNNING)),
    (Control(KILLED), RESUME, False, Control(RUNNING)),
    (Control(PAUSED, ROTATE), RESUME, False, Control(RUNNING, ROTATE)),
    (Control(RUNNING), ROTATE, False, Control(RUNNING, ROTATE)),
    (Control(RUNNING), ROTATE, True, Control(RUNNING, ROTATE)),
    (Control(PAUSED), ROTATE, True, Control(PAUSED, ROTATE)),
    (Control(KILLED), ROTATE, True, Control(PAUSED, ROTATE)),
    (Control(PAUSED), KILL, False, Control(KILLED, KILL)),
    (Control(PAUSED, ROTATE), KILL, False, Control(KILLED, KILL)),
]

REFUSED = [
    (Control(PAUSED), PAUSE, False, controls.ALREADY_PAUSED),
    (Control(KILLED), PAUSE, False, controls.ALREADY_PAUSED),
    (Control(RUNNING), RESUME, False, controls.NOT_PAUSED),
    (Control(RUNNING, ROTATE), ROTATE, False, controls.ROTATION_PENDING),
    (Control(RUNNING, ROTATE), ROTATE, True, controls.ROTATION_PENDING),
    (Control(PAUSED), ROTATE, False, controls.PAUSED_NEEDS_FORCE),
    (Control(KILLED), ROTATE, False, controls.PAUSED_NEEDS_FORCE),
    (Control(RUNNING), KILL, False, controls.KILL_WHILE_RUNNING),
    (Control(RUNNING), KILL, True, controls.KILL_WHILE_RUNNING),  # force does not help
    (Control(KILLED), KILL, False, controls.ALREADY_KILLED),
    (Control(KILLED, KILL), RESUME, False, controls.KILL_PENDING),
    (Control(KILLED, KILL), ROTATE, True, controls.KILL_PENDING),
]


@pytest.mark.parametrize(("before", "action", "force", "after"), ACCEPTED)
def test_accepted_transitions(before: Control, action: Action, force: bool, after: Control) -> None:
    assert decide(before, action, force=force) == after


@pytest.mark.parametrize(("before", "action", "force", "reason"), REFUSED)
def test_refused_transitions_give_their_reason(
    before: Control, action: Action, force: bool, reason: str
) -> None:
    with pytest.raises(TransitionRefused) as refused:
        decide(before, action, force=force)
    assert str(refused.value) == reason


def test_the_tables_cover_every_state_and_action() -> None:
    seen = {(before.state, action) for before, action, *_ in ACCEPTED + REFUSED}
    assert seen == {(state, action) for state in PoolState for action in Action}
