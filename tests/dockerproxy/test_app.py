"""The proxy app in-process, with Docker played by an httpx mock (the real engine and the
real docker CLI are in test_docker_cli.py)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from bastion.dockerproxy.app import DockerProxyApp
from bastion.dockerproxy.metrics import ProxyMetrics
from bastion.dockerproxy.settings import DockerProxySettings
from bastion.dockerproxy.upstream import DockerSocket

TOKEN = "k" * 48
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CONTAINERS = [
    {"Id": "1" * 64, "Names": ["/web1"], "State": "running"},
    {"Id": "2" * 64, "Names": ["/db"], "State": "running"},
    {"Id": "3" * 64, "Names": ["/web2", "/db/web2-link"], "State": "exited"},
    {"Id": "4" * 64, "Names": ["/web1x"], "State": "running"},
]


class Body(httpx.AsyncByteStream):
    """A body still to be read, as a real transport returns it."""

    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk


def respond(status: int, payload: object, headers: dict[str, str] | None = None) -> httpx.Response:
    body = json.dumps(payload).encode()
    headers = {
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        **(headers or {}),
    }
    return httpx.Response(status, headers=headers, stream=Body(body))


class FakeDocker:
    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answer: Callable[[httpx.Request], httpx.Response] = self.default

    def default(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/containers/json"):
            return respond(200, CONTAINERS)
        return respond(
            200,
            {"path": request.url.path},
            {
                "Api-Version": "1.51",
                "Connection": "close, X-Internal",
                "X-Internal": "hop",
                "Keep-Alive": "timeout=5",
                "Proxy-Authenticate": "Basic",
            },
        )

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.answer(request)


def settings(**overrides: object) -> DockerProxySettings:
    values: dict[str, object] = {
        "token": TOKEN,
        "allowed_containers": "web1,web2",
        "docker_socket": Path("/nonexistent/docker.sock"),
    }
    values.update(overrides)
    return DockerProxySettings(**values)  # type: ignore[arg-type]


@pytest.fixture
def docker() -> FakeDocker:
    return FakeDocker()


@pytest.fixture
def metrics() -> ProxyMetrics:
    return ProxyMetrics()


def make_client(app: DockerProxyApp) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 50123))
    return httpx.AsyncClient(transport=transport, base_url="http://proxy")


@pytest.fixture
async def client(docker: FakeDocker, metrics: ProxyMetrics) -> AsyncIterator[httpx.AsyncClient]:
    upstream = DockerSocket(
        Path("/unused"), timeout_seconds=5, transport=httpx.MockTransport(docker)
    )
    app = DockerProxyApp(settings(), metrics=metrics, upstream=upstream)
    async with make_client(app) as client:
        yield client
    await upstream.aclose()


def refused(metrics: ProxyMetrics, reason: str) -> float:
    return (
        metrics.registry.get_sample_value("bastion_docker_proxy_refused_total", {"reason": reason})
        or 0.0
    )


async def test_liveness_needs_no_token(client: httpx.AsyncClient, docker: FakeDocker) -> None:
    response = await client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    assert docker.requests == []


async def test_a_missing_token_is_401_and_reveals_nothing_about_the_allowlist(
    client: httpx.AsyncClient, docker: FakeDocker, metrics: ProxyMetrics
) -> None:
    for path in ("/containers/web1/json", "/images/json"):
        response = await client.get(path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == 'Bearer realm="bastion-docker-proxy"'
        assert response.json() == {"message": "missing token (Authorization header, Bearer scheme)"}
    response = await client.get("/_ping", headers={"Authorization": f"Basic {TOKEN}"})
    assert response.status_code == 401
    assert docker.requests == []
    assert refused(metrics, "missing_token") == 3


async def test_a_wrong_token_is_403(
    client: httpx.AsyncClient, docker: FakeDocker, metrics: ProxyMetrics
) -> None:
    for wrong in (TOKEN[:-1], TOKEN + "k", TOKEN.upper(), "x"):
        response = await client.get("/_ping", headers={"Authorization": f"Bearer {wrong}"})
        assert response.status_code == 403
        assert response.json() == {"message": "wrong token"}
    doubled = [("Authorization", f"Bearer {TOKEN}"), ("Authorization", "Bearer other")]
    response = await client.get("/_ping", headers=doubled)
    assert response.status_code == 403
    assert response.json() == {"message": "more than one Authorization header"}
    assert docker.requests == []
    assert refused(metrics, "wrong_token") == 5


async def test_the_bearer_scheme_is_case_insensitive(client: httpx.AsyncClient) -> None:
    response = await client.get("/_ping", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


async def test_a_request_outside_the_allowlist_is_403_logged_and_counted(
    client: httpx.AsyncClient,
    docker: FakeDocker,
    metrics: ProxyMetrics,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="bastion.security.dockerproxy")
    response = await client.post("/v1.51/containers/create?name=evil", headers=AUTH)
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {
        "message": "POST /v1.51/containers/create is not allowed by the docker proxy"
    }
    assert docker.requests == []
    assert refused(metrics, "not_allowlisted") == 1
    [record] = [r for r in caplog.records if r.name == "bastion.security.dockerproxy"]
    assert record.getMessage() == (
        "refused POST /v1.51/containers/create?name=evil from 192.0.2.7:50123: "
        "403 POST /v1.51/containers/create is not allowed by the docker proxy"
    )
    assert TOKEN not in caplog.text


async def test_a_container_outside_the_allowlist_is_403(
    client: httpx.AsyncClient, docker: FakeDocker
) -> None:
    response = await client.post("/containers/db/stop", headers=AUTH)
    assert response.status_code == 403
    assert response.json() == {"message": "container 'db' is not in the docker proxy's allowlist"}
    assert docker.requests == []


async def test_a_request_body_is_refused(client: httpx.AsyncClient, docker: FakeDocker) -> None:
    # API < 1.24 took a HostConfig in the body of `start`: privileged, binds, devices.
    body = {"HostConfig": {"Privileged": True, "Binds": ["/:/host"]}}
    response = await client.post("/v1.23/containers/web1/start", headers=AUTH, json=body)
    assert response.status_code == 403
    assert response.json() == {"message": "request bodies are not accepted"}

    async def chunked() -> AsyncIterator[bytes]:
        yield b""
        yield b"{}"

    response = await client.post("/containers/web1/start", headers=AUTH, content=chunked())
    assert response.status_code == 403
    assert docker.requests == []


async def test_an_allowed_request_reaches_docker_without_the_token_or_hop_by_hop_headers(
    client: httpx.AsyncClient, docker: FakeDocker, metrics: ProxyMetrics
) -> None:
    headers = {
        **AUTH,
        "Connection": "keep-alive, X-Hop",
        "X-Hop": "1",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic abc",
        "TE": "trailers",
        "Upgrade": "tcp",
        "Cookie": "session=1",
        "User-Agent": "Docker-Client/28.2.2 (linux)",
        "X-Request-Id": "r1",
    }
    response = await client.post("/v1.51/containers/web1/stop?t=3", headers=headers)
    assert response.status_code == 200
    assert response.json() == {"path": "/v1.51/containers/web1/stop"}
    [sent] = docker.requests
    assert sent.method == "POST"
    assert str(sent.url) == "http://docker/v1.51/containers/web1/stop?t=3"
    forwarded = {key.lower() for key in sent.headers}
    assert forwarded <= {
        "host",
        "user-agent",
        "x-request-id",
        "accept",
        "accept-encoding",
        "content-length",
    }
    assert sent.headers["user-agent"] == "Docker-Client/28.2.2 (linux)"
    assert TOKEN not in str(sent.headers)
    # Docker's hop-by-hop headers do not come back either.
    assert response.headers["api-version"] == "1.51"
    for hop in ("x-internal", "keep-alive", "proxy-authenticate"):
        assert hop not in response.headers
    assert (
        metrics.registry.get_sample_value(
            "bastion_docker_proxy_forwarded_total", {"endpoint": "stop"}
        )
        == 1
    )


async def test_head_ping_answers_headers_only(client: httpx.AsyncClient) -> None:
    response = await client.head("/_ping", headers=AUTH)
    assert response.status_code == 200
    assert response.headers["api-version"] == "1.51"
    assert response.content == b""


async def test_the_container_list_is_cut_down_to_the_allowlist(
    client: httpx.AsyncClient, docker: FakeDocker
) -> None:
    response = await client.get(
        "/v1.51/containers/json?all=1", headers={**AUTH, "Accept-Encoding": "gzip"}
    )
    assert response.status_code == 200
    assert response.json() == [
        {"Id": "1" * 64, "Names": ["/web1"], "State": "running"},
        # The link name would reveal the container `db`.
        {"Id": "3" * 64, "Names": ["/web2"], "State": "exited"},
    ]
    assert int(response.headers["content-length"]) == len(response.content)
    [sent] = docker.requests
    assert "accept-encoding" not in sent.headers


@pytest.mark.parametrize(
    "answer",
    [b"not json", b'{"message": "a dict"}', b'[{"Names": "/web1"}]', b'["web1"]'],
)
async def test_a_container_list_that_cannot_be_filtered_is_not_passed_on(
    client: httpx.AsyncClient, docker: FakeDocker, answer: bytes
) -> None:
    docker.answer = lambda request: httpx.Response(200, stream=Body(answer))
    response = await client.get("/containers/json", headers=AUTH)
    assert response.status_code == 502
    assert response.json() == {
        "message": "Docker answered the container list with something unexpected"
    }


async def test_docker_errors_pass_through(client: httpx.AsyncClient, docker: FakeDocker) -> None:
    docker.answer = lambda request: respond(404, {"message": "No such container: web2"})
    response = await client.get("/containers/web2/json", headers=AUTH)
    assert response.status_code == 404
    assert response.json() == {"message": "No such container: web2"}


async def test_an_unreachable_docker_is_502(metrics: ProxyMetrics, tmp_path: Path) -> None:
    app = DockerProxyApp(settings(docker_socket=tmp_path / "absent.sock"), metrics=metrics)
    async with make_client(app) as client:
        response = await client.get("/_ping", headers=AUTH)
    await app.upstream.aclose()
    assert response.status_code == 502
    assert response.json() == {"message": "the Docker engine is unreachable"}
    assert (
        metrics.registry.get_sample_value(
            "bastion_docker_proxy_failed_total", {"reason": "docker_unreachable"}
        )
        == 1
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"token": None}, "the docker proxy has no token configured"),
        ({"allowed_containers": ""}, "the docker proxy has no allowed containers configured"),
    ],
)
async def test_a_misconfigured_proxy_refuses_everything_but_liveness(
    overrides: dict[str, object], message: str, docker: FakeDocker
) -> None:
    upstream = DockerSocket(Path("/x"), timeout_seconds=5, transport=httpx.MockTransport(docker))
    app = DockerProxyApp(settings(**overrides), upstream=upstream)
    async with make_client(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        for headers in ({}, AUTH, {"Authorization": "Bearer "}):
            response = await client.get("/_ping", headers=headers)
            assert response.status_code == 503
            assert response.json() == {"message": message}
    assert docker.requests == []


async def test_metrics_need_the_token_and_count_refusals(client: httpx.AsyncClient) -> None:
    await client.get("/images/json", headers=AUTH)
    assert (await client.get("/metrics")).status_code == 401
    response = await client.get("/metrics", headers=AUTH)
    assert response.status_code == 200
    assert 'bastion_docker_proxy_refused_total{reason="not_allowlisted"} 1.0' in response.text
    assert 'bastion_docker_proxy_refused_total{reason="missing_token"} 1.0' in response.text


async def test_a_long_poll_streams_dockers_answer(
    client: httpx.AsyncClient, docker: FakeDocker
) -> None:
    docker.answer = lambda request: httpx.Response(200, stream=Body(b'{"StatusCode":', b"0}"))
    response = await client.post("/containers/web1/wait?condition=next-exit", headers=AUTH)
    assert response.status_code == 200
    assert response.json() == {"StatusCode": 0}


async def test_websockets_are_closed() -> None:
    app = DockerProxyApp(settings())
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "websocket.connect"}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {"type": "websocket", "path": "/containers/web1/attach/ws", "headers": []}
    await app(scope, receive, send)  # type: ignore[arg-type]
    assert sent == [{"type": "websocket.close", "code": 1008}]
    await app.upstream.aclose()
