"""Errors of workflow definitions and of their execution."""

from __future__ import annotations

from enum import StrEnum

from bastion.errors import BastionError, InvalidInput


class Failure(StrEnum):
    """Why a run failed, in the classes a retry policy chooses from."""

    NODE_ERROR = "node_error"  # a node could not do its work (the default)
    TIMEOUT = "timeout"  # an HTTP request or a code node ran out of time
    NETWORK = "network"  # no connection, TLS failure, malformed answer
    HTTP_4XX = "http_4xx"  # an http_request with fail_on_status got a 4xx answer
    HTTP_5XX = "http_5xx"  # ... or a 5xx answer
    INTERRUPTED = "interrupted"  # its executor died in a step that cannot be repeated
    INTERNAL = "internal"  # a bug in Bastion


class InvalidGraph(InvalidInput):
    """A workflow graph that cannot be accepted; the message names the node or edge."""


class NodeFailed(BastionError):
    """A node could not do its work; the run fails with this message as its error.

    Messages are shown to operators and stored in run history, so they never carry a
    credential value or a response body, only what went wrong and where.
    """

    def __init__(self, message: str, failure: Failure = Failure.NODE_ERROR) -> None:
        super().__init__(message)
        self.failure = failure
