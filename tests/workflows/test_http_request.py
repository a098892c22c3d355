"""The http_request transport against a real HTTP/1.1 server on 127.0.0.1 (plain and TLS).

The server records every connection and request, so a refused destination can be shown to
have been refused before anything was sent.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import ssl
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, quote

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bastion.workflows.egress import DEFAULT_DENY, EgressDenied, EgressPolicy
from bastion.workflows.errors import NodeFailed
from bastion.workflows.nodes.base import NodeContext, Runtime
from bastion.workflows.nodes.http_request import (
    HTTP_REQUEST,
    MAX_REDIRECTS,
    HttpRequestParams,
    OutboundRequest,
    new_client,
    send,
)
from tests.rsyslog import make_ca

SECRET = "Bearer s3cr3t-t0ken-value"


@dataclass(frozen=True)
class Seen:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


def _head(status: int, headers: Mapping[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(status: int, body: bytes = b"", headers: Mapping[str, str] | None = None) -> bytes:
    return _head(status, {"Content-Length": str(len(body)), **(headers or {})}) + body


def _json(status: int, value: Any, headers: Mapping[str, str] | None = None) -> bytes:
    content = {"Content-Type": "application/json", **(headers or {})}
    return _answer(status, json.dumps(value).encode(), content)


class Server:
    """A minimal HTTP/1.1 server on 127.0.0.1 that records what reaches it."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.connections = 0
        self.requests: list[Seen] = []
        self.port = 0
        self._handlers: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._handlers:
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self._server.wait_closed()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{path}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            request_line, *lines = head.rstrip("\r\n").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines)
            }
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append(Seen(method, target, headers, body))
            await self._route(method, target, headers, body, writer)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass  # the client hung up, as it should on an oversized answer
        finally:
            writer.close()
            self._handlers.discard(task)

    async def _route(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes,
        writer: asyncio.StreamWriter,
    ) -> None:
        path, _, query = target.partition("?")
        match path:
            case "/json":
                writer.write(_json(200, {"ok": True, "items": [1, 2]}))
            case "/text":
                writer.write(_answer(200, "héllo".encode(), {"Content-Type": "text/plain"}))
            case "/mislabelled":
                writer.write(_answer(200, b"not json", {"Content-Type": "application/json"}))
            case "/missing":
                writer.write(_json(404, {"error": "no such thing"}))
            case "/echo":
                echo = {"method": method, "headers": headers, "body": body.decode()}
                writer.write(_json(200, echo))
            case "/big":  # 2 MiB with no Content-Length: only reading it tells its size
                writer.write(_head(200, {"Content-Type": "text/plain"}))
                for _ in range(32):
                    writer.write(b"x" * 65536)
                    await writer.drain()
            case "/gzip":
                data = gzip.compress(json.dumps({"compressed": True}).encode())
                writer.write(_answer(200, data, {"Content-Type": "application/json", **_GZIP}))
            case "/bomb":  # 2 KiB on the wire, 2 MiB once inflated
                writer.write(_answer(200, gzip.compress(bytes(2 * 2**20)), _GZIP))
            case "/cookie":
                writer.write(_json(200, {}, {"Set-Cookie": "session=abc123; Path=/"}))
            case "/slow":
                await asyncio.sleep(30)
            case "/redirect":
                status = int(parse_qs(query).get("status", ["302"])[0])
                location = parse_qs(query)["to"][0]
                writer.write(_answer(status, headers={"Location": location}))
            case "/loop":
                writer.write(_answer(302, headers={"Location": "/loop"}))
            case _:
                writer.write(_answer(404))


_GZIP = {"Content-Encoding": "gzip"}


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with Server() as running:
        yield running


@pytest.fixture
def policy(server: Server) -> EgressPolicy:
    """The default deny list with one hole: the test server."""
    return EgressPolicy.parse(DEFAULT_DENY, allow=[f"127.0.0.1:{server.port}"])


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with new_client() as shared:
        yield shared


def _get(url: str, **options: Any) -> OutboundRequest:
    return OutboundRequest("GET", url, **options)


# --- answers --------------------------------------------------------------------------------


