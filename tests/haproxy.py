"""A real HAProxy on loopback for tests: one HTTP frontend, one backend whose servers are
the replicas, and the runtime API on a unix socket and a loopback TCP port.

Servers start disabled (maintenance), as docs/rotation.md recommends: the rotation
controller enables the active one. HAProxy checks each server every 200 ms.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.services import free_port, missing_service, port_open, stop_process, wait_until

BACKEND = "pool"


@dataclass
class HAProxyServer:
    port: int  # the HTTP frontend
    admin_port: int  # the runtime API over TCP
    socket: Path  # the runtime API over a unix socket
    backend: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def admin_address(self) -> str:
        return f"127.0.0.1:{self.admin_port}"

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(str(self.socket))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()


def haproxy_config(
    workdir: Path, port: int, admin_port: int, servers: Mapping[str, int], backend: str
) -> str:
    lines = [
        "global",
        f"    stats socket {workdir / 'admin.sock'} mode 600 level admin",
        f"    stats socket ipv4@127.0.0.1:{admin_port} level admin",
        "    maxconn 2000",
        "defaults",
        "    mode http",
        "    timeout connect 1s",
        "    timeout client 10s",
        "    timeout server 10s",
        "frontend web",
        f"    bind 127.0.0.1:{port}",
        f"    default_backend {backend}",
        f"backend {backend}",
        "    balance roundrobin",
        "    option httpchk GET /",
        "    default-server inter 200ms fastinter 100ms downinter 200ms rise 1 fall 2",
    ]
    lines += [
        f"    server {name} 127.0.0.1:{server_port} check disabled"
        for name, server_port in servers.items()
    ]
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def run_haproxy(servers: Mapping[str, int], backend: str = BACKEND) -> Iterator[HAProxyServer]:
    binary = shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if Path("/usr/sbin/haproxy").is_file() else None
    )
    if binary is None:
        missing_service("HAProxy (Debian package haproxy)")
    assert binary is not None
    # A short path: the socket path must fit in sun_path (108 bytes).
    with tempfile.TemporaryDirectory(prefix="bst-haproxy-", dir="/tmp") as tmp:
        workdir = Path(tmp)
        port, admin_port = free_port(), free_port()
        config = workdir / "haproxy.cfg"
        config.write_text(haproxy_config(workdir, port, admin_port, servers, backend))
        log = workdir / "haproxy.log"
        with log.open("wb") as output:
            proc = subprocess.Popen(
                [binary, "-db", "-f", str(config)], stdout=output, stderr=subprocess.STDOUT
            )
        try:
            wait_until(
                lambda: port_open(port) and (workdir / "admin.sock").exists(),
                timeout=15,
                what="haproxy",
            )
            yield HAProxyServer(port, admin_port, workdir / "admin.sock", backend, proc, log)
        finally:
            stop_process(proc)
