"""Console pages: time to first byte with 10,000 runs and 1,000 audit records.

A real server (`bastion serve`'s app and uvicorn settings; tests/e2e/server.py only
also writes the captcha answers to a file, so the bench can sign in) on SQLite, seeded
before it starts with: 20 workflows (cron triggers, retry policies), `--runs` runs spread
over the last 24 hours (3 steps each, mixed statuses and triggers), 20 credentials,
`--events` audit records (hash-chained, through the audit log), and a full 10 MiB server
log. The bench signs in as the admin and requests every page `--requests` times, one
after another on one keep-alive connection, from the other CPU; TTFB is the time from
sending the request to having the status line and headers (http.client's getresponse()).
Baseline, in the same run: a bare Starlette endpoint returning a static page of similar
size (bench/baseline_app.py's `/page`), served the same way.
Target: p99 TTFB < 100 ms on every page.

    .venv/bin/python -m bench.pages [--runs 10000] [--events 1000] [--requests 100]
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import random
import re
import secrets
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import median, quantiles
from typing import Any
from urllib.parse import urlencode

from bench.harness import (
    LOAD_CPU,
    ROOT,
    baseline_process,
    bastion_server,
    emit,
    free_port,
    usable_cpu,
)

TARGET_P99_MS = 100.0
WORKFLOWS = 20
CREDENTIALS = 20
STATUSES = [("succeeded", 85), ("failed", 9), ("cancelled", 3), ("blocked", 1), ("running", 2)]
TRIGGERS = ["manual", "cron", "webhook", "api", "retry"]
GRAPH = {
    "nodes": [
        {"id": "fetch", "type": "set", "params": {"values": {"n": "{{ input.n }}"}}},
        {"id": "shape", "type": "transform", "params": {"expression": "steps.fetch"}},
        {"id": "check", "type": "condition", "params": {"expression": "steps.fetch.n > `1`"}},
    ],
    "edges": [{"from": "fetch", "to": "shape"}, {"from": "shape", "to": "check"}],
}


async def seed(env: dict[str, str], runs: int, events: int) -> dict[str, str]:
    """Everything the pages read, written before the server starts; returns ids to ask for."""
    from sqlalchemy import insert

    from bastion.accounts.rbac import Principal, Role
    from bastion.accounts.users import get_user
    from bastion.accounts.workspaces import create_workspace, grant
    from bastion.audit.log import AuditLog
    from bastion.config import load_settings
    from bastion.db import Database
    from bastion.db.tables import Run, RunStep
    from bastion.triggers.retry import RetryPolicies, RetrySettings
    from bastion.triggers.store import CronSettings, Triggers
    from bastion.vault.credentials import Vault, VaultLimits
    from bastion.vault.policy import AccessContext
    from bastion.vault.secret import Secret
    from bastion.workflows import graph as graphs
    from bastion.workflows.store import Workflows

    settings = load_settings(env).settings
    db = Database(settings.effective_database_url)
    audit = AuditLog(db, settings.keyring())
    rng = random.Random(7)
    try:
        async with db.transaction() as session:
            admin = await get_user(session, "admin")
            space = await create_workspace(session, "bench", "Bench")
            await grant(session, admin.id, space.id, Role.OWNER)
        flows = Workflows(db)
        triggers, policies = Triggers(db), RetryPolicies(db)
        workflow_ids = []
        for n in range(WORKFLOWS):
            flow = await flows.create(
                space.id, f"workflow-{n:02d}", f"bench workflow {n}", graphs.parse(GRAPH), "bench"
            )
            await flows.add_version(flow.id, graphs.parse({**GRAPH, "output": "steps.shape"}), "b")
            workflow_ids.append(flow.id)
            expression = f"{n} {n % 24} * * *"
            await triggers.create(
                flow,
                kind="cron",
                name="nightly",
                settings=CronSettings(expression=expression, timezone="Europe/Berlin"),
                enabled=True,
                version=None,
                actor="bench",
            )
            await policies.put(flow.id, RetrySettings(max_attempts=3), "bench")
        vault = Vault(db, settings.keyring(), audit, VaultLimits.of(settings))
        context = AccessContext.of(
            Principal(admin.id, "admin", True, {space.id: Role.OWNER}),
            space.id,
            client_ip="127.0.0.1",
            request_id="bench",
        )
        for n in range(CREDENTIALS):
            await vault.create(
                context,
                name=f"secret-{n:02d}",
                kind="secret",
                fields={"value": Secret(secrets.token_urlsafe(24))},
                settings={},
                description="bench",
                rotation_period_days=30 if n % 2 else None,
            )

        run_rows, step_rows = _runs(rng, space.id, workflow_ids, runs)
        for offset in range(0, len(run_rows), 1000):
            async with db.transaction() as session:
                await session.execute(insert(Run), run_rows[offset : offset + 1000])
                await session.execute(insert(RunStep), step_rows[3 * offset : 3 * offset + 3000])

        done = await audit.head()
        keyring = settings.keyring()
        batch = [
            _event(n, run_rows[n % len(run_rows)]["id"] if run_rows else "", keyring)
            for n in range(max(0, events - done))
        ]
        async with db.transaction() as session:
            await audit.append_many(session, batch)
        middle = run_rows[len(run_rows) // 2]["id"] if run_rows else ""
        return {
            "workflow": workflow_ids[0],
            "run": run_rows[-1]["id"] if run_rows else "",
            "middle": middle,
        }
    finally:
        await db.dispose()


def _runs(
    rng: random.Random, workspace_id: int, workflow_ids: list[str], count: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`count` runs created over the last 24 hours, oldest first, and 3 steps each."""
    from bastion.runs.records import new_run_id

    now = datetime.now(UTC)
    start_ms = int((now - timedelta(hours=24)).timestamp() * 1000)
    end_ms = int(now.timestamp() * 1000) - 60_000
    stamps = sorted(rng.randrange(start_ms, end_ms) for _ in range(count))
    runs, steps = [], []
    for ms in stamps:
        queued = datetime.fromtimestamp(ms / 1000, UTC)
        run_id = new_run_id(queued)
        status = rng.choices([s for s, _ in STATUSES], [w for _, w in STATUSES])[0]
        finished = queued + timedelta(milliseconds=rng.randrange(5, 3000))
        failed = status == "failed"
        runs.append(
            {
                "id": run_id,
                "workspace_id": workspace_id,
                "workflow_id": rng.choice(workflow_ids),
                "version": 2,
                "trigger": rng.choice(TRIGGERS),
                "actor": "user:admin",
                "status": status,
                "attempt": 1,
                "input": json.dumps({"n": rng.randrange(100)}),
                "output": json.dumps({"result": True}) if status == "succeeded" else None,
                "error": "node 'check' failed: boom" if failed else "",
                "queued_at": queued,
                "started_at": queued,
                "finished_at": None if status == "running" else finished,
                "cancel_requested": False,
                # Held by an executor elsewhere: recovery leaves these "running" runs alone.
                "lease_owner": "elsewhere" if status == "running" else None,
                "lease_expires": now + timedelta(days=1) if status == "running" else None,
                "reason": "",
                "failure": "node_error" if failed else "",
            }
        )
        for seq, node in enumerate(("fetch", "shape", "check"), 1):
            steps.append(
                {
                    "run_id": run_id,
                    "seq": seq,
                    "node": node,
                    "status": "succeeded",
                    "started_at": queued,
                    "finished_at": queued,
                    "duration_ms": 0.4,
                    "output": json.dumps({"n": seq}),
                    "error": "",
                }
            )
    return runs, steps


