"""Shared benchmark machinery: servers as their own processes, load from another process.

Load goes to 127.0.0.1 only and every run is bounded in time. With two cores, the server
is pinned to CPU 0 and the load generator to CPU 1 so they do not fight over one core.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
MAX_SECONDS = 60  # no single load run may last longer


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pinned(argv: Sequence[str], cpu: int) -> list[str]:
    if shutil.which("taskset") and (os.cpu_count() or 1) > cpu:
        return ["taskset", "-c", str(cpu), *argv]
    return list(argv)


@contextmanager
def server_process(
    argv: Sequence[str],
    *,
    port: int,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready_path: str = "/healthz",
    timeout: float = 60,
) -> Iterator[str]:
    """Run a server pinned to CPU 0 until the block ends; yields its base URL."""
    proc = subprocess.Popen(
        _pinned(argv, 0),
        env={**os.environ, **(env or {})},
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"server exited early: {err[-2000:]}")
            try:
                if httpx.get(base + ready_path, timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"server not ready after {timeout} s")
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def bastion_server(extra_env: dict[str, str] | None = None) -> Iterator[str]:
    """A fresh `bastion serve` on the embedded default in a temporary directory."""
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        env = {
            "BASTION_DATA_DIR": str(Path(tmp) / "data"),
            "BASTION_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "BASTION_ADMIN_PASSWORD": secrets.token_urlsafe(16),
            "BASTION_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        subprocess.run(
            [str(VENV_BIN / "bastion"), "init"],
            env={**os.environ, **env},
            cwd=tmp,
            check=True,
            capture_output=True,
        )
        port = free_port()
        argv = [str(VENV_BIN / "bastion"), "serve", "--port", str(port)]
        with server_process(argv, port=port, env=env, cwd=Path(tmp)) as base:
            yield base


@contextmanager
def baseline_server() -> Iterator[str]:
    """The bare Starlette app, served with the same uvicorn settings as Bastion."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "bench.baseline_app:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--log-level",
        "warning",
    ]
    with server_process(argv, port=port, cwd=ROOT) as base:
        yield base


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float


_WRK_REPORT = """
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.status + summary.errors.timeout
  io.write(string.format('{"requests": %d, "errors": %d, "micros": %d, "p50": %d, "p99": %d}\\n',
    summary.requests, errors, summary.duration, latency:percentile(50), latency:percentile(99)))
end
"""


def run_wrk(url: str, *, seconds: int, connections: int = 32, script: str = "") -> LoadResult:
    """Drive load with wrk (Debian package `wrk`), pinned to CPU 1."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    seconds = max(1, min(int(seconds), MAX_SECONDS))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
        lua.write(script + _WRK_REPORT)
    try:
        out = subprocess.run(
            _pinned(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", lua.name, url], 1),
            check=True,
            capture_output=True,
            text=True,
            timeout=seconds + 30,
        ).stdout
    finally:
        os.unlink(lua.name)
    report = json.loads(out.strip().splitlines()[-1])
    elapsed = report["micros"] / 1e6
    return LoadResult(
        requests=report["requests"],
        errors=report["errors"],
        seconds=round(elapsed, 2),
        rps=round(report["requests"] / elapsed, 1),
        p50_ms=report["p50"] / 1000,
        p99_ms=report["p99"] / 1000,
    )


def median_result(results: list[LoadResult]) -> LoadResult:
    return sorted(results, key=lambda r: r.rps)[len(results) // 2]


def emit(name: str, document: dict[str, object]) -> None:
    """Print the benchmark's JSON on stdout and keep a copy in bench/results/."""
    document = {"benchmark": name, **document}
    text = json.dumps(document, indent=2, default=lambda o: asdict(o))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(text + "\n")
    print(text)
