"""The docker proxy as a plain ASGI app: token, allowlist, then Docker's answer streamed back.

Order of checks: `/healthz` (liveness, no token) → configured at all (503) → Bearer token
(401 missing, 403 wrong) → `/metrics` → allowlist (403) → no request body (403) → Docker
(502 when it does not answer). Authentication comes before the allowlist so a caller
without the token learns nothing about what is allowed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

import anyio
import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import Receive, Scope, Send

from bastion.dockerproxy.allowlist import Allowlist, Forward
from bastion.dockerproxy.errors import (
    DockerUnreachable,
    Misconfigured,
    MissingToken,
    NotAllowlisted,
    ProxyError,
    Refused,
    WrongToken,
)
from bastion.dockerproxy.headers import request_headers, response_headers
from bastion.dockerproxy.listing import filtered_list
from bastion.dockerproxy.metrics import ProxyMetrics
from bastion.dockerproxy.settings import DockerProxySettings
from bastion.dockerproxy.upstream import DockerSocket

logger = logging.getLogger("bastion.dockerproxy")
security_logger = logging.getLogger("bastion.security.dockerproxy")

REASON_NO_TOKEN = "the docker proxy has no token configured"  # noqa: S105 - a message
REASON_NO_CONTAINERS = "the docker proxy has no allowed containers configured"
# Not "Authorization: Bearer …": the log redactor would (rightly) mask that shape.
REASON_MISSING = "missing token (Authorization header, Bearer scheme)"
REASON_AMBIGUOUS = "more than one Authorization header"
REASON_WRONG = "wrong token"
REASON_BODY = "request bodies are not accepted"
MAX_LOGGED_TARGET = 300


class DockerProxyApp:
    def __init__(
        self,
        settings: DockerProxySettings,
        *,
        metrics: ProxyMetrics | None = None,
        upstream: DockerSocket | None = None,
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ProxyMetrics()
        self.allowlist = Allowlist(settings.allowed_containers)
        self.upstream = upstream or DockerSocket(
            settings.docker_socket, timeout_seconds=settings.upstream_timeout_seconds
        )
        token = settings.token.get_secret_value().encode() if settings.token else b""
        self._token_digest = hashlib.sha256(token).digest()
        # Fail closed: without a token or an allowlist nothing can be decided safely, so
        # everything but liveness is refused (load_proxy_settings refuses to start too).
        self._misconfigured: str | None = None
        if not token:
            self._misconfigured = REASON_NO_TOKEN
        elif not self.allowlist.containers:
            self._misconfigured = REASON_NO_CONTAINERS

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            # Docker's attach/exec websockets are never allowed; 1008 = policy violation.
            await send({"type": "websocket.close", "code": 1008})
            return
        method: str = scope["method"]
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        if raw_path == b"/healthz" and method in ("GET", "HEAD"):
            await _send_json(send, 200, {"status": "ok"})
            return
        try:
            if self._misconfigured is not None:
                raise Misconfigured(self._misconfigured)
            self._authenticate(scope["headers"])
            if raw_path == b"/metrics" and method == "GET":
                body = self.metrics.exposition()
                await _send_whole(
                    send, 200, [(b"content-type", CONTENT_TYPE_LATEST.encode())], body
                )
                return
            forward = self.allowlist.check(method, raw_path, scope["query_string"])
            if not await _empty_body(scope["headers"], receive):
                return  # the client is gone
            response = await self.upstream.open(
                method,
                forward.target,
                _upstream_headers(forward, scope["headers"]),
                long_poll=forward.rule.long_poll,
            )
        except ProxyError as exc:
            self._record(exc, scope)
            extra = [(b"www-authenticate", b'Bearer realm="bastion-docker-proxy"')]
            await _send_json(
                send, exc.status, {"message": str(exc)}, extra if exc.status == 401 else []
            )
            return
        self.metrics.forwarded.labels(forward.rule.endpoint).inc()
        try:
            await self._answer(forward, method, response, receive, send, scope)
        finally:
            await response.aclose()

    def _authenticate(self, headers: list[tuple[bytes, bytes]]) -> None:
        values = [value for key, value in headers if key.lower() == b"authorization"]
        if not values:
            raise MissingToken(REASON_MISSING)
        if len(values) > 1:
            raise WrongToken(REASON_AMBIGUOUS)
        scheme, _, credentials = values[0].strip().partition(b" ")
        if scheme.lower() != b"bearer" or not credentials.strip():
            raise MissingToken(REASON_MISSING)
        # Equal-length digests compared in constant time: the time a comparison takes says
        # nothing about how much of the token was right, nor about its length.
        presented = hashlib.sha256(credentials.strip()).digest()
        if not hmac.compare_digest(presented, self._token_digest):
            raise WrongToken(REASON_WRONG)

    async def _answer(
        self,
        forward: Forward,
        method: str,
        response: httpx.Response,
        receive: Receive,
        send: Send,
        scope: Scope,
    ) -> None:
        if forward.rule.filters_list and response.status_code == 200:
            try:
                body = await filtered_list(response, self.allowlist)
            except DockerUnreachable as exc:
                self._record(exc, scope)
                await _send_json(send, exc.status, {"message": str(exc)})
                return
            headers = [
                (k, v)
                for k, v in response_headers(response.headers.raw)
                if k not in (b"content-length", b"content-encoding")
            ]
            await _send_whole(send, 200, headers, body)
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": response_headers(response.headers.raw),
            }
        )
        if method == "HEAD":
            await send({"type": "http.response.body", "body": b""})
            return
        await self._stream_body(response, receive, send, scope)

    async def _stream_body(
        self, response: httpx.Response, receive: Receive, send: Send, scope: Scope
    ) -> None:
        async with anyio.create_task_group() as group:
            # A long poll (`wait`) sends nothing for a long time: watch for the client
            # leaving, so its Docker connection is not held until the container exits.
            group.start_soon(_cancel_on_disconnect, receive, group.cancel_scope)
            try:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            except httpx.TransportError:
                # Headers are out: the only honest signal left is an incomplete answer.
                self.metrics.failed.labels("docker_stream_broken").inc()
                logger.error("Docker broke off its answer to %s", _target(scope))
                group.cancel_scope.cancel()
                return
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            group.cancel_scope.cancel()

    def _record(self, exc: ProxyError, scope: Scope) -> None:
        if isinstance(exc, Refused):
            self.metrics.refused.labels(exc.kind).inc()
            security_logger.warning(
                "refused %s %s from %s: %d %s",
                scope["method"],
                _target(scope),
                _peer(scope),
                exc.status,
                exc,
            )
        else:
            self.metrics.failed.labels(exc.kind).inc()
            logger.error(
                "%s %s from %s: %d %s",
                scope["method"],
                _target(scope),
                _peer(scope),
                exc.status,
                exc,
            )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self._misconfigured is not None:
                    logger.error("refusing every request: %s", self._misconfigured)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.upstream.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _upstream_headers(
    forward: Forward, headers: list[tuple[bytes, bytes]]
) -> list[tuple[bytes, bytes]]:
    kept = request_headers(headers)
    if forward.rule.filters_list:
        # The list is parsed and filtered here, so it must arrive uncompressed.
        kept = [(key, value) for key, value in kept if key != b"accept-encoding"]
    return kept


async def _empty_body(headers: list[tuple[bytes, bytes]], receive: Receive) -> bool:
    """Refuse any request body (no allowed endpoint takes one); False if the client left."""
    for key, value in headers:
        # A body is how a request to an old API version (< 1.24) smuggled a HostConfig
        # (privileged, binds) into `start`.
        if key.lower() == b"content-length" and value.strip() != b"0":
            raise NotAllowlisted(REASON_BODY)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return False
        if message.get("body"):
            raise NotAllowlisted(REASON_BODY)
        if not message.get("more_body"):
            return True


async def _cancel_on_disconnect(receive: Receive, scope: anyio.CancelScope) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    scope.cancel()


async def _send_whole(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    headers = [*headers, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_json(
    send: Send,
    status: int,
    payload: dict[str, str],
    headers: list[tuple[bytes, bytes]] | None = None,
) -> None:
    body = json.dumps(payload).encode()
    base = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    await _send_whole(send, status, [*base, *(headers or [])], body)


def _target(scope: Scope) -> str:
    raw: bytes = scope.get("raw_path") or scope["path"].encode()
    if scope.get("query_string"):
        raw += b"?" + scope["query_string"]
    text = raw.decode("ascii", errors="backslashreplace")
    return text if len(text) <= MAX_LOGGED_TARGET else text[:MAX_LOGGED_TARGET] + "…"


def _peer(scope: Scope) -> str:
    client = scope.get("client")
    if not client:
        return "unix-socket"
    host, port = client[0], client[1]
    return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
