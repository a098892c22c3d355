"""GET /healthz through all of Bastion's middleware vs. a bare Starlette app.

Both are served by uvicorn (uvloop, httptools, one worker, no access log), pinned to CPU 0,
and loaded from CPU 1; after a warm-up, rounds alternate between the two to cancel drift
and each side's median round is reported.
Target: Bastion reaches at least 0.7 of the baseline's requests/s.

    .venv/bin/python -m bench.healthz [--seconds 5] [--rounds 3] [--connections 32]
"""

from __future__ import annotations

import argparse
import http.client
import tempfile
from dataclasses import asdict
from typing import Any

from bench.harness import (
    LOAD_CPU,
    ServerProcess,
    baseline_process,
    bastion_server,
    compare,
    emit,
    free_port,
    usable_cpu,
)

TARGET = 0.7
BODY = b'{"status":"ok"}'


def response_shape(server: ServerProcess) -> dict[str, Any]:
    """One request, to check both sides answer alike and to show what each sends."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        body = response.read()
        headers = response.getheaders()
    finally:
        conn.close()
    if response.status != 200 or body != BODY:
        raise RuntimeError(f"{server.url}/healthz answered {response.status} {body!r}")
    return {
        "headers": len(headers),
        "header_bytes": sum(len(k) + len(v) + 4 for k, v in headers),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=5, help="per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=2, help="seconds per side")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp,
        bastion_server(tmp, free_port()) as bastion,
        baseline_process(free_port()) as baseline,
    ):
        shapes = {"bastion": response_shape(bastion), "baseline": response_shape(baseline)}
        result = compare(
            bastion.url + "/healthz",
            baseline.url + "/healthz",
            seconds=args.seconds,
            rounds=args.rounds,
            warmup_seconds=args.warmup,
            connections=args.connections,
            generator=args.generator,
            pids=(bastion.pid, baseline.pid),
        )
    emit(
        "healthz",
        asdict(result.bastion),
        baseline=asdict(result.baseline),
        ratio=result.ratio,
        target=f">= {TARGET}",
        passed=result.ratio >= TARGET and result.bastion.errors == result.baseline.errors == 0,
        cpu_ratio=result.cpu_ratio,
        rounds=result.rounds,
        responses=shapes,
        load={
            "generator": result.bastion.generator,
            "connections": args.connections,
            "threads": 1,
            "seconds_per_round": args.seconds,
            "rounds": args.rounds,
            "warmup_seconds": args.warmup,
            "server_cpu": bastion.cpu,  # None: not pinned (a single usable CPU)
            "load_cpu": usable_cpu(LOAD_CPU),
        },
    )


if __name__ == "__main__":
    main()
