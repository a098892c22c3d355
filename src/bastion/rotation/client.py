"""An async Docker Engine API client that talks to the docker proxy, never to a socket of
Docker's own: only the calls rotation needs (inspect, start, stop, kill, stats, list,
ping), each answered with a typed error when it fails.

Inspect answers are cached for CACHE_SECONDS (status pages and the stream ask often) and
dropped whenever this client starts, stops or kills the container.
"""

from __future__ import annotations

import re
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from bastion.containers import CONTAINER_NAME
from bastion.rotation.errors import (
    ContainerNotFound,
    DockerError,
    DockerFailed,
    DockerRefused,
    DockerUnreachable,
)

CACHE_SECONDS = 2.0
TIMEOUT_SECONDS = 10.0
_NEVER = "0001-01-01T00:00:00Z"  # Docker's "not yet" timestamp
_TIMESTAMP = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)")


@dataclass(frozen=True)
class DockerEndpoint:
    url: str  # http(s)://host:port or unix:///path
    token: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __repr__(self) -> str:  # the token never reaches a log line or a traceback
        return f"DockerEndpoint(url={self.url!r}, token='**********')"


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    id: str
    status: str  # created | running | paused | restarting | removing | exited | dead
    health: str  # healthy | unhealthy | starting | none (no healthcheck)
    started_at: datetime | None
    finished_at: datetime | None
    exit_code: int
    # Without a read-only root filesystem, a restarted container keeps whatever was
    # written into it: a "fresh" replica would carry an intruder's files along.
    read_only: bool = False

    @property
    def running(self) -> bool:
        return self.status in ("running", "restarting")


def parse_time(value: object) -> datetime | None:
    """Docker's RFC 3339 timestamps carry nanoseconds; Python keeps microseconds."""
    match = _TIMESTAMP.fullmatch(value) if isinstance(value, str) else None
    if match is None or match[1].startswith("0001-"):
        return None
    zone = "+00:00" if match[3] == "Z" else match[3]
    fraction = (match[2] or "")[:6].ljust(6, "0")
    return datetime.fromisoformat(f"{match[1]}.{fraction}{zone}").astimezone(UTC)


def container_info(name: str, body: Mapping[str, Any]) -> ContainerInfo:
    state = body.get("State") or {}
    health = state.get("Health") or {}
    return ContainerInfo(
        name=name,
        id=str(body.get("Id", ""))[:64],
        status=str(state.get("Status", "unknown")),
        health=str(health.get("Status", "none")) if health else "none",
        started_at=parse_time(state.get("StartedAt", _NEVER)),
        finished_at=parse_time(state.get("FinishedAt", _NEVER)),
        exit_code=int(state.get("ExitCode", 0) or 0),
        read_only=bool((body.get("HostConfig") or {}).get("ReadonlyRootfs", False)),
    )


def _tls_context(endpoint: DockerEndpoint) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(endpoint.ca_file) if endpoint.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if endpoint.cert_file is not None:
        context.load_cert_chain(endpoint.cert_file, endpoint.key_file)
    return context


