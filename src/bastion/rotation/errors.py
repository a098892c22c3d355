"""What can go wrong in rotation: one type per failure class."""

from __future__ import annotations

from bastion.errors import BastionError, Conflict, NotFound, Unavailable


class DockerError(BastionError):
    """A docker call through the proxy failed. `permanent`: retrying will not help."""

    permanent = False


class DockerUnreachable(DockerError, Unavailable):
    """No answer from the docker proxy, or the proxy could not reach Docker (502/503)."""


class DockerRefused(DockerError):
    """The proxy refused the call (401/403): a wrong token, or a container it does not
    allowlist. Never retried: the configurations disagree."""

    permanent = True


class ContainerNotFound(DockerError, NotFound):
    permanent = True


class DockerFailed(DockerError):
    """Docker answered with an error of its own (a port in use, a container in the way)."""


class HAProxyError(BastionError):
    """The HAProxy runtime API could not be reached or refused a command."""


class LeaseLost(BastionError):
    """Another server took the pool over (this one stalled past its lease): stop acting."""


class CandidateFailed(BastionError):
    """A replica that was to become active did not start or become healthy in time."""


class TransitionRefused(Conflict):
    """A control action the pool's current state does not allow (answered 409)."""
