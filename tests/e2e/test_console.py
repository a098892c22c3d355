"""The operator console in Debian's Chromium against a real `bastion serve`.

Every page is opened signed in, checked for its main content, for CSP violations and
console errors (none allowed), and photographed into test-artifacts/. Then the flows an
operator lives by: run a workflow by hand and watch it finish live, rotate and reveal a
credential, verify the audit chain, end another user's session, ride out a lost
connection. One server and one browser serve the whole module (the pool controls, which
need a Docker engine, live in test_console_rotation.py).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from bastion.accounts import tokens
from bastion.accounts.rbac import Role
from bastion.accounts.users import create_user, get_user
from bastion.accounts.workspaces import create_workspace, grant
from bastion.config import load_settings
from bastion.db import Database
from tests.e2e.conftest import (
    ARTIFACTS,
    CHROMIUM_ARGS,
    RunningBastion,
    bastion_env,
    running_bastion,
)

HOSTILE = "<script>alert('pwned')</script>"
OLIVE_PASSWORD = "olive's long enough password"
SECRET = "hook-secret-value-4c1f"
GRAPH: dict[str, Any] = {
    "nodes": [
        {"id": "fetch", "type": "set", "params": {"values": {"n": "{{ input.n }}", "x": HOSTILE}}},
        {"id": "wait", "type": "delay", "params": {"seconds": 1.5}},
        {"id": "report", "type": "transform", "params": {"expression": "steps.fetch.n"}},
    ],
    "edges": [{"from": "fetch", "to": "wait"}, {"from": "wait", "to": "report"}],
}
PAGES = {
    "overview": ("/", "Overview"),
    "rotation": ("/rotation", "Rotation"),
    "workflows": ("/workflows", "Workflows"),
    "runs": ("/runs", "Runs"),
    "vault": ("/vault", "Vault"),
    "audit": ("/audit", "Audit trail"),
    "logs": ("/logs", "Server log"),
    "settings": ("/settings", "Settings"),
}
# Reported to Python as they happen: a list kept in the page would start empty again on
# every navigation, and a test visiting several pages would only see the last one's.
COLLECT = """
document.addEventListener('securitypolicyviolation',
  (e) => window.__reportViolation(e.violatedDirective + ' ' + e.blockedURI));
