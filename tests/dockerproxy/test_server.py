"""`bastion docker-proxy` as a process: what crosses it, TLS, unix sockets, bad config.

Docker is played here by a recording unix-socket server, because these tests look at the
proxy's own handling of the wire; test_docker_cli.py runs the real engine and CLI.
"""

from __future__ import annotations

import os
import re
import socket
import ssl
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.dockerproxy.conftest import (
    BASTION,
    TOKEN,
    FakeDocker,
    ProxyProcess,
    proxy_env,
    run_proxy,
)
from tests.dockerproxy.pki import Pki
from tests.services import wait_until

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def proxy(
    fake_docker: FakeDocker, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    workdir = tmp_path_factory.mktemp("proxy")
    with run_proxy(
        workdir, docker_socket=str(fake_docker.socket), allowed_containers="web1,web2"
    ) as process:
        yield process


def raw_request(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_the_token_and_hop_by_hop_headers_do_not_reach_docker(
    proxy: ProxyProcess, fake_docker: FakeDocker
) -> None:
    fake_docker.requests.clear()
    answer = raw_request(
        proxy.port,
        b"POST /v1.51/containers/web1/restart?t=1 HTTP/1.1\r\n"
        b"Host: proxy\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
        b"Connection: close, X-Hop-Secret\r\n"
        b"X-Hop-Secret: do-not-forward\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"TE: trailers\r\n"
        b"Trailer: X-Checksum\r\n"
        b"Upgrade: tcp\r\n"
        b"Transfer-Encoding: chunked\r\n"
        b"User-Agent: Docker-Client/28.2.2 (linux)\r\n"
        b"X-End-To-End: kept\r\n"
        b"\r\n"
        b"0\r\n\r\n",
    )
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 200 OK"
    head = rest.split(b"\r\n\r\n")[0].lower()
    # Docker's own hop-by-hop headers are not passed back either.
    assert b"api-version: 1.51" in head
    assert b"x-docker-internal" not in head
    assert b"keep-alive" not in head
    [seen] = fake_docker.requests
    assert (seen.method, seen.target) == ("POST", "/v1.51/containers/web1/restart?t=1")
    names = {name for name, _ in seen.headers}
    assert names.isdisjoint(
        {
            "authorization",
            "connection",
            "x-hop-secret",
            "keep-alive",
            "proxy-authorization",
            "proxy-connection",
            "te",
            "trailer",
            "upgrade",
            "transfer-encoding",
        }
    )
    assert ("x-end-to-end", "kept") in seen.headers
    assert ("user-agent", "Docker-Client/28.2.2 (linux)") in seen.headers
    assert not any(TOKEN in value or "Zm9vOmJhcg" in value for _, value in seen.headers)


@pytest.mark.parametrize(
    "target",
    [
        b"/containers/web1/json/../../images/json",
        b"/containers/web1%2Fjson",
        b"/containers/web1%2F..%2F..%2Fimages%2Fjson",
        b"/containers/web1x/json",
        b"/containers/web1/json/",
        b"/v1.43/containers/web1/json/../../../volumes",
    ],
)
def test_paths_are_matched_as_sent_on_the_wire(
    proxy: ProxyProcess, fake_docker: FakeDocker, target: bytes
) -> None:
    fake_docker.requests.clear()
    answer = raw_request(
        proxy.port,
        b"GET " + target + b" HTTP/1.1\r\nHost: proxy\r\nConnection: close\r\n"
        b"Authorization: Bearer " + TOKEN.encode() + b"\r\n\r\n",
    )
    assert answer.startswith(b"HTTP/1.1 403 ")
    assert fake_docker.requests == []


def test_refusals_are_logged_with_method_path_and_peer(proxy: ProxyProcess) -> None:
    response = httpx.delete(f"{proxy.url}/containers/web1?force=1", headers=AUTH)
    assert response.status_code == 403
    line = re.compile(
        r"WARNING bastion\.security\.dockerproxy \[-\] refused DELETE /containers/web1\?force=1 "
        r"from 127\.0\.0\.1:\d+: 403 DELETE /containers/web1 is not allowed by the docker proxy$",
        re.MULTILINE,
    )
    wait_until(
        lambda: line.search(proxy.log_text()) is not None,
        timeout=5,
        what="the refusal in the proxy's log",
    )
    assert TOKEN not in proxy.log_text()


def test_liveness_answers_without_a_token(proxy: ProxyProcess) -> None:
    response = httpx.get(f"{proxy.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.fixture(scope="module")
def tls_proxy(
    fake_docker: FakeDocker, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ProxyProcess]:
    workdir = tmp_path_factory.mktemp("tls-proxy")
    with run_proxy(
        workdir,
        docker_socket=str(fake_docker.socket),
        allowed_containers="web1",
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        tls_client_ca_file=str(pki.ca),
    ) as process:
        yield process


def tls_client(pki: Pki, cert: tuple[Path, Path] | None) -> httpx.Client:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert is not None:
        context.load_cert_chain(str(cert[0]), str(cert[1]))
    return httpx.Client(verify=context)


def test_mutual_tls_with_a_client_certificate_from_the_ca_works(
    tls_proxy: ProxyProcess, pki: Pki
) -> None:
    with tls_client(pki, (pki.client.cert, pki.client.key)) as client:
        response = client.get(f"{tls_proxy.url}/containers/web1/json", headers=AUTH)
        assert response.status_code == 200
        # The certificate is a second factor, not a replacement for the token.
        assert client.get(f"{tls_proxy.url}/containers/web1/json").status_code == 401


def test_mutual_tls_without_a_client_certificate_is_refused(
    tls_proxy: ProxyProcess, pki: Pki, fake_docker: FakeDocker
) -> None:
    fake_docker.requests.clear()
    with tls_client(pki, None) as client, pytest.raises(httpx.TransportError):
        client.get(f"{tls_proxy.url}/containers/web1/json", headers=AUTH)
    assert fake_docker.requests == []


def test_mutual_tls_with_a_certificate_from_another_ca_is_refused(
    tls_proxy: ProxyProcess, pki: Pki, fake_docker: FakeDocker
) -> None:
    fake_docker.requests.clear()
    with (
        tls_client(pki, (pki.wrong_client.cert, pki.wrong_client.key)) as client,
        pytest.raises(httpx.TransportError),
    ):
        client.get(f"{tls_proxy.url}/containers/web1/json", headers=AUTH)
    assert fake_docker.requests == []


def test_plain_http_to_the_tls_port_gets_no_answer(tls_proxy: ProxyProcess) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{tls_proxy.port}/_ping", headers=AUTH)


def test_the_proxy_can_listen_on_a_unix_socket_only_its_group_may_use(
    fake_docker: FakeDocker, tmp_path: Path
) -> None:
    path = Path(f"/tmp/bst-dp-{os.getpid()}.sock")
    env = proxy_env(
        token=TOKEN,
        allowed_containers="web1",
        docker_socket=str(fake_docker.socket),
        unix_socket=str(path),
    )
    process = subprocess.Popen(
        [*BASTION, "docker-proxy"], env=env, cwd=tmp_path, stderr=subprocess.PIPE
    )
    try:
        wait_until(path.exists, timeout=30, what="the proxy's unix socket")
        assert stat.S_IMODE(path.stat().st_mode) == 0o660
        transport = httpx.HTTPTransport(uds=str(path))
        with httpx.Client(transport=transport, base_url="http://proxy") as client:
            wait_until(lambda: _answers(client), timeout=10, what="the proxy on its unix socket")
            assert client.get("/containers/web1/json", headers=AUTH).status_code == 200
            assert client.get("/containers/db/json", headers=AUTH).status_code == 403
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    assert not path.exists()
    assert b"refused GET /containers/db/json from unix-socket: 403" in stderr


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.TransportError:
        return False


def test_bad_configuration_is_listed_and_the_proxy_does_not_start(tmp_path: Path) -> None:
    env = proxy_env(
        token="too-short",
        allowed_containers="web1,not a name",
        port="0",
        tls_cert_file=str(tmp_path / "cert.pem"),
    )
    result = subprocess.run(
        [*BASTION, "docker-proxy"], env=env, cwd=tmp_path, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stdout == ""
    assert set(result.stderr.splitlines()) == {
        "BST-E101 BASTION_DOCKER_PROXY_TOKEN: must be at least 32 characters "
        "(generate one with `openssl rand -hex 32`)",
        "BST-E102 BASTION_DOCKER_PROXY_ALLOWED_CONTAINERS: 'not a name' is not a Docker "
        "container name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)",
        "BST-E006 BASTION_DOCKER_PROXY_PORT: must be at least 1 (got '0')",
        "BST-E104 BASTION_DOCKER_PROXY_TLS_*: mutual TLS needs a server certificate, its key "
        "and the CA that signs client certificates; missing: "
        "BASTION_DOCKER_PROXY_TLS_KEY_FILE, BASTION_DOCKER_PROXY_TLS_CLIENT_CA_FILE",
    }
    assert "too-short" not in result.stderr


def test_check_validates_without_serving(tmp_path: Path) -> None:
    env = proxy_env(token=TOKEN, allowed_containers="web1,web2", docker_socket=str(tmp_path))
    result = subprocess.run(
        [*BASTION, "docker-proxy", "--check"], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == (
        "docker proxy configuration OK (listen: http://127.0.0.1:2375, containers: web1, web2)\n"
    )
