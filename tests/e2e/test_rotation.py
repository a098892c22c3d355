"""Rotation end to end: a real `bastion serve` rotates three replicas on a real Docker
engine, reached only through a real `bastion docker-proxy` process, behind a real HAProxy,
while HTTP requests keep flowing through HAProxy.

1. make_before_break, 20 scheduled rotations: not one request fails.
2. The server is restarted with the pool switched to break_before_make: the state
   (active replica, count) survives the restart; a few rotations show the gap that
   strategy costs, which is measured and reported (bench/rotation.py measures 20).
3. Controls through the API with a token: pause stops rotations, resume restarts them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.docker_engine import DockerEngine
from tests.dockerproxy.conftest import TOKEN, ProxyProcess, run_proxy
from tests.e2e.conftest import ARTIFACTS
from tests.e2e.test_durable_runs import Deployment, api, prepared, serving
from tests.haproxy import HAProxyServer
from tests.services import free_port, wait_until

pytestmark = pytest.mark.services

MBB_ROTATIONS = 20
BBM_ROTATIONS = 4
WORKERS = 4


@dataclass
class Traffic:
    """Closed-loop GETs through HAProxy from a few threads; every answer recorded."""

    url: str
    answers: list[tuple[float, str]] = field(default_factory=list)  # (time, replica)
    failures: list[tuple[float, str]] = field(default_factory=list)  # (time, what)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _work(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                try:
                    response = client.get(self.url)
                except httpx.HTTPError as exc:
                    self.failures.append((time.monotonic(), type(exc).__name__))
                    continue
                if response.status_code == 200:
                    self.answers.append((time.monotonic(), response.text.strip()))
                else:
                    self.failures.append((time.monotonic(), f"HTTP {response.status_code}"))
                time.sleep(0.002)

    def __enter__(self) -> Traffic:
        self._threads = [threading.Thread(target=self._work) for _ in range(WORKERS)]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)


def write_pools(path: Path, names: list[str], proxy: HAProxyServer, strategy: str) -> None:
    path.write_text(
        "[[pools]]\n"
        'name = "web"\n'
        'workspace = "ops"\n'
        f"replicas = {json.dumps(names)}\n"
        "interval_seconds = 1\n"
        "health_timeout_seconds = 10\n"
        # busybox httpd ignores SIGTERM; the replica has no sessions left once drained.
        "stop_timeout_seconds = 0\n"
        "drain_seconds = 2\n"
        f'strategy = "{strategy}"\n'
        "[pools.haproxy]\n"
        f'address = "{proxy.admin_address}"\n'
        f'backend = "{proxy.backend}"\n'
    )


def control(http: httpx.Client, action: str) -> int:
    return http.post("/rotation/pools/web/actions", json={"action": action}).status_code


def pool(http: httpx.Client) -> dict[str, Any]:
    answer = http.get("/rotation/pools/web")
    assert answer.status_code == 200, answer.text
    return dict(answer.json())


@pytest.fixture
def stage(
    tmp_path: Path,
    docker_engine: DockerEngine,
    haproxy: Callable[[Mapping[str, int]], HAProxyServer],
) -> Iterator[tuple[list[str], HAProxyServer, ProxyProcess]]:
    ports = {f"e2e-web-{letter}": free_port() for letter in "abc"}
    for name, port in ports.items():
        docker_engine.create_replica(name, port, stop_timeout=1)
    try:
        front = haproxy(ports)
        with run_proxy(
            tmp_path,
            docker_socket=str(docker_engine.socket),
            allowed_containers=",".join(ports),
        ) as proxy:
            yield list(ports), front, proxy
    finally:
        docker_engine.remove(*ports)


def test_rotations_under_load_through_haproxy_and_the_docker_proxy(
    tmp_path: Path,
    docker_engine: DockerEngine,
    stage: tuple[list[str], HAProxyServer, ProxyProcess],
) -> None:
    names, front, proxy = stage
    pools = tmp_path / "pools.toml"
    write_pools(pools, names, front, "make_before_break")
    deployment: Deployment = prepared(
        tmp_path,
        BASTION_ROTATION_POOLS_FILE=str(pools),
        BASTION_ROTATION_DOCKER_URL=proxy.url,
        BASTION_ROTATION_DOCKER_TOKEN=TOKEN,
    )
    port = free_port()
    report: dict[str, Any] = {}

    # 1. make_before_break under load: zero failed requests.
    with serving(deployment, port), api(port, deployment.token) as http:
        ready = http.get(f"http://127.0.0.1:{port}/readyz").json()
        assert ready["checks"]["docker_proxy"] == {"status": "ok"}
        first = wait_until(
            lambda: pool(http)["active_replica"], timeout=30, what="a first active replica"
        )
        wait_until(
            lambda: httpx.get(front.url).text.strip() == first,
            timeout=10,
            what="HAProxy serving it",
        )
        start = pool(http)["rotation_count"]
        with Traffic(front.url) as traffic:
            wait_until(
                lambda: pool(http)["rotation_count"] >= start + MBB_ROTATIONS,
                timeout=120,
                what=f"{MBB_ROTATIONS} rotations",
            )
        assert traffic.failures == [], traffic.failures[:10]
        assert {replica for _, replica in traffic.answers} == set(names)
        history = http.get("/rotation/pools/web/history", params={"limit": MBB_ROTATIONS})
        entries = history.json()["entries"]
        assert all(e["outcome"] == "ok" for e in entries)
        assert all(e["from_replica"] != e["to_replica"] for e in entries)
        switches = sorted(e["switch_seconds"] for e in entries)
        report["make_before_break"] = {
            "rotations": len(entries),
            "requests": len(traffic.answers),
            "failed_requests": len(traffic.failures),
            "switch_seconds_p50": switches[len(switches) // 2],
            "switch_seconds_max": switches[-1],
        }
        before_restart = pool(http)
    running = [n for n in names if docker_engine.state(n) == "running"]
    assert len(running) <= 2  # at most mid-switch when the server stopped

    # 2. Restart as break_before_make: state survives; the gap is measured.
    write_pools(pools, names, front, "break_before_make")
    with serving(deployment, port), api(port, deployment.token) as http:
        after_restart = pool(http)
        assert after_restart["strategy"] == "break_before_make"
        assert after_restart["rotation_count"] >= before_restart["rotation_count"]
        start = after_restart["rotation_count"]
        with Traffic(front.url) as traffic:
            wait_until(
                lambda: pool(http)["rotation_count"] >= start + BBM_ROTATIONS,
                timeout=60,
                what=f"{BBM_ROTATIONS} rotations",
            )
        entries = http.get("/rotation/pools/web/history", params={"limit": BBM_ROTATIONS}).json()[
            "entries"
        ]
        gaps = sorted(e["switch_seconds"] for e in entries if e["switch_seconds"] is not None)
        report["break_before_make"] = {
            "rotations": len(entries),
            "requests": len(traffic.answers),
            "failed_requests": len(traffic.failures),
            "gap_seconds_p50": gaps[len(gaps) // 2] if gaps else None,
            "gap_seconds_max": gaps[-1] if gaps else None,
        }
        # Stopping before starting leaves HAProxy nothing to send requests to.
        assert traffic.failures, "break_before_make showed no gap at all"

        # 3. Controls: pause holds the pool still, resume lets it rotate again.
        assert control(http, "pause") == 202
        time.sleep(0.5)  # a rotation under way when paused finishes first
        paused_at = pool(http)["rotation_count"]
        time.sleep(2.5)
        assert pool(http)["rotation_count"] == paused_at
        assert control(http, "pause") == 409  # already paused
        assert control(http, "resume") == 202
        wait_until(
            lambda: pool(http)["rotation_count"] > paused_at,
            timeout=15,
            what="a rotation after resume",
        )
        # Held still again: exactly the active replica runs, and HAProxy serves it.
        assert control(http, "pause") == 202

        def single_active() -> bool:
            running = [n for n in names if docker_engine.state(n) == "running"]
            return running == [pool(http)["active_replica"]]

        wait_until(single_active, timeout=15, what="a single active replica")
        assert httpx.get(front.url).text.strip() == pool(http)["active_replica"]
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "rotation-e2e.json").write_text(json.dumps(report, indent=2) + "\n")
    print("rotation e2e:", json.dumps(report))
