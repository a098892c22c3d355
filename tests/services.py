"""Real services for tests: PostgreSQL and Redis started on loopback in temporary dirs.

A missing binary skips the tests that need it, except under BASTION_REQUIRE_SERVICES=1
(set by .ci/run), where it fails: CI never silently skips a real component.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

T = TypeVar("T")
REQUIRE_SERVICES = os.environ.get("BASTION_REQUIRE_SERVICES") == "1"


def missing_service(what: str) -> None:
    """Skip (or, when services are required, fail) because `what` is not available."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{what} is required (BASTION_REQUIRE_SERVICES=1) but not available")
    pytest.skip(f"{what} is not available")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(check: Callable[[], T], *, timeout: float, what: str) -> T:
    """Poll `check` until it answers something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(0.05)
    raise TimeoutError(f"{what} did not become ready within {timeout} s")


def port_open(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
        return True
    return False


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class RedisServer:
    port: int
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def flush(self) -> None:
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "FLUSHALL"], check=True, capture_output=True
        )


@contextlib.contextmanager
def run_redis() -> Iterator[RedisServer]:
    binary = shutil.which("redis-server")
    if binary is None:
        missing_service("redis-server (Debian package redis-server)")
    assert binary is not None
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bastion-redis-") as workdir:
        proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                workdir,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: port_open(port), timeout=15, what="redis-server")
            yield RedisServer(port, proc)
        finally:
            stop_process(proc)


def _postgres_bin_dir() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


@dataclass
class PostgresServer:
    port: int
    run_as: str | None
    bin_dir: Path

    def admin_url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.admin_url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        result = subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                database,
                "-v",
                "ON_ERROR_STOP=1",
                "-At",
                "-c",
                sql,
            ],
            check=True,
            capture_output=True,
            text=True,
        )
        return result.stdout


def _as_user(user: str | None, argv: list[str]) -> list[str]:
    # PostgreSQL refuses to run as root; CI runs as root, so drop to an unprivileged user.
    return ["runuser", "-u", user, "--", *argv] if user else argv


@contextlib.contextmanager
def run_postgres() -> Iterator[PostgresServer]:
    bin_dir = _postgres_bin_dir()
    if bin_dir is None or shutil.which("psql") is None:
        missing_service("PostgreSQL server (Debian package postgresql)")
    assert bin_dir is not None
    run_as: str | None = None
    if os.geteuid() == 0:
        for candidate in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(candidate)
                run_as = candidate
                break
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="bastion-pg-") as workdir:
        data = Path(workdir) / "data"
        data.mkdir()
        if run_as:
            user = pwd.getpwnam(run_as)
            os.chmod(workdir, 0o755)  # noqa: S103 - the postgres user must reach its data dir
            os.chown(data, user.pw_uid, user.pw_gid)
        subprocess.run(
            _as_user(
                run_as,
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    "postgres",
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--no-sync",
                ],
            ),
            check=True,
            capture_output=True,
        )
        proc = subprocess.Popen(
            _as_user(
                run_as,
                [
                    str(bin_dir / "postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(port),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    f"unix_socket_directories={data}",
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=200",
                ],
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        server = PostgresServer(port, run_as, bin_dir)
        try:
            wait_until(lambda: _pg_ready(server), timeout=30, what="PostgreSQL")
            yield server
        finally:
            stop_process(proc, signal.SIGINT)


def _pg_ready(server: PostgresServer) -> bool:
    try:
        server.psql("SELECT 1")
    except subprocess.CalledProcessError:
        return False
    return True