"""


@dataclass
class World:
    server: RunningBastion
    browser: Browser
    token: str
    workflow_id: str
    credential_id: str


async def _seed_accounts(env: dict[str, str]) -> str:
    settings = load_settings(env).settings
    db = Database(settings.effective_database_url)
    try:
        async with db.transaction() as session:
            ops = await create_workspace(session, "ops", "Operations")
            olive = await create_user(session, "olive", OLIVE_PASSWORD)
            await grant(session, olive.id, ops.id, Role.OWNER)
            admin = await get_user(session, "admin")
            await grant(session, admin.id, ops.id, Role.OWNER)
            token, _ = await tokens.create_token(
                session,
                admin,
                name="e2e",
                workspace_id=ops.id,
                role=Role.OWNER,
                lifetime=timedelta(days=1),
            )
    finally:
        await db.dispose()
    return token


def _seed_content(url: str, token: str) -> tuple[str, str]:
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}) as api:
        created = api.post(
            "/api/v1/workflows?workspace_id=1",
            json={"name": "nightly-report", "description": f"mails {HOSTILE}", "graph": GRAPH},
        )
        assert created.status_code == 201, created.text
        workflow = created.json()["id"]
        version = api.post(
            f"/api/v1/workflows/{workflow}/versions",
            json={"graph": GRAPH | {"output": "steps.report"}},
        )
        assert version.status_code == 201, version.text
        secret = api.post(
            "/api/v1/credentials?workspace_id=1",
            json={"name": "hook-secret", "fields": {"value": SECRET}, "rotation_period_days": 30},
        )
        assert secret.status_code == 201, secret.text
        for trigger in (
            {
                "kind": "webhook",
                "name": "github",
                "settings": {"scheme": "hmac_sha256", "secret_credential": "hook-secret"},
            },
            {
                "kind": "cron",
                "name": "nightly",
                "settings": {"expression": "0 3 * * *", "timezone": "Europe/Paris"},
            },
        ):
            answer = api.post(f"/api/v1/workflows/{workflow}/triggers", json=trigger)
            assert answer.status_code == 201, answer.text
        api.put(
            f"/api/v1/workflows/{workflow}/retry-policy",
            json={"max_attempts": 3, "initial_delay_seconds": 5},
        ).raise_for_status()
        run = api.post(f"/api/v1/workflows/{workflow}/runs", json={"input": {"n": 7}})
        assert run.status_code == 202, run.text
        return workflow, secret.json()["id"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, chromium_path: str) -> Iterator[World]:
    from playwright.sync_api import sync_playwright

    tmp = tmp_path_factory.mktemp("console")
    env, password = bastion_env(tmp, BASTION_AUDIT_JSONL_PATH=str(tmp / "audit.jsonl"))
    token = asyncio.run(_seed_accounts(env))
    with (
        running_bastion(env, password, tmp) as server,
        sync_playwright() as playwright,
    ):
        workflow, credential = _seed_content(server.url, token)
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield World(server, browser, token, workflow, credential)
        finally:
            browser.close()


@dataclass
class Watched:
    context: BrowserContext
    page: Page
    errors: list[str]
    violations: list[str]

    def clean(self, *, allow: tuple[str, ...] = ()) -> None:
        assert self.violations == []
        assert [e for e in self.errors if not any(a in e for a in allow)] == []


def sign_in(
    world: World,
    username: str = "admin",
    password: str | None = None,
    viewport: dict[str, int] | None = None,
    color_scheme: Literal["light", "dark"] = "light",
) -> Watched:
    context = world.browser.new_context(
        viewport=viewport or {"width": 1280, "height": 800}, color_scheme=color_scheme
    )
    violations: list[str] = []
    context.expose_function("__reportViolation", lambda v: violations.append(v))
    context.add_init_script(COLLECT)
    page = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(world.server.url + "/login")
    page.fill("#username", username)
    page.fill("#password", password or world.server.admin_password)
    page.fill("#captcha", world.server.last_captcha_answer())
    page.click("button[type=submit]")
    page.wait_for_url(world.server.url + "/")
    return Watched(context, page, errors, violations)


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"console-{name}.png"), full_page=True)


def test_every_page_opens_with_its_content_and_no_csp_violation_or_error(world: World) -> None:
    watched = sign_in(world)
    page = watched.page
    for name, (path, heading) in PAGES.items():
        page.goto(world.server.url + path)
        expect(page.locator("h1")).to_have_text(heading)
        expect(page.locator(f'nav a[href="{path}"]')).to_have_attribute("aria-current", "page")
        shot(page, name)
    page.goto(f"{world.server.url}/workflows/{world.workflow_id}?from=1&to=2")
    expect(page.locator("svg.diagram g.node")).to_have_count(3)
    expect(page.locator(".fires li")).to_have_count(5)
    expect(page.locator("pre.diff .d-add")).not_to_have_count(0)
    assert HOSTILE in page.locator("main").inner_text()  # shown as text, never run
    shot(page, "workflow")
    page.goto(world.server.url + "/runs")
    page.locator("#runs-table a").first.click()
    expect(page.locator("#run-status")).to_contain_text("succeeded", timeout=15_000)
    shot(page, "run")
    # The overview's chart is drawn by our script: bars for today's runs.
    page.goto(world.server.url + "/")
    expect(page.locator("#runs-chart rect.status-succeeded")).not_to_have_count(0)
    watched.clean()
    watched.context.close()


def test_pages_stay_readable_at_phone_width_and_in_dark_mode(world: World) -> None:
    watched = sign_in(world, viewport={"width": 390, "height": 844})
    for name in ("overview", "runs", "vault"):
        watched.page.goto(world.server.url + PAGES[name][0])
        overflow = watched.page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 1, name
        shot(watched.page, f"{name}-phone")
    watched.clean()
    watched.context.close()
    dark = sign_in(world, color_scheme="dark")
    background = dark.page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(17, 20, 24)"  # the dark palette follows the system
    dark.page.goto(f"{world.server.url}/workflows/{world.workflow_id}")
    shot(dark.page, "workflow-dark")
    dark.clean()
    dark.context.close()


def test_keyboard_reaches_the_skip_link_the_navigation_and_a_dialog(world: World) -> None:
    watched = sign_in(world)
    page = watched.page
    page.goto(world.server.url + "/vault")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    page.locator("[data-reveal]").first.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#reveal-dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("#reveal-dialog")).to_be_hidden()
    watched.clean()
    watched.context.close()


def test_run_a_workflow_by_hand_and_watch_it_finish_live(world: World) -> None:
    watched = sign_in(world)
    page = watched.page
    page.goto(f"{world.server.url}/workflows/{world.workflow_id}")
    page.select_option("#run-version", "2")
    page.fill("#run-input", '{"n": 42}')
    page.fill("#run-reason", "e2e: by hand")
    page.click("#run-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/runs/[0-9a-f]{32}$"))
    page.evaluate("window.__same_page = true")  # a reload would drop it
    expect(page.locator("#live-note")).to_be_visible()
    expect(page.locator("#steps tbody tr[data-seq]")).to_have_count(3, timeout=15_000)
    expect(page.locator("#run-status")).to_contain_text("succeeded", timeout=15_000)
    expect(page.locator("#run-output")).to_have_text("42")
    expect(page.locator("#cancel-run")).to_be_hidden()
    assert page.evaluate("window.__same_page") is True
    shot(page, "run-live")
    watched.clean()
    watched.context.close()


def test_rotate_a_credential_then_reveal_it_with_the_password(world: World) -> None:
    watched = sign_in(world)
    page = watched.page
    page.goto(world.server.url + "/vault")
    row = page.locator(f'tr[data-credential="{world.credential_id}"]')
    expect(row).to_contain_text("hook-secret")
    assert SECRET not in page.content()
    row.locator("[data-rotate]").click()
    page.fill('#rotate-form .field-row input[type="password"]', "hook-secret-value-rotated")
    page.click("#rotate-form button[type=submit]")
    expect(page.locator("#notice")).to_contain_text("now version 2")
    expect(page.locator(f'tr[data-credential="{world.credential_id}"] td').nth(3)).to_have_text("2")

    page.locator(f'tr[data-credential="{world.credential_id}"] [data-reveal]').click()
    page.fill("#reveal-reason", "e2e: check the rotation")
    page.fill("#reveal-password", "not my password")
    page.click("#reveal-form button[type=submit]")
    expect(page.locator("#reveal-form .form-error")).to_contain_text("re-enter your password")
    page.fill("#reveal-password", world.server.admin_password)
    page.click("#reveal-form button[type=submit]")
    expect(page.locator("#reveal-form .revealed")).to_contain_text("hook-secret-value-rotated")
    assert page.input_value("#reveal-password") == ""
    shot(page, "vault-reveal")
    page.keyboard.press("Escape")
    expect(page.locator("#reveal-form .revealed dl")).to_be_empty()
    assert "hook-secret-value-rotated" not in page.content()
    # Chromium logs the refused reveal (403) as a console error: that one is expected.
    watched.clean(allow=("status of 403",))
    watched.context.close()


def test_verify_the_audit_chain_and_search_by_value(world: World) -> None:
    watched = sign_in(world)
    page = watched.page
    page.goto(world.server.url + "/audit")
    page.click("#verify")
    expect(page.locator("#verify-result")).to_contain_text("Chain OK")
    page.fill("#value-input", "hook-secret")
    page.click("#value-form button[type=submit]")
    page.wait_for_url(
        re.compile(
            r".*/audit\?value_hash=hmac-sha256%3A[0-9a-f]{64}$|.*value_hash=hmac-sha256:[0-9a-f]{64}$"
        )
    )
    assert "hook-secret" not in page.url
    shot(page, "audit-verified")
    with page.expect_download() as download:
        page.click("#export")
    path = download.value.path()
    assert path is not None and Path(path).read_text().count('"seq"') > 5
    watched.clean()
    watched.context.close()


def test_end_another_user_s_session(world: World) -> None:
    olive = sign_in(world, "olive", OLIVE_PASSWORD)
    admin = sign_in(world)
    page = admin.page
    page.goto(world.server.url + "/settings")
    row = page.locator("#sessions tbody tr", has_text="olive")
    expect(row).to_have_count(1)
    page.once("dialog", lambda dialog: dialog.accept())
    row.locator("[data-end-session]").click()
    expect(page.locator("#notice")).to_contain_text("Session ended")
    expect(page.locator("#sessions tbody tr", has_text="olive")).to_have_count(0)
    olive.page.goto(world.server.url + "/runs")
    assert "/login" in olive.page.url
    admin.clean()
    admin.context.close()
    olive.context.close()


def test_the_offline_banner_shows_while_the_server_is_unreachable_and_clears(
    world: World,
) -> None:
    watched = sign_in(world)
    page = watched.page
    page.goto(world.server.url + "/runs")
    expect(page.locator("#offline")).to_be_hidden()
    watched.context.set_offline(True)
    page.evaluate("window.dispatchEvent(new Event('offline'))")
    expect(page.locator("#offline")).to_be_visible()
    watched.context.set_offline(False)
    page.evaluate("window.dispatchEvent(new Event('online'))")
    expect(page.locator("#offline")).to_be_hidden(timeout=10_000)
    shot(page, "runs-after-offline")
    watched.clean(allow=("ERR_INTERNET_DISCONNECTED", "Failed to fetch"))
    watched.context.close()


def test_the_editing_forms_create_and_change_what_they_say(world: World) -> None:
    watched = sign_in(world)
    page = watched.page
    page.goto(world.server.url + "/vault")
    page.click("#open-create")
    page.fill("#create-name", "db-password")
    page.fill('#create-form .field-row input[type="password"]', "db-secret-value-77")
    page.fill("#create-period", "90")
    page.click("#create-form button[type=submit]")
    expect(page.locator("#notice")).to_contain_text("Created db-password")
    expect(page.locator("#credentials")).to_contain_text("db-password")
    assert "db-secret-value-77" not in page.content()
    page.locator('tr[data-name="db-password"] [data-test]').click()
    expect(page.locator("#notice")).to_contain_text("db-password: healthy")

    page.goto(f"{world.server.url}/workflows/{world.workflow_id}")
    hook = page.locator("article.trigger", has_text="github")
    hook.locator("input[type=password]").fill("a-new-webhook-secret")
    hook.locator(".secret-form button[type=submit]").click()
    expect(page.locator("#notice")).to_contain_text("Secret saved")
    nightly = page.locator("article.trigger", has_text="nightly")
    nightly.locator("[data-toggle-trigger]").click()
    expect(page.locator("#notice")).to_contain_text("Trigger disabled")
    expect(page.locator("article.trigger", has_text="nightly")).to_contain_text("disabled")
    page.click("text=Change the retry policy")
    page.fill("#retry-attempts", "5")
    page.click("#retry-form button[type=submit]")
    expect(page.locator("#notice")).to_contain_text("Retry policy saved")
    expect(page.locator("#retry-h + dl")).to_contain_text("5")

    page.goto(world.server.url + "/settings")
    page.click("text=Create a token")
    page.fill("#token-name", "ci")
    page.click("#token-form button[type=submit]")
    expect(page.locator("#new-token code")).to_have_text(re.compile(r"^bst_"))

    page.goto(world.server.url + "/logs")
    expect(page.locator('label[data-period="day"]')).to_be_hidden()
    page.select_option("#period", "day")
    expect(page.locator('label[data-period="day"]')).to_be_visible()
    page.fill('input[name="q"]', "sign-in succeeded")
    page.click("#log-filters button[type=submit]")
    expect(page.locator("#log-lines")).to_contain_text("sign-in succeeded")
    watched.clean()
    watched.context.close()
    assert "CSP violation" not in world.server.log_text()
