"""Rotation benchmark: what a rotation costs the traffic, for both strategies.

A real `bastion serve` rotates three replicas (busybox httpd, Docker healthcheck every
200 ms) on a private Docker engine, reached through a real `bastion docker-proxy`, behind
a real HAProxy. Four client threads keep sending GETs through HAProxy. An operator token
asks for each rotation (`POST /rotation/pools/web/actions {"action": "rotate"}`); per
rotation the benchmark records:

- decision -> traffic: from the accepted request to the first answer by the new replica
  (client side), and from the controller's decision to the new replica in service
  (server side, `traffic_seconds` of the history);
- switch: new replica healthy -> old replica stopped (`switch_seconds`; for
  break_before_make the history keeps the gap instead: old out of service -> new in
  service);
- failed requests between the decision and the end of the rotation.

The baseline is break_before_make, what the original orchestrator always did. The
container's own start time (start -> healthy) is measured separately on a spare replica.

    .venv/bin/python -m bench.rotation [--rotations 20]

Needs root (a private dockerd), docker.io, busybox-static and haproxy.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from statistics import median
from typing import Any

import httpx
from tests.docker_engine import DockerEngine, run_docker_engine
from tests.dockerproxy.conftest import TOKEN, run_proxy
from tests.haproxy import HAProxyServer, run_haproxy

from bastion.rotation.client import DockerClient, DockerEndpoint
from bench.harness import bastion_server, emit, free_port

TARGET_SWITCH_P50 = 2.0
WORKERS = 4
STOP_TIMEOUT = 1  # busybox httpd ignores SIGTERM: every stop waits this long, then kills


@dataclass
class Traffic:
    url: str
    answers: list[tuple[float, str]] = field(default_factory=list)  # (unix time, replica)
    failures: list[float] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _work(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.url)
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    self.answers.append((time.time(), response.text.strip()))
                else:
                    self.failures.append(time.time())
                time.sleep(0.002)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(WORKERS)]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(share * len(ordered)))], 3)


def pools_file(path: Path, names: list[str], proxy: HAProxyServer, strategy: str) -> None:
    path.write_text(
        f'[[pools]]\nname = "web"\nworkspace = "ops"\nreplicas = {json.dumps(names)}\n'
        "interval_seconds = 86400\nhealth_timeout_seconds = 10\n"
        f"stop_timeout_seconds = {STOP_TIMEOUT}\ndrain_seconds = 2\n"
        f'strategy = "{strategy}"\n'
        f'[pools.haproxy]\naddress = "{proxy.admin_address}"\nbackend = "{proxy.backend}"\n'
    )


def operator_token(server: Any) -> str:
    """Workspace "ops", the admin as its owner, and an operator token: through the CLI."""

    def cli(*args: str) -> str:
        done = subprocess.run(
            [*server.argv[: server.argv.index("serve")], *args],  # the `serve` executable
            env=server.env,
            cwd=server.cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        return done.stdout

    cli("workspaces", "add", "ops")
    cli("workspaces", "grant", "admin", "ops", "owner")
    out = cli(
        "tokens", "create", "--user", "admin", "--workspace", "ops", "--role", "operator",
        "--name", "bench",
    )  # fmt: skip
    return out.strip().splitlines()[-1]


def _when(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def run_strategy(
    strategy: str, names: list[str], proxy: HAProxyServer, docker_url: str, rotations: int
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-rotation-") as tmp:
        pools = Path(tmp) / "pools.toml"
        pools_file(pools, names, proxy, strategy)
        env = {
            "BASTION_ROTATION_POOLS_FILE": str(pools),
            "BASTION_ROTATION_DOCKER_URL": docker_url,
            "BASTION_ROTATION_DOCKER_TOKEN": TOKEN,
        }
        server = bastion_server(tmp, free_port(), env)
        token = operator_token(server)
        with (
            server,
            httpx.Client(
                base_url=f"{server.url}/api/v1",
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            ) as api,
        ):

            def latest() -> dict[str, Any] | None:
                entries = api.get("/rotation/pools/web/history", params={"limit": 1}).json()
                return entries["entries"][0] if entries["entries"] else None

            deadline = time.monotonic() + 60
            while latest() is None or api.get("/rotation/pools/web").json()["pending_action"]:
                if time.monotonic() > deadline:
                    raise TimeoutError("no first active replica")
                time.sleep(0.2)
            time.sleep(0.5)
            traffic = Traffic(proxy.url)
            traffic.start()
            time.sleep(1.0)
            per_rotation = []
            try:
                for _ in range(rotations):
                    before = latest()
                    decided = time.time()
                    answer = api.post("/rotation/pools/web/actions", json={"action": "rotate"})
                    answer.raise_for_status()
                    entry = latest()
                    while entry is None or before is None or entry["id"] == before["id"]:
                        time.sleep(0.05)
                        entry = latest()
                    ended = _when(entry["finished_at"]) + 0.2
                    time.sleep(max(0.0, ended - time.time()) + 0.3)
                    per_rotation.append(measured(entry, traffic, decided, ended))
            finally:
                traffic.stop()
    return summary(strategy, per_rotation, traffic)


def measured(
    entry: dict[str, Any], traffic: Traffic, decided: float, ended: float
) -> dict[str, Any]:
    new = entry["to_replica"]
    first_new = next((t for t, who in list(traffic.answers) if t >= decided and who == new), None)
    failed = [t for t in list(traffic.failures) if decided <= t <= ended]
    return {
        "outcome": entry["outcome"],
        "failed_requests": len(failed),
        # First to last failure: how long clients saw no service.
        "client_gap_s": round(max(failed) - min(failed), 3) if failed else 0.0,
        "client_decision_to_traffic_s": None
        if first_new is None
        else round(first_new - decided, 3),
        "server_decision_to_traffic_s": entry["traffic_seconds"],
        "switch_s": entry["switch_seconds"],
    }


def summary(strategy: str, rotations: list[dict[str, Any]], traffic: Traffic) -> dict[str, Any]:
    def series(key: str) -> list[float]:
        return [r[key] for r in rotations if r[key] is not None]

    switch = series("switch_s")
    client, server = series("client_decision_to_traffic_s"), series("server_decision_to_traffic_s")
    failed = [r["failed_requests"] for r in rotations]
    return {
        "strategy": strategy,
        "rotations": len(rotations),
        "ok": sum(1 for r in rotations if r["outcome"] == "ok"),
        "requests": len(traffic.answers) + len(traffic.failures),
        "failed_requests": sum(failed),
        "failed_requests_max_per_rotation": max(failed, default=0),
        "client_decision_to_traffic_p50_s": percentile(client, 0.5),
        "client_decision_to_traffic_p99_s": percentile(client, 0.99),
        "server_decision_to_traffic_p50_s": percentile(server, 0.5),
        "server_decision_to_traffic_p99_s": percentile(server, 0.99),
        "client_gap_p50_s": percentile(series("client_gap_s"), 0.5),
        "client_gap_max_s": max(series("client_gap_s"), default=None),
        "switch_p50_s": percentile(switch, 0.5),
        "switch_p99_s": percentile(switch, 0.99),
        "switch_means": "new healthy -> old stopped"
        if strategy == "make_before_break"
        else "old out of service -> new in service (the gap)",
        "per_rotation": rotations,
    }


async def container_start(engine: DockerEngine, name: str, rounds: int = 10) -> dict[str, Any]:
    """The replica's own start time: `start` -> Docker reports it healthy."""
    client = DockerClient(DockerEndpoint(engine.host, "direct"))
    times = []
    try:
        for _ in range(rounds):
            began = time.monotonic()
            await client.start(name)
            while True:
                if (await client.inspect(name, fresh=True)).health == "healthy":
                    break
                await asyncio.sleep(0.02)
            times.append(time.monotonic() - began)
            await client.stop(name, 0)
    finally:
        await client.aclose()
    return {"rounds": rounds, "p50_s": round(median(times), 3), "max_s": round(max(times), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rotations", type=int, default=20)
    args = parser.parse_args()
    with run_docker_engine() as engine:
        ports = {f"bench-web-{letter}": free_port() for letter in "abc"}
        for name, port in ports.items():
            engine.create_replica(name, port, stop_timeout=STOP_TIMEOUT)
        engine.create_replica("bench-probe", free_port(), stop_timeout=STOP_TIMEOUT)
        names = list(ports)
        start = asyncio.run(container_start(engine, "bench-probe"))
        with (
            tempfile.TemporaryDirectory(prefix="bench-proxy-") as workdir,
            run_haproxy(ports) as proxy,
            run_proxy(
                Path(workdir), docker_socket=str(engine.socket), allowed_containers=",".join(names)
            ) as docker_proxy,
        ):
            mbb = run_strategy("make_before_break", names, proxy, docker_proxy.url, args.rotations)
            bbm = run_strategy("break_before_make", names, proxy, docker_proxy.url, args.rotations)
    passed = (
        mbb["failed_requests"] == 0
        and mbb["ok"] == mbb["rotations"]
        and mbb["switch_p50_s"] is not None
        and mbb["switch_p50_s"] < TARGET_SWITCH_P50
    )
    emit(
        "rotation",
        mbb,
        baseline=bbm,
        ratio=None,
        ratio_means="no ratio: the baseline (break_before_make) fails requests by design",
        target=f"make_before_break: 0 failed requests; switch p50 < {TARGET_SWITCH_P50:g} s "
        "on top of the container's own start time",
        passed=passed,
        container_start=start,
        setup={
            "workers": WORKERS,
            "stop_timeout_seconds": STOP_TIMEOUT,
            "healthcheck_interval_ms": 200,
            "docker": "through bastion docker-proxy (HTTP + token)",
        },
    )


if __name__ == "__main__":
    main()
