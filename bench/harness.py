"""Shared benchmark machinery: servers as their own processes, load from another process.

Load goes to 127.0.0.1 only and every run is bounded in time. With two cores, the server
is pinned to CPU 0 and the load generator to CPU 1 so they do not fight over one core.

    with baseline_process(free_port()) as base, bastion_server(tmp, free_port()) as ours:
        result = compare(ours.url + "/healthz", base.url + "/healthz", seconds=5)
    emit("name", asdict(result.bastion), baseline=asdict(result.baseline), ...)
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field, is_dataclass
from pathlib import Path
from shutil import which
from statistics import median
from types import TracebackType
from typing import IO, Any, Literal

from bench import pyload

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
VENV_BIN = Path(sys.executable).parent
MAX_SECONDS = 60  # no single load run may last longer
SERVER_CPU = 0
LOAD_CPU = 1

Generator = Literal["auto", "wrk", "python"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def usable_cpu(cpu: int | None) -> int | None:
    """`cpu` if this process may run there (and it is not the only CPU), else None."""
    if cpu is None or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = os.sched_getaffinity(0)
    return cpu if cpu in allowed and len(allowed) > 1 else None


def pin_to(cpu: int | None) -> Callable[[], None] | None:
    """A preexec_fn pinning the child before exec, so every thread it starts inherits it."""
    usable = usable_cpu(cpu)
    if usable is None:
        return None
    return lambda: os.sched_setaffinity(0, {usable})


def _http_status(port: int, path: str, timeout: float = 1.0) -> int | None:
    # http.client rather than httpx: no proxy variables can reroute a loopback probe.
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


class ServerProcess:
    """A server under test as its own process, pinned to one CPU, stopped on exit.

    Entering starts it and waits until GET ready_path answers 200; leaving sends SIGTERM
    to its process group, then SIGKILL. Its stdout and stderr go to a temporary log file
    (a pipe nobody reads could fill up and stall the server mid-benchmark).
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        port: int,
        env: Mapping[str, str] | None = None,
        inherit_env: bool = True,
        cwd: Path | str | None = None,
        ready_path: str = "/healthz",
        timeout: float = 60.0,
        cpu: int | None = SERVER_CPU,
        stop_timeout: float = 15.0,
    ) -> None:
        self.argv = list(argv)
        self.port = port
        self.env = {**(os.environ if inherit_env else {}), **(env or {})}
        self.cwd = cwd
        self.ready_path = ready_path
        self.timeout = timeout
        self.cpu = usable_cpu(cpu)
        self.stop_timeout = stop_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("server is not running")
        return self.proc.pid

    def output_tail(self, limit: int = 4000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        self._log.seek(0, os.SEEK_END)
        size = self._log.tell()
        self._log.seek(max(0, size - limit))
        return self._log.read().decode("utf-8", "replace")

    def start(self) -> None:
        # Lives from start() to stop(), so no with-block; stop() closes it.
        self._log = tempfile.TemporaryFile(prefix="bench-server-")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=pin_to(self.cpu),
            start_new_session=True,  # its own group, so stop() reaches any children too
        )
        deadline = time.monotonic() + self.timeout
        while True:
            code = self.proc.poll()
            if code is not None:
                raise RuntimeError(
                    f"server {self.argv[0]} exited with {code} before it was ready; "
                    f"output tail:\n{self.output_tail()}"
                )
            if _http_status(self.port, self.ready_path) == 200:
                return
            if time.monotonic() > deadline:
                tail = self.output_tail()
                self.stop()
                raise TimeoutError(
                    f"server {self.argv[0]} not ready on {self.url}{self.ready_path} after "
                    f"{self.timeout} s; output tail:\n{tail}"
                )
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def _signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        with suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)  # the group start() created, nothing wider

    def __enter__(self) -> ServerProcess:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def server_process(
    argv: Sequence[str],
    *,
    port: int,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    ready_path: str = "/healthz",
    timeout: float = 60,
    cpu: int | None = SERVER_CPU,
) -> Iterator[str]:
    """ServerProcess as a block that yields just its base URL."""
    with ServerProcess(
        argv, port=port, env=env, cwd=cwd, ready_path=ready_path, timeout=timeout, cpu=cpu
    ) as server:
        yield server.url


def _bastion_argv() -> list[str]:
    script = VENV_BIN / "bastion"
    return [str(script)] if script.exists() else [sys.executable, "-m", "bastion"]