ACTIONS = ["run.start", "credential.use", "workflow.version", "trigger.update"]


def _event(n: int, target: str, keyring: Any) -> Any:
    """Every tenth a failed sign-in (its typed name HMAC'd, as the login does)."""
    from bastion.audit.chain import Event, hash_value

    if n % 10 == 0:
        return Event(
            "auth.sign_in",
            "anonymous",
            outcome="failure",
            reason="wrong username or password",
            client_ip=f"198.51.100.{n % 250}",
            details={"username": hash_value(keyring, f"user{n}")},
        )
    return Event(ACTIONS[n % len(ACTIONS)], "user:admin", target=target, details={"n": n})


def fill_log(log_dir: Path, size: int = 10 * 1024 * 1024) -> None:
    """A full log file (the default rotation size) of ordinary lines, older than now."""
    log_dir.mkdir(parents=True, exist_ok=True)
    start = datetime.now(UTC) - timedelta(days=2)
    line_at = 0
    with (log_dir / "bastion.log").open("w", encoding="utf-8") as out:
        written = 0
        while written < size:
            stamp = (start + timedelta(seconds=line_at)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            text = f"{stamp} INFO bastion.runs [{line_at:016x}] run {line_at} finished in 12 ms\n"
            out.write(text)
            written += len(text)
            line_at += 1
    os.chmod(log_dir / "bastion.log", 0o600)


class Client:
    """One keep-alive connection; records time to first byte of each GET."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookie = ""

    def request(
        self, method: str, path: str, body: str | None = None, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], str, float]:
        sent = {**(headers or {}), **({"Cookie": self.cookie} if self.cookie else {})}
        started = time.perf_counter()
        self.conn.request(method, path, body=body, headers=sent)
        response = self.conn.getresponse()
        ttfb = time.perf_counter() - started
        text = response.read().decode("utf-8", "replace")
        return response.status, dict(response.getheaders()), text, ttfb

    def sign_in(self, password: str, answers: Path) -> None:
        _, headers, page, _ = self.request("GET", "/login")
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        nonce = re.search(r'name="captcha_nonce" value="([^"]+)"', page)
        assert token and nonce, page[:500]
        form = urlencode(
            {
                "csrf_token": token[1],
                "captcha_nonce": nonce[1],
                "username": "admin",
                "password": password,
                "captcha": answers.read_text().splitlines()[-1],
                "next": "/",
            }
        )
        status, headers, _, _ = self.request(
            "POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        cookie = headers.get("set-cookie", "")
        if status != 303 or not cookie:
            raise RuntimeError(f"sign-in failed: {status}")
        self.cookie = cookie.split(";", 1)[0]


def measure(client: Client, path: str, requests: int, warmup: int = 5) -> dict[str, Any]:
    for _ in range(warmup):
        status, _, _, _ = client.request("GET", path)
        if status != 200:
            raise RuntimeError(f"{path} answered {status}")
    samples, size = [], 0
    for _ in range(requests):
        _, _, body, ttfb = client.request("GET", path)
        samples.append(ttfb * 1000)
        size = len(body)
    cuts = quantiles(samples, n=100, method="inclusive")
    return {
        "path": path,
        "p50_ms": round(median(samples), 2),
        "p99_ms": round(cuts[98], 2),
        "max_ms": round(max(samples), 2),
        "bytes": size,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=1_000)
    parser.add_argument("--requests", type=int, default=100, help="per page")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-") as tmp:
        port = free_port()
        server = bastion_server(tmp, port, {"BASTION_LOG_LEVEL": "INFO"})
        answers = Path(tmp) / "answers.txt"
        answers.touch()
        server.argv = [sys.executable, "-m", "tests.e2e.server", str(port), str(answers)]
        server.cwd = ROOT
        started = time.perf_counter()
        ids = asyncio.run(seed(server.env, args.runs, args.events))
        seeded_s = round(time.perf_counter() - started, 1)
        fill_log(Path(server.env["BASTION_DATA_DIR"]) / "logs")
        pages = {
            "overview": "/",
            "rotation": "/rotation",
            "workflows": "/workflows",
            "workflow": f"/workflows/{ids['workflow']}?from=1&to=2",
            "runs": "/runs",
            "runs_failed": "/runs?status=failed",
            "runs_rare_filter": f"/runs?workflow={ids['workflow']}&status=blocked",
            "runs_deep_page": f"/runs?before={ids['middle']}",
            "run": f"/runs/{ids['run']}",
            "vault": "/vault",
            "audit": "/audit",
            "audit_search": "/audit?q=sign_in&outcome=failure",
            "logs": "/logs",
            "logs_search_no_match": "/logs?q=no-such-text-anywhere",
            "settings": "/settings",
        }
        baseline_server = baseline_process(free_port())
        # Pinned only now: the servers' CPU is chosen from this process's allowed set.
        load_cpu = usable_cpu(LOAD_CPU)
        if load_cpu is not None:
            os.sched_setaffinity(0, {load_cpu})
        with server as bastion, baseline_server as baseline:
            client = Client(bastion.port)
            client.sign_in(bastion.env["BASTION_ADMIN_PASSWORD"], answers)
            base = Client(baseline.port)
            results = {}
            base_first = measure(base, "/page", args.requests)
            for name, path in pages.items():
                results[name] = measure(client, path, args.requests)
            base_last = measure(Client(baseline.port), "/page", args.requests)
    baseline_figures = base_first if base_first["p99_ms"] >= base_last["p99_ms"] else base_last
    worst = max(results.values(), key=lambda r: r["p99_ms"])
    emit(
        "pages",
        results,
        baseline={**baseline_figures, "before": base_first, "after": base_last},
        ratio=round(median(r["p50_ms"] for r in results.values()) / baseline_figures["p50_ms"], 1),
        target=f"p99 TTFB < {TARGET_P99_MS:g} ms on every page",
        passed=worst["p99_ms"] < TARGET_P99_MS,
        worst={"page": worst["path"], "p99_ms": worst["p99_ms"]},
        setup={
            "runs": args.runs,
            "audit_events": args.events,
            "workflows": WORKFLOWS,
            "credentials": CREDENTIALS,
            "log_bytes": 10 * 1024 * 1024,
            "requests_per_page": args.requests,
            "seed_seconds": seeded_s,
            "server_cpu": server.cpu,
            "load_cpu": load_cpu,
            "ratio_is": "median over pages of Bastion p50 / baseline p50",
        },
    )


if __name__ == "__main__":
    main()
