"""Which Docker API requests the proxy forwards: method, path, query and container name.

Everything is matched on the raw request path, anchored at both ends, with no decoding:
container names never need percent-encoding, so an encoded `/` or `.` can only be an
attempt to make the proxy and Docker read the same path differently. The query string is
parsed, checked parameter by parameter, and re-encoded, so Docker sees exactly what was
checked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, urlencode

from bastion.containers import CONTAINER_NAME
from bastion.dockerproxy.errors import NotAllowlisted

# The API version prefix Docker accepts in front of every path (`/v1.43/containers/…`).
_VERSION = r"(?:/v[0-9]{1,2}\.[0-9]{1,3})?"
# Docker's container name rule: the name group cannot hold `/`, `%` or a leading `.`.
_NAME = rf"(?P<name>{CONTAINER_NAME.pattern})"

_ANY = re.compile(r"[^\x00-\x1f\x7f]{0,4096}")
_BOOL = re.compile(r"true|false|1|0")
_FALSE = re.compile(r"false|0")
_SECONDS = re.compile(r"-?[0-9]{1,6}")
_SIGNAL = re.compile(r"[A-Za-z0-9+]{1,16}")
_NUMBER = re.compile(r"-?[0-9]{1,9}")
_WAIT_CONDITION = re.compile(r"not-running|next-exit|removed")

REASON_NOT_ALLOWED = "{method} {path} is not allowed by the docker proxy"
REASON_METHOD = "{method} is not allowed on {path}"
REASON_CONTAINER = "container {name!r} is not in the docker proxy's allowlist"
REASON_QUERY = "query string refused: {detail}"


@dataclass(frozen=True)
class Rule:
    endpoint: str
    methods: frozenset[str]
    path: re.Pattern[str]
    # Allowed query parameters and the shape of their values; anything else is refused.
    params: Mapping[str, re.Pattern[str]] = field(default_factory=dict)
    required: frozenset[str] = frozenset()
    # Docker answers with every container: the proxy cuts the answer down to the allowlist.
    filters_list: bool = False
    # Docker holds the answer until something happens (a container exits): no read timeout.
    long_poll: bool = False


def _rule(endpoint: str, methods: str, path: str, **options: object) -> Rule:
    return Rule(
        endpoint,
        frozenset(methods.split()),
        re.compile(_VERSION + path.replace("{name}", _NAME)),
        **options,  # type: ignore[arg-type]
    )


RULES: tuple[Rule, ...] = (
    # The docker CLI pings with HEAD first, then GET, to negotiate the API version.
    _rule("ping", "GET HEAD", "/_ping"),
    _rule("version", "GET", "/version"),
    _rule(
        "list",
        "GET",
        "/containers/json",
        params={"all": _BOOL, "limit": _NUMBER, "size": _BOOL, "filters": _ANY},
        filters_list=True,
    ),
    _rule("inspect", "GET", "/containers/{name}/json", params={"size": _BOOL}),
    # A streaming stats request holds a connection (and Docker's collector) open forever.
    _rule(
        "stats",
        "GET",
        "/containers/{name}/stats",
        params={"stream": _FALSE, "one-shot": _BOOL},
        required=frozenset({"stream"}),
    ),
    # No checkpoint parameters: restoring a checkpoint reads a directory named by the caller.
    _rule("start", "POST", "/containers/{name}/start"),
    _rule("stop", "POST", "/containers/{name}/stop", params={"t": _SECONDS, "signal": _SIGNAL}),
    _rule(
        "restart", "POST", "/containers/{name}/restart", params={"t": _SECONDS, "signal": _SIGNAL}
    ),
    _rule("kill", "POST", "/containers/{name}/kill", params={"signal": _SIGNAL}),
    _rule(
        "wait",
        "POST",
        "/containers/{name}/wait",
        params={"condition": _WAIT_CONDITION},
        long_poll=True,
    ),
)


@dataclass(frozen=True)
class Forward:
    """An allowed request: what to send to Docker and how to treat the answer."""

    rule: Rule
    path: str
    query: str
    container: str | None

    @property
    def target(self) -> str:
        return f"{self.path}?{self.query}" if self.query else self.path


class Allowlist:
    def __init__(self, containers: Iterable[str], rules: tuple[Rule, ...] = RULES) -> None:
        self.containers = frozenset(containers)
        self._rules = rules

    def check(self, method: str, raw_path: bytes, query_string: bytes) -> Forward:
        """The request to forward, or NotAllowlisted saying why not."""
        try:
            path = raw_path.decode("ascii")
            query = query_string.decode("ascii")
        except UnicodeDecodeError:
            raise NotAllowlisted("the request target is not ASCII") from None
        matched = [(rule, m) for rule in self._rules if (m := rule.path.fullmatch(path))]
        if not matched:
            raise NotAllowlisted(REASON_NOT_ALLOWED.format(method=method, path=path))
        allowed = [(rule, found) for rule, found in matched if method in rule.methods]
        if not allowed:
            raise NotAllowlisted(REASON_METHOD.format(method=method, path=path))
        rule, found = allowed[0]
        name = found.groupdict().get("name")
        if name is not None and name not in self.containers:
            raise NotAllowlisted(REASON_CONTAINER.format(name=name))
        return Forward(rule, path, _checked_query(rule, query), name)

    def keep(self, names: Iterable[str]) -> list[str]:
        """The allowlisted ones among a container's names (Docker writes them as `/name`)."""
        return [name for name in names if name.removeprefix("/") in self.containers]


def _checked_query(rule: Rule, query: str) -> str:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise NotAllowlisted(REASON_QUERY.format(detail="malformed")) from None
    seen: set[str] = set()
    for key, value in pairs:
        pattern = rule.params.get(key)
        if pattern is None:
            raise NotAllowlisted(REASON_QUERY.format(detail=f"parameter {key!r} is not allowed"))
        # Docker reads the first of repeated parameters, other parsers the last: refuse both.
        if key in seen:
            raise NotAllowlisted(REASON_QUERY.format(detail=f"parameter {key!r} is repeated"))
        seen.add(key)
        if not pattern.fullmatch(value):
            raise NotAllowlisted(REASON_QUERY.format(detail=f"value of {key!r} is not allowed"))
    missing = sorted(rule.required - seen)
    if missing:
        raise NotAllowlisted(REASON_QUERY.format(detail=f"{', '.join(missing)} is required"))
    return urlencode(pairs, quote_via=quote)
