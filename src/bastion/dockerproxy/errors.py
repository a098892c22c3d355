"""Why the proxy did not forward a request: one type per answer it gives."""

from __future__ import annotations

from typing import ClassVar

from bastion.errors import BastionError


class ProxyError(BastionError):
    """A request the proxy answers itself; `status` is the HTTP answer, `kind` the metric label."""

    status: ClassVar[int] = 500
    kind: ClassVar[str] = "error"


class Refused(ProxyError):
    """Refused on purpose: logged on the security logger and counted."""


class MissingToken(Refused):
    status = 401
    kind = "missing_token"


class WrongToken(Refused):
    status = 403
    kind = "wrong_token"


class NotAllowlisted(Refused):
    status = 403
    kind = "not_allowlisted"


class Misconfigured(ProxyError):
    """The proxy cannot decide safely (no token, no containers): it refuses everything."""

    status = 503
    kind = "misconfigured"


class DockerUnreachable(ProxyError):
    """The Docker socket did not answer, or answered something the proxy cannot vouch for."""

    status = 502
    kind = "docker_unreachable"
