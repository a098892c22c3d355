"""The Docker engine behind the proxy: HTTP over its unix socket, answers streamed."""

from __future__ import annotations

from pathlib import Path

import httpx

from bastion.dockerproxy.errors import DockerUnreachable

REASON_UNREACHABLE = "the Docker engine is unreachable"
CONNECT_SECONDS = 5.0


class DockerSocket:
    def __init__(
        self,
        socket_path: Path,
        *,
        timeout_seconds: float,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.socket_path = socket_path
        self._timeout = httpx.Timeout(
            connect=CONNECT_SECONDS, read=timeout_seconds, write=30.0, pool=30.0
        )
        self._client = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(uds=str(socket_path)),
            base_url="http://docker",
            follow_redirects=False,
            limits=httpx.Limits(max_connections=256, max_keepalive_connections=32),
        )
        # Only the client's own (filtered) headers reach Docker, none of httpx's defaults.
        self._client.headers.clear()

    async def open(
        self,
        method: str,
        target: str,
        headers: list[tuple[bytes, bytes]],
        *,
        long_poll: bool = False,
    ) -> httpx.Response:
        """Send the request; the answer's body is still to be streamed (then `aclose()`)."""
        timeout = self._timeout
        if long_poll:
            timeout = httpx.Timeout(CONNECT_SECONDS, read=None, write=30.0, pool=30.0)
        request = self._client.build_request(method, target, headers=headers, timeout=timeout)
        try:
            return await self._client.send(request, stream=True)
        except httpx.TransportError as exc:
            raise DockerUnreachable(REASON_UNREACHABLE) from exc

    async def aclose(self) -> None:
        await self._client.aclose()
