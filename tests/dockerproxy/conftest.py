from __future__ import annotations

import contextlib
import http.server
import json
import os
import socketserver
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.dockerproxy.pki import Pki, make_pki
from tests.services import free_port, port_open, stop_process, wait_until

BASTION = [sys.executable, "-m", "bastion"]
TOKEN = "bastion-test-docker-proxy-token-0123456789abcdef"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A CA with server and client certificates, and an unrelated CA with a client of its own."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@dataclass
class ProxyProcess:
    """`bastion docker-proxy` running as its own process on a loopback port."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    tls: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def docker_host(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def log_text(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


def proxy_env(**settings: str) -> dict[str, str]:
    """A clean environment (no BASTION_* of the caller) with these proxy settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update({f"BASTION_DOCKER_PROXY_{k.upper()}": v for k, v in settings.items()})
    return env


@contextlib.contextmanager
def run_proxy(workdir: Path, **settings: str) -> Iterator[ProxyProcess]:
    port = free_port()
    settings = {"token": TOKEN, "port": str(port), **settings}
    log = workdir / f"docker-proxy-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*BASTION, "docker-proxy"],
            env=proxy_env(**settings),
            cwd=workdir,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    proxy = ProxyProcess(port, process, log, tls="tls_cert_file" in settings)
    try:

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"docker proxy exited:\n{proxy.log_text()}")
            return port_open(port)

        wait_until(ready, timeout=30, what="bastion docker-proxy")
        yield proxy
    finally:
        stop_process(process)


@dataclass
class Recorded:
    method: str
    target: str
    headers: list[tuple[str, str]]


@dataclass
class FakeDocker:
    """An HTTP server on a unix socket that records what reaches it (for the tests of the
    proxy's own header handling; everything else runs against a real engine)."""

    socket: Path
    requests: list[Recorded] = field(default_factory=list)


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    fake: FakeDocker


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _answer(self) -> None:
        self.server.fake.requests.append(
            Recorded(self.command, self.path, [(k.lower(), v) for k, v in self.headers.items()])
        )
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Api-Version", "1.51")
        self.send_header("Connection", "X-Docker-Internal")
        self.send_header("X-Docker-Internal", "hop")
        self.send_header("Keep-Alive", "timeout=5")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_HEAD = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def fake_docker() -> Iterator[FakeDocker]:
    with tempfile.TemporaryDirectory(prefix="bst-fake-docker-", dir="/tmp") as directory:
        fake = FakeDocker(Path(directory) / "docker.sock")
        server = _Server(str(fake.socket), _Handler)
        server.fake = fake
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield fake
        finally:
            server.shutdown()
            server.server_close()
