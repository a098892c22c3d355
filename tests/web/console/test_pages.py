"""Every console page: who may open it, which controls it offers, and that it escapes."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from bastion.web.console import runs as runs_page
from bastion.web.middleware.security_headers import CONTENT_SECURITY_POLICY
from tests.web.console.conftest import GRAPH, HOSTILE, HOSTILE_ESCAPED, Seeded

PAGES = ["/", "/rotation", "/workflows", "/runs", "/vault", "/audit", "/logs", "/settings"]
OUR_SCRIPTS = re.compile(
    r'<script type="module" src="/app/[a-z]+\.js"></script>'
    r'|<script type="application/json" id="[a-z-]+">'
)


def pages_of(seeded: Seeded) -> list[str]:
    return [*PAGES, f"/workflows/{seeded.workflow_id}", f"/runs/{seeded.run_id}"]


def assert_safe(html: str) -> None:
    """No markup but ours: every hostile string arrives escaped, no inline script/style."""
    assert HOSTILE not in html
    remaining = OUR_SCRIPTS.sub("", html)
    assert "<script" not in remaining
    assert "style=" not in html and "<style" not in html
    for tag in re.findall(r"<[a-z][^>]*>", html):
        assert not re.search(r"\son[a-z]+\s*=", tag), tag


async def test_every_page_renders_for_an_admin_under_the_strict_csp(seeded: Seeded) -> None:
    for path in pages_of(seeded):
        page = await seeded.root.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert page.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["content-type"].startswith("text/html")
        assert 'aria-current="page"' in page.text
        assert "Signed in as root" in page.text
        assert_safe(page.text)


async def test_without_a_session_every_page_sends_to_the_sign_in_form(seeded: Seeded) -> None:
    for path in pages_of(seeded):
        answer = await seeded.anonymous.get(path + "?x=1")
        assert answer.status_code == 303, path
        assert answer.headers["location"] == "/login?next=" + quote(path + "?x=1")
    assert (await seeded.anonymous.get("/app/console.js")).status_code == 401


async def test_hostile_text_reaches_every_page_escaped(seeded: Seeded) -> None:
    workflow = (await seeded.olive.get(f"/workflows/{seeded.workflow_id}")).text
    run = (await seeded.olive.get(f"/runs/{seeded.run_id}")).text
    audit = (await seeded.root.get("/audit")).text
    logs = (await seeded.root.get("/logs")).text
    settings = (await seeded.root.get("/settings")).text
    workflows = (await seeded.olive.get("/workflows")).text
    for html in (workflow, run, audit, logs, settings, workflows):
        assert HOSTILE_ESCAPED in html
        assert_safe(html)


async def test_a_viewer_reads_everything_in_the_workspace_but_gets_no_controls(
    seeded: Seeded,
) -> None:
    workflow = (await seeded.vic.get(f"/workflows/{seeded.workflow_id}")).text
    assert "deploy" in workflow and "Graph of version 1" in workflow
    assert 'id="run-form"' not in workflow and 'id="trigger-form"' not in workflow
    assert 'id="retry-form"' not in workflow
    run = (await seeded.vic.get(f"/runs/{seeded.run_id}")).text
    assert "succeeded" in run and 'id="replay-run"' not in run and 'id="cancel-run"' not in run
    vault = (await seeded.vic.get("/vault")).text
    assert "hook-secret" in vault
    for control in ("data-rotate=", "data-reveal=", "data-test=", "data-delete=", "open-create"):
        assert control not in vault
    assert "s3cret-value-9f1" not in vault
    runs = (await seeded.vic.get("/runs")).text
    assert seeded.run_id in runs


async def test_a_credential_scoped_to_owners_is_not_on_a_viewer_s_vault_page(
    seeded: Seeded,
) -> None:
    created = await seeded.olive.post(
        "/api/v1/credentials?workspace_id=1",
        json={
            "name": "owners-only",
            "kind": "secret",
            "fields": {"value": "never-shown-7a2"},
            "policy": {"roles": ["owner"]},
        },
    )
    assert created.status_code == 201, created.text
    listed = (await seeded.vic.get("/api/v1/credentials?workspace_id=1")).json()
    assert "owners-only" not in [c["name"] for c in listed]
    assert "owners-only" not in (await seeded.vic.get("/vault")).text
    assert "owners-only" in (await seeded.olive.get("/vault")).text


async def test_an_owner_gets_the_controls_the_api_would_accept(seeded: Seeded) -> None:
    workflow = (await seeded.olive.get(f"/workflows/{seeded.workflow_id}")).text
    assert 'id="run-form"' in workflow and 'id="trigger-form"' in workflow
    run = (await seeded.olive.get(f"/runs/{seeded.run_id}")).text
    assert 'id="replay-run"' in run
    vault = (await seeded.olive.get("/vault")).text
    for control in ("data-rotate=", "data-reveal=", "data-test=", "open-create"):
        assert control in vault
    assert "s3cret-value-9f1" not in vault


@pytest.mark.parametrize("path", ["/audit", "/logs"])
async def test_audit_and_logs_are_for_administrators_only(seeded: Seeded, path: str) -> None:
    for client in (seeded.olive, seeded.vic, seeded.mallory):
        page = await client.get(path)
        assert page.status_code == 403
        assert "administrators only" in page.text
        assert "hostile" not in page.text and "test.hostile" not in page.text


async def test_an_outsider_sees_no_workflow_run_or_credential_of_the_workspace(
    seeded: Seeded,
) -> None:
    m = seeded.mallory
    assert (await m.get(f"/workflows/{seeded.workflow_id}")).status_code == 404
    assert (await m.get(f"/runs/{seeded.run_id}")).status_code == 404
    for path in ("/workflows", "/runs", "/vault", "/"):
        page = await m.get(path)
        assert page.status_code == 200
        assert "deploy" not in page.text and "hook-secret" not in page.text
        assert seeded.run_id not in page.text
    overview = (await m.get("/")).text
    assert "shown to administrators" in overview


async def test_the_overview_counts_todays_runs_and_shows_security_events(seeded: Seeded) -> None:
    await seeded.failed_sign_in("root")
    page = (await seeded.root.get("/")).text
    assert re.search(r'data-total="succeeded">1<', page)
    assert '"totals"' in page and "No pools configured" in page
    assert "test.hostile" not in page  # a success of no security interest
    assert "auth.sign_in" in page and "wrong username or password" in page


async def test_the_workflow_page_draws_the_graph_and_diffs_two_versions(seeded: Seeded) -> None:
    graph = {
        "nodes": [*GRAPH["nodes"], {"id": "done", "type": "set", "params": {"values": {}}}],
        "edges": [{"from": "seed", "to": "pick"}, {"from": "pick", "to": "done"}],
    }
    added = await seeded.olive.post(
        f"/api/v1/workflows/{seeded.workflow_id}/versions", json={"graph": graph}
    )
    assert added.status_code == 201, added.text
    page = (await seeded.vic.get(f"/workflows/{seeded.workflow_id}?from=1&to=2")).text
    assert page.count('class="node node-') == 3
    assert 'data-node="done"' in page and 'marker-end="url(#arrowhead)"' in page
    assert re.search(r'<span class="d-add">\+\s+&#34;id&#34;: &#34;done&#34;', page)
    older = (await seeded.vic.get(f"/workflows/{seeded.workflow_id}?version=1")).text
    assert 'data-node="done"' not in older
    missing = await seeded.vic.get(f"/workflows/{seeded.workflow_id}?version=9")
    assert missing.status_code == 404


async def test_a_cron_trigger_lists_its_next_five_fire_times_in_its_zone(seeded: Seeded) -> None:
    added = await seeded.olive.post(
        f"/api/v1/workflows/{seeded.workflow_id}/triggers",
        json={
            "kind": "cron",
            "name": "nightly",
            "settings": {"expression": "30 2 * * *", "timezone": "Europe/Berlin"},
        },
    )
    assert added.status_code == 201, added.text
    hook = await seeded.olive.post(
        f"/api/v1/workflows/{seeded.workflow_id}/triggers",
        json={
            "kind": "webhook",
            "name": "push",
            "enabled": False,
            "settings": {"scheme": "hmac_sha256", "secret_credential": "hook-secret"},
        },
    )
    assert hook.status_code == 201, hook.text
    page = (await seeded.vic.get(f"/workflows/{seeded.workflow_id}")).text
    fires = re.findall(r'<time datetime="([^"]+)">(\w{3} [\d-]+ 02:30:00 CES?T)</time>', page)
    assert len(fires) == 5
    assert "Europe/Berlin" in page
    assert f"https://bastion.test/hooks/{hook.json()['id']}" in page
    assert "s3cret-value-9f1" not in page and "Never shown" in page
    owner = (await seeded.olive.get(f"/workflows/{seeded.workflow_id}")).text
    assert 'class="inline secret-form"' in owner and "Rotate secret" in owner


async def test_the_runs_list_filters_and_pages_by_key(seeded: Seeded) -> None:
    for n in range(3):
        started = await seeded.olive.post(
            f"/api/v1/workflows/{seeded.workflow_id}/runs", json={"input": {"n": n}}
        )
        assert started.status_code == 202
    page = (await seeded.vic.get("/runs?status=succeeded")).text
    assert seeded.run_id in page
    none = (await seeded.vic.get("/runs?status=failed")).text
    assert "No runs match." in none
    future = (await seeded.vic.get("/runs?since=2999-01-01T00:00")).text
    assert "No runs match." in future
    bad = await seeded.vic.get("/runs?since=yesterday")
    assert bad.status_code == 400
    saved = runs_page.PAGE_SIZE
    runs_page.PAGE_SIZE = 2
    try:
        first = (await seeded.vic.get("/runs")).text
        older = re.search(r'href="(/runs\?[^"]*before=[0-9a-f]+)" rel="next"', first)
        assert older is not None
        second = (await seeded.vic.get(older[1].replace("&amp;", "&"))).text
        firsts = set(re.findall(r'data-run="([0-9a-f]+)"', first))
        seconds = set(re.findall(r'data-run="([0-9a-f]+)"', second))
        assert len(firsts) == 2 and len(seconds) == 2 and not firsts & seconds
    finally:
        runs_page.PAGE_SIZE = saved


async def test_the_log_page_searches_and_filters_by_period(seeded: Seeded) -> None:
    found = (await seeded.root.get("/logs?q=hostile+line")).text
    assert "hostile line" in found and HOSTILE_ESCAPED in found
    assert "bastion ready" not in found
    day = re.search(r"(\d{4}-\d\d-\d\d)T", found)
    assert day is not None
    today = (await seeded.root.get(f"/logs?q=hostile&period=day&day={day[1]}")).text
    assert "hostile line" in today
    month = (await seeded.root.get(f"/logs?q=hostile&period=month&month={day[1][:7]}")).text
    assert "hostile line" in month
    other_year = (await seeded.root.get("/logs?q=hostile&period=year&year=1999")).text
    assert "hostile line" not in other_year and "No log lines match." in other_year
    custom = await seeded.root.get("/logs?period=custom&since=2000-01-01T00:00&until=2000-01-02")
    assert custom.status_code == 200 and "No log lines match." in custom.text
    bad = await seeded.root.get("/logs?period=day&day=2025-13-45")
    assert bad.status_code == 400


async def test_the_audit_page_filters_and_searches_by_value(seeded: Seeded) -> None:
    page = (await seeded.root.get("/audit?action=test.hostile")).text
    assert page.count("<tr data-seq=") == 1
    prefix = (await seeded.root.get("/audit?action=workflow.")).text
    assert "<code>workflow.create</code>" in prefix and "<code>run.start</code>" not in prefix
    await seeded.failed_sign_in("ghost-user-7")
    hashed = await seeded.root.post("/api/v1/audit/hash", json={"value": "ghost-user-7"})
    value_hash = hashed.json()["hash"]
    by_value = (await seeded.root.get(f"/audit?value_hash={value_hash}")).text
    assert "ghost-user-7" not in by_value
    assert by_value.count("<tr data-seq=") >= 1 and "auth.sign_in" in by_value
    assert 'href="/api/v1/audit/export"' in page


async def test_the_settings_page_lists_sessions_tokens_and_exporters(seeded: Seeded) -> None:
    admin = (await seeded.root.get("/settings")).text
    for name in ("root", "olive", "vic", "mallory"):
        assert f"test browser of {name}" in admin
    assert admin.count("this session") == 1
    assert "jsonl" in admin and 'id="users"' in admin
    own = (await seeded.vic.get("/settings")).text
    assert "test browser of vic" in own and "test browser of olive" not in own
    assert 'id="users"' not in own and 'id="exporters"' not in own


async def test_the_rotation_page_has_an_empty_state_without_pools(seeded: Seeded) -> None:
    page = (await seeded.vic.get("/rotation")).text
    assert "No pools configured" in page


async def test_assets_are_served_to_signed_in_users_with_a_private_cache(seeded: Seeded) -> None:
    for name in ("console.js", "console.css", "live.js", "charts.js", "run.js", "vault.js"):
        asset = await seeded.vic.get(f"/app/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["cache-control"] == "private, max-age=300"
        assert "innerHTML" not in asset.text and "eval(" not in asset.text


async def test_every_page_template_extends_the_layout_and_loads_no_third_party_asset(
    seeded: Seeded,
) -> None:
    for path in pages_of(seeded):
        html = (await seeded.root.get(path)).text
        for url in re.findall(r'(?:src|href)="([^"]+)"', html):
            assert url.startswith(("/", "#", "?", "https://bastion.test/hooks/")), (path, url)