def bastion_server(
    tmp_dir: Path | str, port: int, extra_env: Mapping[str, str] | None = None
) -> ServerProcess:
    """`bastion serve` on the embedded default (SQLite, memory stores) in `tmp_dir`.

    Runs `bastion init` now; the returned ServerProcess starts serving when entered.
    Inherited BASTION_* variables are dropped so the operator's own configuration
    (a Postgres URL, say) cannot leak in; the admin password is in `.env`.
    """
    tmp = Path(tmp_dir)
    env = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    env.update(
        {
            "BASTION_DATA_DIR": str(tmp / "data"),
            "BASTION_MASTER_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
            "BASTION_ADMIN_PASSWORD": secrets.token_urlsafe(16),
            "BASTION_LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
    )
    init = subprocess.run(
        [*_bastion_argv(), "init"],
        env=env,
        cwd=tmp,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if init.returncode != 0:
        raise RuntimeError(f"bastion init failed ({init.returncode}):\n{init.stderr[-4000:]}")
    argv = [*_bastion_argv(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    return ServerProcess(argv, port=port, env=env, inherit_env=False, cwd=tmp)


def baseline_process(port: int, app: str = "bench.baseline_app:app") -> ServerProcess:
    """The bare Starlette app under the uvicorn settings `bastion serve` uses.

    One worker, uvloop, httptools, no access log; and, like bastion.web.server, no proxy
    header handling and no Server header, so the only difference is the application.
    """
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--no-access-log",
        "--no-proxy-headers",
        "--no-server-header",
        "--log-level",
        "warning",
    ]
    return ServerProcess(argv, port=port, cwd=ROOT)


@contextmanager
def baseline_server() -> Iterator[str]:
    """baseline_process on a free port, as a block that yields its base URL."""
    with baseline_process(free_port()) as server:
        yield server.url


@dataclass
class LoadResult:
    requests: int
    errors: int  # status >= 400, plus connect/read/write errors and timeouts
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    generator: str = "wrk"
    # Share of a core the server used while loaded (given its pid); well below 1.0 means
    # something else limited the run: the generator, or another process on its CPU.
    server_cpu: float | None = None
    statuses: dict[str, int] = field(default_factory=dict)  # when the wrk script counts them


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def lua_string(value: str | bytes) -> str:
    raw = value.encode() if isinstance(value, str) else value
    return (
        '"'
        + "".join(f"\\{b:03d}" if b < 32 or b > 126 or b in b'"\\' else chr(b) for b in raw)
        + '"'
    )


# wrk's own setup()/done() hooks: counts and percentiles as one JSON line, so nothing is
# scraped from the human-readable report. Latency values are microseconds. A script that
# keeps a global `statuses` table (status -> count) per thread gets the merged counts.
_WRK_REPORT = """
local threads = {}
setup = function(thread) table.insert(threads, thread) end
done = function(summary, latency, requests)
  local merged = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      merged[status] = (merged[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(merged) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "errors": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, '
    .. '"statuses": {%s}}\\n',
    "REPORT_PREFIX", summary.requests, e.connect + e.read + e.write + e.status + e.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99),
    table.concat(parts, ", ")))
end
""".replace("REPORT_PREFIX", pyload.REPORT_PREFIX)


def _wrk_script(
    method: str, body: str | bytes | None, headers: Mapping[str, str] | None, script: str | None
) -> str:
    lines = [f"wrk.method = {lua_string(method)}"]
    if body is not None:
        lines.append(f"wrk.body = {lua_string(body)}")
    for name, value in (headers or {}).items():
        lines.append(f"wrk.headers[{lua_string(name)}] = {lua_string(value)}")
    # A caller's script may set request()/response()/delay(); setup() and done() are ours.
    return "\n".join(lines) + "\n" + (script or "") + "\n" + _WRK_REPORT


def _parse_report(stdout: str, generator: str) -> LoadResult:
    lines = [ln for ln in stdout.splitlines() if ln.startswith(pyload.REPORT_PREFIX)]
    if not lines:
        raise RuntimeError(f"{generator} printed no report:\n{stdout[-2000:]}")
    report = json.loads(lines[-1].removeprefix(pyload.REPORT_PREFIX))
    elapsed = report["duration_us"] / 1e6
    return LoadResult(
        requests=int(report["requests"]),
        errors=int(report["errors"]),
        seconds=round(elapsed, 2),
        rps=round(report["requests"] / elapsed, 1) if elapsed else 0.0,
        p50_ms=round(report["p50_us"] / 1000, 3),
        p99_ms=round(report["p99_us"] / 1000, 3),
        generator=generator,
        statuses=report.get("statuses", {}),
    )


def _run_pinned(argv: list[str], timeout: float, cwd: Path | None = None) -> str:
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        preexec_fn=pin_to(LOAD_CPU),
    )
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout


def _check_loopback(url: str) -> None:
    if not url.startswith(("http://127.0.0.1:", "http://localhost:", "http://[::1]:")):
        raise ValueError(f"benchmarks only send load to loopback, not {url}")


def run_wrk(
    url: str,
    *,
    seconds: float,
    connections: int = 32,
    threads: int = 1,
    method: str = "GET",
    body: str | bytes | None = None,
    headers: Mapping[str, str] | None = None,
    script: str | None = None,
    generator: Generator = "auto",
    server_pid: int | None = None,
) -> LoadResult:
    """Drive load at `url` for `seconds` (capped at MAX_SECONDS) from CPU 1.

    Uses wrk (Debian package `wrk`) when installed, else bench.pyload, a Python keep-alive
    generator; `generator` forces one. `script` is extra wrk Lua (ignored by pyload) and
    must not define setup() or done(). LoadResult.generator says which one ran; with `server_pid`,
    LoadResult.server_cpu says how busy the server was.
    """
    _check_loopback(url)
    seconds = max(1, min(round(seconds), MAX_SECONDS))
    cpu_before = cpu_seconds(server_pid) if server_pid else 0.0
    result = _drive(url, seconds, connections, threads, method, body, headers, script, generator)
    if server_pid:
        busy = cpu_seconds(server_pid) - cpu_before
        result.server_cpu = round(busy / result.seconds, 2) if result.seconds else None
    return result


def _drive(
    url: str,
    seconds: int,
    connections: int,
    threads: int,
    method: str,
    body: str | bytes | None,
    headers: Mapping[str, str] | None,
    script: str | None,
    generator: Generator,
) -> LoadResult:
    if generator == "wrk" or (generator == "auto" and which("wrk")):
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as lua:
            lua.write(_wrk_script(method, body, headers, script))
        try:
            argv = ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{seconds}s"]
            out = _run_pinned([*argv, "-s", lua.name, url], timeout=seconds + 30)
        finally:
            os.unlink(lua.name)
        return _parse_report(out, "wrk")
    raw = body.encode() if isinstance(body, str) else (body or b"")
    spec = {
        "url": url,
        "seconds": seconds,
        "connections": connections,
        "method": method,
        "body_b64": base64.b64encode(raw).decode(),
        "headers": dict(headers or {}),
    }
    argv = [sys.executable, "-m", "bench.pyload", json.dumps(spec)]
    # cwd=ROOT so `-m bench.pyload` resolves wherever the caller runs from.
    return _parse_report(_run_pinned(argv, timeout=seconds + 30, cwd=ROOT), "python")


def median_result(results: list[LoadResult]) -> LoadResult:
    """The round with the median requests/s (the upper one for an even count)."""
    return sorted(results, key=lambda r: r.rps)[len(results) // 2]


@dataclass
class Comparison:
    bastion: LoadResult  # the median round
    baseline: LoadResult
    ratio: float  # median Bastion rps / median baseline rps
    rounds: dict[str, list[float]] = field(default_factory=dict)  # rps per round, per side
    # Median requests per server CPU-second, Bastion over baseline: the cost per request,
    # steadier than `ratio` when other processes share the server's CPU. Needs pids.
    cpu_ratio: float | None = None


def _per_cpu(results: list[LoadResult]) -> float | None:
    if any(not r.server_cpu for r in results):
        return None
    return median(r.rps / r.server_cpu for r in results if r.server_cpu)


def compare(
    bastion_url: str,
    baseline_url: str,
    *,
    seconds: float,
    rounds: int = 3,
    warmup_seconds: float = 2,
    pids: tuple[int, int] | None = None,
    **load: Any,
) -> Comparison:
    """Warm both up, then measure each side `rounds` times, alternating; medians win.

    The order flips every round (A B, B A, A B, ...) so drift such as thermal or cache
    effects lands on both sides alike. `pids` (Bastion's, the baseline's) adds server CPU
    use to each result; `load` is passed on to run_wrk.
    """
    ours_pid, theirs_pid = pids or (None, None)
    run_wrk(bastion_url, seconds=warmup_seconds, **load)
    run_wrk(baseline_url, seconds=warmup_seconds, **load)
    ours: list[LoadResult] = []
    theirs: list[LoadResult] = []
    for n in range(rounds):
        pair = [(bastion_url, ours_pid, ours), (baseline_url, theirs_pid, theirs)]
        for url, pid, into in pair if n % 2 == 0 else reversed(pair):
            into.append(run_wrk(url, seconds=seconds, server_pid=pid, **load))
    bastion, baseline = median_result(ours), median_result(theirs)
    ratio = median(r.rps for r in ours) / median(r.rps for r in theirs)
    ours_per_cpu, theirs_per_cpu = _per_cpu(ours), _per_cpu(theirs)
    return Comparison(
        bastion=bastion,
        baseline=baseline,
        ratio=round(ratio, 3),
        rounds={"bastion": [r.rps for r in ours], "baseline": [r.rps for r in theirs]},
        cpu_ratio=round(ours_per_cpu / theirs_per_cpu, 3)
        if ours_per_cpu and theirs_per_cpu
        else None,
    )


def _jsonable(value: object) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def emit(
    name: str,
    figures: Mapping[str, Any],
    *,
    baseline: Mapping[str, Any] | None = None,
    ratio: float | None = None,
    target: str | None = None,
    passed: bool | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Print the benchmark's one JSON object on stdout; keep a copy in bench/results/.

    With `baseline` given, the object is {"benchmark", "bastion": figures, "baseline",
    "ratio", "target", "passed", **extra}. Without it, `figures` is taken as the whole
    document (the older form some benchmarks use).
    """
    if baseline is None:
        document: dict[str, Any] = {"benchmark": name, **figures, **extra}
    else:
        document = {
            "benchmark": name,
            "bastion": dict(figures),
            "baseline": dict(baseline),
            "ratio": ratio,
            "target": target,
            "passed": passed,
            **extra,
        }
    text = json.dumps(document, indent=2, default=_jsonable)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(text + "\n")
    print(text, flush=True)
    return json.loads(text)  # type: ignore[no-any-return]
