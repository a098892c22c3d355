"""GET /healthz through all of Bastion's middleware vs. a bare Starlette app.

Both are served by uvicorn (uvloop, httptools, one worker, no access log), pinned to one
core, and loaded by wrk from the other core; rounds alternate to cancel drift.
Target: Bastion reaches at least 0.7 of the baseline's requests/s.
"""

from __future__ import annotations

import argparse

from bench.harness import (
    LoadResult,
    baseline_server,
    bastion_server,
    emit,
    median_result,
    run_wrk,
)

TARGET = 0.7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    bastion: list[LoadResult] = []
    baseline: list[LoadResult] = []
    with bastion_server() as bastion_url, baseline_server() as baseline_url:
        run_wrk(bastion_url + "/healthz", seconds=1)  # warm-up
        run_wrk(baseline_url + "/healthz", seconds=1)
        for _ in range(args.rounds):
            bastion.append(run_wrk(bastion_url + "/healthz", seconds=args.seconds))
            baseline.append(run_wrk(baseline_url + "/healthz", seconds=args.seconds))
    ours, theirs = median_result(bastion), median_result(baseline)
    ratio = round(ours.rps / theirs.rps, 3)
    emit(
        "healthz",
        {
            "bastion": ours,
            "baseline": theirs,
            "ratio": ratio,
            "target": f">= {TARGET}",
            "passed": ratio >= TARGET and ours.errors == 0,
        },
    )


if __name__ == "__main__":
    main()
