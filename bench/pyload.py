"""Fallback load generator for when `wrk` is not installed.

Run by bench.harness.run_wrk as its own (pinned) process:
    python -m bench.pyload '<json spec>'
The spec has url, seconds, connections, method, body_b64, headers. Each connection is a
raw-socket HTTP/1.1 keep-alive loop; the report is one JSON line in the same shape as the
wrk Lua report. Loopback only, bounded by `seconds`. Being Python, it saturates sooner
than wrk, which compresses Bastion/baseline ratios towards 1.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

MAX_SECONDS = 60
MAX_CONNECTIONS = 1000
MAX_REQUESTS = 3_000_000  # per run; far above what one core serves in MAX_SECONDS
REPORT_PREFIX = "BENCH_REPORT "


@dataclass
class Tally:
    latencies_us: list[float] = field(default_factory=list)
    errors: int = 0


def build_request(
    host: str, port: int, path: str, method: str, body: bytes, headers: dict[str, str]
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def read_response(reader: asyncio.StreamReader, method: str) -> tuple[int, bool]:
    """Read one response; return (status, server wants to close)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            fields[name.strip().lower()] = value.strip().lower()
    closing = fields.get("connection") == "close"
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, closing
    if "chunked" in fields.get("transfer-encoding", ""):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    elif "content-length" in fields:
        await reader.readexactly(int(fields["content-length"]))
    else:
        await reader.read()  # body runs until the server closes
        closing = True
    return status, closing


async def connection(
    host: str, port: int, request: bytes, method: str, until: float, tally: Tally
) -> None:
    writer: asyncio.StreamWriter | None = None
    reader: asyncio.StreamReader | None = None
    while time.monotonic() < until and len(tally.latencies_us) < MAX_REQUESTS:
        try:
            if writer is None or reader is None:
                reader, writer = await asyncio.open_connection(host, port)
            started = time.perf_counter()
            writer.write(request)
            status, closing = await asyncio.wait_for(
                read_response(reader, method), timeout=max(0.1, until - time.monotonic() + 2)
            )
            tally.latencies_us.append((time.perf_counter() - started) * 1e6)
            if status >= 400:
                tally.errors += 1
            if closing:
                writer.close()
                writer = reader = None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError):
            tally.errors += 1
            if writer is not None:
                writer.close()
            writer = reader = None
            await asyncio.sleep(0.01)  # don't spin on a refused connection
        except TimeoutError:
            tally.errors += 1
            break
    if writer is not None:
        writer.close()


def percentile_us(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(spec: dict[str, Any]) -> dict[str, float]:
    parts = urlsplit(str(spec["url"]))
    host, port = parts.hostname or "", parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("pyload only sends load to loopback")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    method = str(spec.get("method") or "GET").upper()
    body = base64.b64decode(str(spec.get("body_b64") or ""))
    headers = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
    request = build_request(host, port, path, method, body, headers)
    seconds = min(float(spec["seconds"]), MAX_SECONDS)
    connections = max(1, min(int(spec["connections"]), MAX_CONNECTIONS))
    tally = Tally()
    started = time.monotonic()
    until = started + seconds
    await asyncio.gather(
        *(connection(host, port, request, method, until, tally) for _ in range(connections))
    )
    elapsed_us = (time.monotonic() - started) * 1e6
    return {
        "requests": len(tally.latencies_us),
        "errors": tally.errors,
        "duration_us": elapsed_us,
        "p50_us": percentile_us(tally.latencies_us, 0.50),
        "p99_us": percentile_us(tally.latencies_us, 0.99),
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        import uvloop  # a faster loop means the generator saturates later

        report = uvloop.run(run(spec))
    except ImportError:
        report = asyncio.run(run(spec))
    print(REPORT_PREFIX + json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
