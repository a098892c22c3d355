"""The HAProxy runtime API client against a real HAProxy."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bastion.rotation.errors import HAProxyError
from bastion.rotation.haproxy import HAProxy
from bastion.rotation.pools import HAProxyTarget
from tests.haproxy import HAProxyServer
from tests.services import free_port

StartHAProxy = Callable[[Mapping[str, int]], HAProxyServer]


class _Hello(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = self.server.server_address[1].to_bytes(2, "big").hex().encode()  # type: ignore[union-attr]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def backends() -> Iterator[dict[str, int]]:
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Hello) for _ in range(2)]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    yield {"one": servers[0].server_address[1], "two": servers[1].server_address[1]}
    for server in servers:
        server.shutdown()
        server.server_close()


async def serving(client: HAProxy, name: str) -> None:
    for _ in range(100):
        if (await client.servers())[name].serving:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never served")


@pytest.mark.parametrize("over", ["tcp", "unix"])
async def test_servers_are_switched_and_read_back(
    haproxy: StartHAProxy, backends: dict[str, int], over: str
) -> None:
    proxy = haproxy(backends)
    address = proxy.admin_address if over == "tcp" else f"unix://{proxy.socket}"
    client = HAProxy(HAProxyTarget(address=address, backend=proxy.backend))
    states = await client.servers()
    assert {n: (s.admin, s.serving) for n, s in states.items()} == {
        "one": ("maint", False),
        "two": ("maint", False),
    }
    await client.set_state("one", "ready")
    await serving(client, "one")
    async with httpx.AsyncClient(base_url=proxy.url) as http:
        answers = {(await http.get("/")).text for _ in range(4)}
    assert answers == {backends["one"].to_bytes(2, "big").hex()}
    await client.set_state("two", "ready")
    await client.set_state("one", "drain")
    assert (await client.servers())["one"].admin == "drain"
    await client.set_state("one", "maint")
    assert (await client.servers())["one"].admin == "maint"
    assert set(await client.sessions()) == {"one", "two"}


async def test_refusals_and_an_absent_haproxy_are_haproxy_errors(
    haproxy: StartHAProxy, backends: dict[str, int]
) -> None:
    proxy = haproxy(backends)
    client = HAProxy(HAProxyTarget(address=proxy.admin_address, backend=proxy.backend))
    with pytest.raises(HAProxyError, match="No such server"):
        await client.set_state("three", "ready")
    with pytest.raises(HAProxyError, match="cannot be an HAProxy server name"):
        await client.set_state("one;shutdown sessions", "ready")
    with pytest.raises(HAProxyError, match="no backend"):
        await HAProxy(HAProxyTarget(address=proxy.admin_address, backend="nope")).servers()
    with pytest.raises(ValueError, match="one runtime API command"):
        await client.command("show info\nshutdown frontend web")
    gone = HAProxy(HAProxyTarget(address=f"127.0.0.1:{free_port()}", backend="pool"))
    with pytest.raises(HAProxyError, match="unreachable"):
        await gone.servers()
