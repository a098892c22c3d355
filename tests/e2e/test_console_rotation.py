"""The rotation page in Chromium, with a real Docker engine behind the real docker proxy:
the pool's replicas appear live, and an operator pauses and resumes it (the buttons
follow the state machine; a refused action shows the server's reason)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect

from tests.docker_engine import DockerEngine
from tests.dockerproxy.conftest import TOKEN, run_proxy
from tests.e2e.conftest import RunningBastion, bastion_env, running_bastion
from tests.e2e.test_console import COLLECT, shot
from tests.services import free_port

pytestmark = pytest.mark.services
REPLICAS = ("console-e2e-a", "console-e2e-b")


@pytest.fixture
def rotating_bastion(docker_engine: DockerEngine, tmp_path: Path) -> Iterator[RunningBastion]:
    docker_engine.remove(*REPLICAS)
    for name in REPLICAS:
        docker_engine.create_replica(name, free_port(), stop_timeout=1)
    pools = tmp_path / "pools.toml"
    pools.write_text(
        '[[pools]]\nname = "web"\n'
        f"replicas = [{', '.join(repr(n).replace(chr(39), chr(34)) for n in REPLICAS)}]\n"
        "interval_seconds = 3600\nhealth_timeout_seconds = 20\nstop_timeout_seconds = 1\n"
        "drain_seconds = 0\n"
    )
    try:
        with run_proxy(
            tmp_path, docker_socket=str(docker_engine.socket), allowed_containers=",".join(REPLICAS)
        ) as proxy:
            env, password = bastion_env(
                tmp_path,
                BASTION_ROTATION_POOLS_FILE=str(pools),
                BASTION_ROTATION_DOCKER_URL=proxy.url,
                BASTION_ROTATION_DOCKER_TOKEN=TOKEN,
            )
            with running_bastion(env, password, tmp_path) as server:
                yield server
    finally:
        docker_engine.remove(*REPLICAS)


def test_pause_and_resume_a_pool_live(rotating_bastion: RunningBastion, browser: Browser) -> None:
    server = rotating_bastion
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    violations: list[str] = []
    context.expose_function("__reportViolation", lambda v: violations.append(v))
    context.add_init_script(COLLECT)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/login")
    page.fill("#username", "admin")
    page.fill("#password", server.admin_password)
    page.fill("#captcha", server.last_captcha_answer())
    page.click("button[type=submit]")
    page.wait_for_url(server.url + "/")
    expect(page.locator('tr[data-pool="web"]')).to_be_visible()

    page.goto(server.url + "/rotation")
    expect(page.locator("#pool-h")).to_contain_text("Pool web")
    # The controller starts a replica; the stream shows it active and healthy.
    expect(page.locator("#pool-active")).to_have_text(re.compile("console-e2e-"), timeout=30_000)
    expect(page.locator("#pool-healthy")).to_have_text("1", timeout=30_000)
    pause = page.locator('[data-action="pause"]')
    resume = page.locator('[data-action="resume"]')
    kill = page.locator('[data-action="kill"]')
    expect(pause).to_be_enabled()
    expect(resume).to_be_disabled()
    expect(kill).to_be_disabled()  # kill only while paused

    pause.click()
    expect(page.locator("#pool-state")).to_have_text("paused")
    expect(resume).to_be_enabled()
    expect(pause).to_be_disabled()
    expect(kill).to_be_enabled()
    shot(page, "rotation-paused")

    # The state machine is the server's: pausing again elsewhere is refused with a reason.
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    csrf = page.locator('meta[name="csrf-token"]').get_attribute("content") or ""
    refused = httpx.post(
        f"{server.url}/api/v1/rotation/pools/web/actions",
        json={"action": "pause"},
        cookies=cookies,
        headers={"X-CSRF-Token": csrf, "Origin": server.url},
    )
    assert refused.status_code == 409 and "already paused" in refused.json()["message"]

    # Kill asks for the pool's name before it may be sent; cancelled here.
    kill.click()
    expect(page.locator("#kill-dialog")).to_be_visible()
    expect(page.locator("#kill-submit")).to_be_disabled()
    page.fill("#kill-confirm", "web")
    expect(page.locator("#kill-submit")).to_be_enabled()
    page.click("#kill-dialog [data-close]")

    resume.click()
    expect(page.locator("#pool-state")).to_have_text("running")
    expect(pause).to_be_enabled()
    expect(page.locator("#timeline rect.active-healthy")).not_to_have_count(0)
    # CPU, memory and network arrive through the proxy every few seconds: sparklines.
    expect(page.locator("svg.r-mem polyline")).to_have_count(1, timeout=30_000)
    shot(page, "rotation")
    assert violations == []
    assert errors == []
    context.close()
