"""Errors of workflow definitions and of their execution."""

from __future__ import annotations

from bastion.errors import BastionError, InvalidInput


class InvalidGraph(InvalidInput):
    """A workflow graph that cannot be accepted; the message names the node or edge."""


class NodeFailed(BastionError):
    """A node could not do its work; the run fails with this message as its error.

    Messages are shown to operators and stored in run history, so they never carry a
    credential value or a response body, only what went wrong and where.
    """
