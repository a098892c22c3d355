"""The docker client: typed errors for every failure, the inspect cache, and the calls
against a real engine."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
import pytest

from bastion.rotation.client import DockerClient, DockerEndpoint, parse_time
from bastion.rotation.errors import (
    ContainerNotFound,
    DockerError,
    DockerFailed,
    DockerRefused,
    DockerUnreachable,
)
from tests.docker_engine import DockerEngine
from tests.rotation.conftest import Replicas
from tests.services import free_port

TOKEN = "proxy-token-for-tests"


def mocked(handler: httpx.MockTransport, **options: float) -> DockerClient:
    return DockerClient(
        DockerEndpoint("http://proxy.test:2375", TOKEN), transport=handler, **options
    )


def answering(
    status: int, body: object = None, seen: list[httpx.Request] | None = None
) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(status, json=body)

    return httpx.MockTransport(handle)


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (401, {"message": "missing token"}, DockerRefused, "refused GET /_ping: missing token"),
        (403, {"message": "not allowlisted"}, DockerRefused, "not allowlisted"),
        (502, {"message": "docker unreachable"}, DockerUnreachable, "docker unreachable"),
        (503, {"message": "misconfigured"}, DockerUnreachable, "misconfigured"),
        (500, {"message": "boom"}, DockerFailed, "GET /_ping: boom"),
    ],
)
async def test_each_failure_has_its_type(
    status: int, body: object, error: type[DockerError], text: str
) -> None:
    client = mocked(answering(status, body))
    with pytest.raises(error, match=text):
        await client.ping()
    await client.aclose()


async def test_the_token_rides_as_a_bearer_header() -> None:
    seen: list[httpx.Request] = []
    client = mocked(answering(200, "OK", seen))
    await client.ping()
    assert seen[0].headers["authorization"] == f"Bearer {TOKEN}"
    assert TOKEN not in repr(client.endpoint)
    await client.aclose()


async def test_a_name_that_is_not_a_container_name_never_reaches_the_url() -> None:
    seen: list[httpx.Request] = []
    client = mocked(answering(200, {}, seen))
    for name in ("../images/json", "a/b", "x?all=1", ""):
        with pytest.raises(DockerError, match="not a container name"):
            await client.start(name)
    assert seen == []
    await client.aclose()


async def test_nothing_listening_is_unreachable() -> None:
    client = DockerClient(DockerEndpoint(f"http://127.0.0.1:{free_port()}", TOKEN))
    with pytest.raises(DockerUnreachable, match="cannot reach the docker proxy"):
        await client.ping()
    await client.aclose()


async def test_inspect_answers_are_cached_for_two_seconds_and_dropped_on_start() -> None:
    now = [100.0]
    seen: list[httpx.Request] = []
    body = {"Id": "abc", "State": {"Status": "exited", "StartedAt": "0001-01-01T00:00:00Z"}}

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204 if request.method == "POST" else 200, json=body)

    client = DockerClient(
        DockerEndpoint("http://proxy.test", TOKEN),
        transport=httpx.MockTransport(handle),
        monotonic=lambda: now[0],
    )
    first = await client.inspect("web-a")
    assert (first.status, first.health, first.started_at) == ("exited", "none", None)
    now[0] += 1.9
    await client.inspect("web-a")
    assert len(seen) == 1
    now[0] += 0.2
    await client.inspect("web-a")
    assert len(seen) == 2
    await client.start("web-a")
    await client.inspect("web-a")
    assert [r.method for r in seen] == ["GET", "GET", "POST", "GET"]
    await client.inspect("web-a", fresh=True)
    assert len(seen) == 5
    await client.aclose()


def test_docker_timestamps_keep_microseconds_and_never_means_none() -> None:
    assert parse_time("2026-03-01T12:00:00.123456789Z") == datetime(
        2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC
    )
    assert parse_time("2026-03-01T14:00:00+02:00") == datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert parse_time("0001-01-01T00:00:00Z") is None
    assert parse_time("yesterday") is None


async def test_against_a_real_engine(docker_engine: DockerEngine, replicas: Replicas) -> None:
    name, other = replicas(2)
    client = DockerClient(DockerEndpoint(docker_engine.host, TOKEN))
    try:
        await client.ping()
        assert (await client.inspect(name)).status == "created"
        await client.start(name)
        await client.start(name)  # 304: already started is fine
        info = await client.inspect(name)
        assert info.running
        assert info.started_at is not None
        listed = await client.list_containers()
        assert (listed[name], listed[other]) == ("running", "created")
        stats = await client.stats(name)
        assert "cpu_stats" in stats
        await client.stop(name, 1)
        await client.stop(name, 1)  # 304
        assert (await client.inspect(name)).status == "exited"
        await client.kill(name)  # not running: what kill wanted anyway
        with pytest.raises(ContainerNotFound):
            await client.inspect("no-such-container")
        with pytest.raises(ContainerNotFound):
            await client.start("no-such-container")
    finally:
        await client.aclose()