async def test_a_json_answer_is_returned_parsed(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    result = await send(_get(server.url("/json")), policy, client)
    assert result["status"] == 200
    assert result["body"] == {"ok": True, "items": [1, 2]}
    assert result["headers"]["content-type"] == "application/json"


async def test_a_text_answer_is_returned_as_text(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    result = await send(_get(server.url("/text")), policy, client)
    assert result["body"] == "héllo"


async def test_an_answer_labelled_json_that_does_not_parse_is_returned_as_text(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    result = await send(_get(server.url("/mislabelled")), policy, client)
    assert result["body"] == "not json"


async def test_a_non_2xx_status_is_returned_not_raised(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    result = await send(_get(server.url("/missing")), policy, client)
    assert result["status"] == 404
    assert result["body"] == {"error": "no such thing"}


async def test_a_gzip_answer_is_decoded(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    result = await send(_get(server.url("/gzip")), policy, client)
    assert result["body"] == {"compressed": True}


async def test_an_answer_over_the_size_limit_is_cut_off_and_reported(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    with pytest.raises(NodeFailed, match=r"^response from 127\.0\.0\.1 exceeds 1 MiB$"):
        await send(_get(server.url("/big")), policy, client)


async def test_a_gzip_bomb_is_cut_off_at_the_limit_after_inflating(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    with pytest.raises(NodeFailed, match="exceeds 1 MiB"):
        await send(_get(server.url("/bomb")), policy, client)


async def test_a_slow_endpoint_hits_the_total_timeout(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    request = _get(server.url("/slow"), timeout=0.2, headers={"Authorization": SECRET})
    with pytest.raises(
        NodeFailed, match=r"request to 127\.0\.0\.1 timed out after 0\.2 s"
    ) as caught:
        await send(request, policy, client)
    assert "s3cr3t" not in str(caught.value)


async def test_a_refused_connection_is_reported_naming_the_host(client: httpx.AsyncClient) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = EgressPolicy.parse(DEFAULT_DENY, allow=[f"127.0.0.1:{port}"])
    with pytest.raises(NodeFailed, match=r"^cannot connect to 127\.0\.0\.1: Connection refused$"):
        await send(_get(f"http://127.0.0.1:{port}/"), policy, client)


# --- what is sent ---------------------------------------------------------------------------


async def test_a_dict_body_is_sent_as_json_with_the_workflow_headers(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    request = OutboundRequest(
        "POST", server.url("/echo"), headers={"X-Trace": "t1"}, body={"name": "ünï"}
    )
    result = await send(request, policy, client)
    echo = result["body"]
    assert echo["method"] == "POST"
    assert json.loads(echo["body"]) == {"name": "ünï"}
    assert echo["headers"]["content-type"] == "application/json"
    assert echo["headers"]["x-trace"] == "t1"
    # The Host header names what the URL named, though the connection went to an address.
    assert echo["headers"]["host"] == f"127.0.0.1:{server.port}"


async def test_a_text_body_is_sent_as_text(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    request = OutboundRequest("PUT", server.url("/echo"), body="plain words")
    echo = (await send(request, policy, client))["body"]
    assert echo["body"] == "plain words"
    assert echo["headers"]["content-type"] == "text/plain; charset=utf-8"


async def test_cookies_from_one_answer_are_not_sent_with_the_next(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    # The client is shared by every workflow: a kept cookie would leak one's session.
    await send(_get(server.url("/cookie")), policy, client)
    echo = (await send(_get(server.url("/echo")), policy, client))["body"]
    assert "cookie" not in echo["headers"]
    assert not client.cookies


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Evil": "a\r\nX-Injected: 1"},
        {"X-Evil": "a\nX-Injected: 1"},
        {"X-Evil\r\nX-Injected": "1"},
        {"Authorization": f"{SECRET}\r\nX-Injected: 1"},
    ],
)
async def test_a_line_break_in_a_header_is_refused_without_sending(
    headers: dict[str, str], server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    with pytest.raises(NodeFailed, match="header") as caught:
        await send(_get(server.url("/echo"), headers=headers), policy, client)
    assert "Injected" not in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
    assert server.connections == 0


@pytest.mark.parametrize("name", ["Host", "content-length", "Transfer-Encoding", "Connection"])
async def test_headers_that_decide_routing_or_framing_cannot_be_set_by_the_workflow(
    name: str, server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    with pytest.raises(NodeFailed, match=f"header {name} is set from the URL"):
        await send(_get(server.url("/echo"), headers={name: "1"}), policy, client)
    assert server.connections == 0


async def test_credentials_in_the_url_are_refused(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    url = f"http://user:pa55@127.0.0.1:{server.port}/echo"
    with pytest.raises(NodeFailed, match="must not carry credentials") as caught:
        await send(_get(url), policy, client)
    assert "pa55" not in str(caught.value)
    assert server.connections == 0


async def test_a_method_outside_the_list_is_refused(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    with pytest.raises(NodeFailed, match="HTTP method must be one of"):
        await send(OutboundRequest("TRACE", server.url("/echo")), policy, client)
    assert server.connections == 0


# --- the egress policy ----------------------------------------------------------------------


async def test_loopback_on_a_port_that_is_not_allowed_is_refused(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    async with Server() as other:
        with pytest.raises(EgressDenied, match=r"inside denied range 127\.0\.0\.0/8"):
            await send(_get(other.url("/json")), policy, client)
        assert other.connections == 0


async def test_the_metadata_address_is_refused(
    policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    url = "http://169.254.169.254/latest/meta-data/iam/security-credentials/"
    with pytest.raises(
        EgressDenied, match=r"resolves to 169\.254\.169\.254, inside denied range 169\.254\.0\.0/16"
    ):
        await send(_get(url), policy, client)


@pytest.mark.parametrize(
    "host",
    [
        "2130706433",  # 127.0.0.1 as one decimal number
        "0x7f000001",  # ... as one hexadecimal number
        "0x7f.1",
        "127.1",
        "[::ffff:127.0.0.1]",  # IPv4-mapped IPv6
        "[::ffff:7f00:1]",
        "[::1]",
        "localhost",  # a name that resolves into a denied range
    ],
)
async def test_spellings_of_loopback_are_refused_without_connecting(
    host: str, server: Server, client: httpx.AsyncClient
) -> None:
    policy = EgressPolicy.parse(DEFAULT_DENY)
    with pytest.raises(EgressDenied, match="inside denied range"):
        await send(_get(server.url("/json", host=host)), policy, client)
    assert server.connections == 0


async def test_an_internal_endpoint_is_refused_even_when_allowed(
    server: Server, client: httpx.AsyncClient
) -> None:
    endpoint = f"127.0.0.1:{server.port}"
    policy = EgressPolicy.parse(DEFAULT_DENY, allow=[endpoint], internal=[endpoint])
    with pytest.raises(EgressDenied, match="is one of Bastion's own services"):
        await send(_get(server.url("/json")), policy, client)
    assert server.connections == 0


@pytest.mark.parametrize("scheme_url", ["file:///etc/passwd", "gopher://127.0.0.1:6379/_INFO"])
async def test_schemes_other_than_http_and_https_are_refused(
    scheme_url: str, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    with pytest.raises(EgressDenied, match="URL scheme must be http or https"):
        await send(_get(scheme_url), policy, client)


async def test_the_request_goes_to_the_checked_address_without_a_second_lookup(
    server: Server, client: httpx.AsyncClient
) -> None:
    # A resolver answering once with an allowed address; any later lookup of the name fails
    # (.invalid never resolves), so success proves the connection used the checked answer,
    # and a rebinding DNS server gets no second say.
    class OneAnswer(EgressPolicy):
        async def resolve(self, host: str, port: int) -> str:
            assert host == "rebind.invalid"
            return self.permitted_address(host, port, ["127.0.0.1"])

    policy = OneAnswer(deny=(), allow=())
    result = await send(_get(server.url("/echo", host="rebind.invalid")), policy, client)
    assert result["body"]["headers"]["host"] == f"rebind.invalid:{server.port}"


async def test_proxy_variables_in_the_environment_are_ignored(
    server: Server, policy: EgressPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Server() as proxy:
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "all_proxy"):
            monkeypatch.setenv(name, proxy.url("/"))
        async with new_client() as shared:
            result = await send(_get(server.url("/json")), policy, shared)
        assert result["status"] == 200
        assert proxy.connections == 0


async def test_a_client_that_trusts_the_environment_is_refused(
    server: Server, policy: EgressPolicy
) -> None:
    async with httpx.AsyncClient() as trusting:
        with pytest.raises(ValueError, match="trust_env=False"):
            await send(_get(server.url("/json")), policy, trusting)
    assert server.connections == 0


# --- redirects ------------------------------------------------------------------------------


def _redirect(server: Server, to: str, status: int = 302) -> str:
    return server.url(f"/redirect?status={status}&to={quote(to, safe='')}")


async def test_a_redirect_is_returned_not_followed_by_default(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    result = await send(_get(_redirect(server, "/json")), policy, client)
    assert result["status"] == 302
    assert result["headers"]["location"] == "/json"
    assert len(server.requests) == 1


async def test_a_followed_redirect_reaches_an_allowed_target(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    result = await send(_get(_redirect(server, "/json"), follow_redirects=True), policy, client)
    assert result["body"] == {"ok": True, "items": [1, 2]}


async def test_a_redirect_into_the_metadata_range_is_refused(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    url = _redirect(server, "http://169.254.169.254/latest/meta-data/")
    with pytest.raises(EgressDenied, match=r"inside denied range 169\.254\.0\.0/16"):
        await send(_get(url, follow_redirects=True), policy, client)


async def test_a_redirect_to_loopback_on_another_port_is_refused(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    async with Server() as other:
        url = _redirect(server, other.url("/json", host="localhost"), status=307)
        with pytest.raises(EgressDenied, match="egress to localhost refused"):
            await send(_get(url, follow_redirects=True), policy, client)
        assert other.connections == 0


async def test_a_redirect_to_a_file_url_is_refused(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    url = _redirect(server, "file:///etc/passwd")
    with pytest.raises(EgressDenied, match="URL scheme must be http or https"):
        await send(_get(url, follow_redirects=True), policy, client)


async def test_a_redirect_to_another_origin_drops_all_but_harmless_headers(
    server: Server, client: httpx.AsyncClient
) -> None:
    async with Server() as other:
        allowed = [f"127.0.0.1:{server.port}", f"127.0.0.1:{other.port}"]
        policy = EgressPolicy.parse(DEFAULT_DENY, allow=allowed)
        headers = {"Authorization": SECRET, "X-Api-Key": "k3y", "Accept": "application/json"}
        request = _get(
            _redirect(server, other.url("/echo")), headers=headers, follow_redirects=True
        )
        echo = (await send(request, policy, client))["body"]
    assert echo["headers"]["accept"] == "application/json"
    assert "authorization" not in echo["headers"]
    assert "x-api-key" not in echo["headers"]


async def test_a_redirect_within_the_origin_keeps_the_headers(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    request = _get(_redirect(server, "/echo"), headers={"X-Api-Key": "k3y"}, follow_redirects=True)
    echo = (await send(request, policy, client))["body"]
    assert echo["headers"]["x-api-key"] == "k3y"


@pytest.mark.parametrize(("status", "method"), [(303, "GET"), (302, "GET"), (307, "POST")])
async def test_a_redirected_post_changes_method_as_browsers_do(
    status: int, method: str, server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    url = _redirect(server, "/echo", status=status)
    request = OutboundRequest("POST", url, body={"a": 1}, follow_redirects=True)
    echo = (await send(request, policy, client))["body"]
    assert echo["method"] == method
    assert echo["body"] == ("" if method == "GET" else '{"a": 1}')


async def test_redirects_stop_after_the_limit(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    with pytest.raises(NodeFailed, match=f"redirected more than {MAX_REDIRECTS} times"):
        await send(_get(server.url("/loop"), follow_redirects=True), policy, client)
    assert len(server.requests) == MAX_REDIRECTS + 1


# --- TLS ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TLSFiles:
    server: ssl.SSLContext
    trust: ssl.SSLContext


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    """A certificate for the name `localhost` only (no IP address in it), from a test CA."""
    ca = make_ca()
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    directory: Path = tmp_path_factory.mktemp("tls")
    (directory / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    trust = ssl.create_default_context(cafile=str(ca.write(directory / "ca.pem")))
    return TLSFiles(server, trust)


async def test_https_goes_to_the_checked_address_and_verifies_the_certificate_for_the_name(
    tls: TLSFiles,
) -> None:
    names: list[str | None] = []
    tls.server.sni_callback = lambda _socket, name, _context: names.append(name)
    async with Server(tls.server) as server, new_client(verify=tls.trust) as client:
        policy = EgressPolicy.parse(DEFAULT_DENY, allow=[f"127.0.0.1:{server.port}"])
        result = await send(_get(server.url("/echo", host="localhost")), policy, client)
    # The certificate names only `localhost`: checked against the address it would fail.
    assert names == ["localhost"]
    assert result["body"]["headers"]["host"] == f"localhost:{server.port}"


async def test_an_untrusted_certificate_is_reported_as_a_tls_error(tls: TLSFiles) -> None:
    async with Server(tls.server) as server, new_client() as client:
        policy = EgressPolicy.parse(DEFAULT_DENY, allow=[f"127.0.0.1:{server.port}"])
        with pytest.raises(NodeFailed, match=r"^TLS certificate of localhost is not valid"):
            await send(_get(server.url("/json", host="localhost")), policy, client)
        assert server.requests == []


# --- the node -------------------------------------------------------------------------------


class _Unused:
    async def run(self, *args: Any) -> Any:
        raise AssertionError("not used by http_request")


async def test_the_node_sends_through_the_runtime(
    server: Server, policy: EgressPolicy, client: httpx.AsyncClient
) -> None:
    runtime = Runtime(
        egress=policy, http=client, code=_Unused(), sub_workflows=_Unused(), max_delay_seconds=1
    )
    context = NodeContext("run", 1, "wf", "fetch", {"input": {}, "steps": {}}, runtime)
    params = HttpRequestParams(url=server.url("/json"))
    result = await HTTP_REQUEST.run(params, context)
    assert result["body"] == {"ok": True, "items": [1, 2]}


@pytest.mark.parametrize(
    ("method", "resumable"), [("GET", True), ("HEAD", True), ("POST", False), ("DELETE", False)]
)
def test_only_read_only_requests_may_run_again_after_a_crash(method: str, resumable: bool) -> None:
    params = HttpRequestParams(method=method, url="https://example.com/")
    assert HTTP_REQUEST.resumable(params) is resumable