def _client(
    endpoint: DockerEndpoint, timeout: float, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncClient:
    parts = urlsplit(endpoint.url)
    options: dict[str, Any] = {
        "headers": {"Authorization": f"Bearer {endpoint.token}"},
        "timeout": timeout,
        # The token rides on every request: never let HTTP(S)_PROXY variables route it
        # elsewhere, and never follow a redirect to another host.
        "trust_env": False,
        "follow_redirects": False,
    }
    if parts.scheme == "unix":
        transport = transport or httpx.AsyncHTTPTransport(uds=parts.path)
        return httpx.AsyncClient(transport=transport, base_url="http://docker-proxy", **options)
    if parts.scheme == "https":
        options["verify"] = _tls_context(endpoint)
    return httpx.AsyncClient(
        transport=transport, base_url=f"{parts.scheme}://{parts.netloc}", **options
    )


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        text = str(body.get("message") or body.get("error") or "")
    else:
        text = response.text
    text = " ".join(text.split())
    return (text[:200] + "…") if len(text) > 200 else text or f"HTTP {response.status_code}"


class DockerClient:
    def __init__(
        self,
        endpoint: DockerEndpoint,
        *,
        timeout: float = TIMEOUT_SECONDS,
        cache_seconds: float = CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = timeout
        self.cache_seconds = cache_seconds
        self._monotonic = monotonic
        self._http = _client(endpoint, timeout, transport)
        self._cache: dict[str, tuple[float, ContainerInfo]] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        timeout: float | None = None,
        what: str = "",
    ) -> httpx.Response:
        try:
            response = await self._http.request(
                method, path, params=params, timeout=timeout or self.timeout
            )
        except httpx.TimeoutException:
            raise DockerUnreachable(f"the docker proxy did not answer {method} {path}") from None
        except (httpx.TransportError, ssl.SSLError, OSError) as exc:
            cause = exc if isinstance(exc, ssl.SSLError) else exc.__cause__ or exc.__context__
            # A refused handshake (no client certificate, another CA) says so: the most
            # likely misconfiguration once mutual TLS is on.
            reason = (
                f"TLS: {cause.reason}" if isinstance(cause, ssl.SSLError) else type(exc).__name__
            )
            raise DockerUnreachable(
                f"cannot reach the docker proxy at {self.endpoint.url} ({reason})"
            ) from None
        status = response.status_code
        if status < 400 or status == 304:  # 304: already started / already stopped
            return response
        message = _message(response)
        if status in (401, 403):
            raise DockerRefused(f"the docker proxy refused {method} {path}: {message}")
        if status == 404:
            raise ContainerNotFound(f"no container {what!r}" if what else message)
        if status in (502, 503, 504):
            raise DockerUnreachable(f"docker is unreachable behind the proxy: {message}")
        raise DockerFailed(f"{method} {path}: {message}")

    @staticmethod
    def _checked(name: str) -> str:
        # A name goes into the URL path: one that is not a container name (a '/', '..',
        # '?') could address another endpoint of the Docker API.
        if not CONTAINER_NAME.fullmatch(name):
            raise DockerError(f"{name[:40]!r} is not a container name")
        return name

    async def ping(self) -> None:
        await self._call("GET", "/_ping")

    async def inspect(self, name: str, *, fresh: bool = False) -> ContainerInfo:
        now = self._monotonic()
        cached = self._cache.get(name)
        if not fresh and cached is not None and cached[0] > now:
            return cached[1]
        response = await self._call("GET", f"/containers/{self._checked(name)}/json", what=name)
        info = container_info(name, response.json())
        self._cache[name] = (self._monotonic() + self.cache_seconds, info)
        return info

    def forget(self, name: str) -> None:
        self._cache.pop(name, None)

    async def start(self, name: str) -> None:
        self.forget(name)
        try:
            await self._call("POST", f"/containers/{self._checked(name)}/start", what=name)
        finally:
            self.forget(name)

    async def stop(self, name: str, timeout_seconds: int) -> None:
        """Stop, giving the container `timeout_seconds` after SIGTERM before SIGKILL."""
        self.forget(name)
        try:
            await self._call(
                "POST",
                f"/containers/{self._checked(name)}/stop",
                params={"t": str(timeout_seconds)},
                timeout=self.timeout + timeout_seconds,
                what=name,
            )
        finally:
            self.forget(name)

    async def kill(self, name: str) -> None:
        self.forget(name)
        try:
            await self._call("POST", f"/containers/{self._checked(name)}/kill", what=name)
        except DockerFailed as exc:
            if "is not running" not in str(exc):  # 409: already down is what kill wanted
                raise
        finally:
            self.forget(name)

    async def stats(self, name: str) -> dict[str, Any]:
        """One sample (the engine waits about a second to measure CPU use)."""
        response = await self._call(
            "GET",
            f"/containers/{self._checked(name)}/stats",
            params={"stream": "false"},
            timeout=self.timeout + 5,
            what=name,
        )
        body = response.json()
        return body if isinstance(body, dict) else {}

    async def list_containers(self) -> dict[str, str]:
        """Every container the proxy lets us see: name -> state."""
        response = await self._call("GET", "/containers/json", params={"all": "1"})
        found: dict[str, str] = {}
        for entry in response.json():
            for name in entry.get("Names") or []:
                found[str(name).lstrip("/")] = str(entry.get("State", "unknown"))
        return found
