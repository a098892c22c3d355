"""The HAProxy runtime API (a stats socket on TCP or unix, one command per connection):
switching a replica's traffic on and off, and reading what HAProxy makes of it.

A replica's name is its server name in the pool's backend.
"""

from __future__ import annotations

import asyncio
import csv
import io
from dataclasses import dataclass
from typing import Literal

from bastion.rotation.errors import HAProxyError
from bastion.rotation.pools import HAPROXY_NAME, HAProxyTarget

TIMEOUT_SECONDS = 5.0
MAX_ANSWER_BYTES = 1024 * 1024
AdminState = Literal["ready", "drain", "maint"]
# Forced, inherited, resolver, hostname. Not 0x04: it only remembers that the
# configuration said `disabled`, and stays set after the server is enabled.
_MAINT = 0x01 | 0x02 | 0x20 | 0x40
_DRAIN = 0x08 | 0x10  # forced, inherited
_OPERATIONAL = {"0": "down", "1": "starting", "2": "up", "3": "stopping"}


@dataclass(frozen=True)
class ServerState:
    name: str
    admin: AdminState
    operational: str  # up | down | starting | stopping

    @property
    def serving(self) -> bool:
        """Takes new requests: enabled, and up as far as HAProxy's checks tell."""
        return self.admin == "ready" and self.operational == "up"


def _admin_state(bits: int) -> AdminState:
    if bits & _MAINT:
        return "maint"
    return "drain" if bits & _DRAIN else "ready"


class HAProxy:
    def __init__(self, target: HAProxyTarget, *, timeout: float = TIMEOUT_SECONDS) -> None:
        self.address = target.address
        self.backend = target.backend
        self.timeout = timeout

    async def command(self, line: str) -> str:
        # One line is one command; a newline or ';' would smuggle a second one in.
        if any(c in line for c in "\r\n;"):
            raise ValueError("one runtime API command, without ';' or line breaks")
        try:
            async with asyncio.timeout(self.timeout):
                if self.address.startswith("unix://"):
                    reader, writer = await asyncio.open_unix_connection(
                        self.address.removeprefix("unix://")
                    )
                else:
                    host, _, port = self.address.rpartition(":")
                    reader, writer = await asyncio.open_connection(host.strip("[]"), int(port))
                try:
                    writer.write(line.encode() + b"\n")
                    await writer.drain()
                    answer = await reader.read(MAX_ANSWER_BYTES)
                finally:
                    writer.close()
        except (OSError, TimeoutError) as exc:
            raise HAProxyError(
                f"HAProxy runtime API at {self.address} unreachable ({type(exc).__name__})"
            ) from None
        return answer.decode("utf-8", "replace")

    def _server(self, name: str) -> str:
        if not HAPROXY_NAME.fullmatch(name):
            raise HAProxyError(f"{name[:40]!r} cannot be an HAProxy server name")
        return f"{self.backend}/{name}"

    async def set_state(self, server: str, state: AdminState) -> None:
        answer = (await self.command(f"set server {self._server(server)} state {state}")).strip()
        if answer:  # silence is success; anything else is HAProxy saying why not
            raise HAProxyError(f"HAProxy refused to set {server} {state}: {answer[:200]}")

    async def servers(self) -> dict[str, ServerState]:
        answer = await self.command(f"show servers state {self.backend}")
        lines = [line for line in answer.splitlines() if line.strip()]
        header = next((line for line in lines if line.startswith("# be_id")), None)
        if header is None:
            raise HAProxyError(f"HAProxy has no backend {self.backend!r}: {answer[:200]}")
        columns = header.lstrip("# ").split()
        found: dict[str, ServerState] = {}
        for line in lines:
            if line.startswith("#") or line == header or " " not in line:
                continue
            row = dict(zip(columns, line.split(), strict=False))
            if row.get("be_name") != self.backend or "srv_name" not in row:
                continue
            found[row["srv_name"]] = ServerState(
                row["srv_name"],
                _admin_state(int(row.get("srv_admin_state", "0"))),
                _OPERATIONAL.get(row.get("srv_op_state", ""), "unknown"),
            )
        return found

    async def sessions(self) -> dict[str, int]:
        """Current sessions (connections in use) per server of the backend."""
        answer = await self.command(f"show stat {self.backend} 4 -1")
        text = answer.lstrip("# ")
        counts: dict[str, int] = {}
        for row in csv.DictReader(io.StringIO(text)):
            if row.get("pxname") == self.backend and row.get("svname"):
                counts[row["svname"]] = int(row.get("scur") or 0)
        return counts
