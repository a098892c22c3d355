"""The API the console added: sessions, logs, audit search/hash/export/exporters, run
statistics and the live run feed, workspaces."""

# ruff: noqa: F811 - the `seeded` fixture is imported from the console tests' conftest

from __future__ import annotations

import asyncio
import json

import pytest

from bastion.web.api import live
from tests.web.console.conftest import (  # noqa: F401 - fixtures
    HOSTILE,
    Seeded,
    cheap_password_hashing,
    console_env,
    seeded,
)


async def test_everyone_lists_their_own_sessions_and_admins_everyone_s(seeded: Seeded) -> None:
    own = (await seeded.vic.get("/api/v1/sessions")).json()
    assert [s["username"] for s in own] == ["vic"] and own[0]["current"] is True
    assert own[0]["user_agent"].startswith("test browser of vic")
    assert len(own[0]["handle"]) == 32
    assert (await seeded.vic.get("/api/v1/sessions?all=true")).status_code == 403
    everyone = (await seeded.root.get("/api/v1/sessions?all=true")).json()
    assert {s["username"] for s in everyone} == {"root", "olive", "vic", "mallory"}
    assert [s["username"] for s in everyone if s["current"]] == ["root"]


async def test_an_admin_ends_another_session_and_its_cookie_dies(seeded: Seeded) -> None:
    everyone = (await seeded.root.get("/api/v1/sessions?all=true")).json()
    vic = next(s for s in everyone if s["username"] == "vic")
    # Not anyone's business but an admin's: olive may not end vic's session.
    url = f"/api/v1/sessions/{vic['handle']}?user_id={vic['user_id']}"
    assert (await seeded.olive.delete(url)).status_code == 403
    assert (await seeded.root.delete(url)).status_code == 204
    assert (await seeded.vic.get("/api/v1/sessions")).status_code == 401
    assert (await seeded.vic.get("/")).status_code == 303
    assert (await seeded.root.delete(url)).status_code == 404
    trail = (await seeded.root.get("/api/v1/audit/search?action=auth.session_ended")).json()
    assert trail["events"][0]["target"] == f"user:{vic['user_id']}"
    assert vic["handle"] not in json.dumps(trail)  # only a prefix is recorded


async def test_ending_a_session_needs_the_csrf_header(seeded: Seeded) -> None:
    own = (await seeded.olive.get("/api/v1/sessions")).json()[0]
    forged = await seeded.olive.delete(
        f"/api/v1/sessions/{own['handle']}", headers={"x-csrf-token": "forged"}
    )
    assert forged.status_code == 403
    assert (await seeded.olive.get("/api/v1/sessions")).status_code == 200


async def test_the_log_api_is_for_admins_and_filters(seeded: Seeded) -> None:
    assert (await seeded.olive.get("/api/v1/logs")).status_code == 403
    found = (await seeded.root.get("/api/v1/logs", params={"q": "hostile line"})).json()
    assert len(found["lines"]) == 1 and HOSTILE in found["lines"][0]["message"]
    assert found["lines"][0]["level"] == "WARNING"
    warnings = (await seeded.root.get("/api/v1/logs", params={"level": "WARNING"})).json()
    assert all(line["level"] in ("WARNING", "ERROR", "CRITICAL") for line in warnings["lines"])
    page = (await seeded.root.get("/api/v1/logs", params={"limit": 2})).json()
    assert len(page["lines"]) == 2 and page["next_cursor"]
    rest = (
        await seeded.root.get("/api/v1/logs", params={"limit": 1000, "cursor": page["next_cursor"]})
    ).json()
    assert page["lines"][-1] not in rest["lines"][:1] and rest["lines"]
    old = (await seeded.root.get("/api/v1/logs", params={"until": "2000-01-01T00:00:00"})).json()
    assert old["lines"] == []


async def test_audit_search_hash_export_and_exporters_are_for_admins(seeded: Seeded) -> None:
    for path in ("/api/v1/audit/search", "/api/v1/audit/export", "/api/v1/audit/exporters"):
        assert (await seeded.olive.get(path)).status_code == 403
    assert (await seeded.olive.post("/api/v1/audit/hash", json={"value": "x"})).status_code == 403
    page = (await seeded.root.get("/api/v1/audit/search", params={"limit": 2})).json()
    assert len(page["events"]) == 2 and page["events"][0]["seq"] > page["events"][1]["seq"]
    older = (
        await seeded.root.get("/api/v1/audit/search", params={"before": page["next_before"]})
    ).json()
    assert older["events"][0]["seq"] < page["events"][1]["seq"]
    text = (await seeded.root.get("/api/v1/audit/search", params={"q": "<script>"})).json()
    assert [e["action"] for e in text["events"]] == ["test.hostile", "run.start"]
    bad = await seeded.root.get("/api/v1/audit/search", params={"value_hash": "ghost"})
    assert bad.status_code == 422
    export = await seeded.root.get("/api/v1/audit/export")
    assert export.headers["content-disposition"].startswith("attachment")
    records = [json.loads(line) for line in export.text.splitlines()]
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    exported = (await seeded.root.get("/api/v1/audit/search?action=audit.export")).json()
    assert exported["events"][0]["actor"] == "user:root"
    exporters = (await seeded.root.get("/api/v1/audit/exporters")).json()
    assert [e["name"] for e in exporters] == ["jsonl"] and exporters[0]["configured"]


async def test_run_counts_cover_the_readable_workspaces_only(seeded: Seeded) -> None:
    counts = (await seeded.vic.get("/api/v1/stats/runs")).json()
    assert counts["hours"] == 24 and len(counts["buckets"]) == 24
    assert counts["totals"]["succeeded"] == 1
    assert counts["buckets"][-1]["counts"] == {"succeeded": 1}
    outsider = (await seeded.mallory.get("/api/v1/stats/runs")).json()
    assert sum(outsider["totals"].values()) == 0
    assert (await seeded.mallory.get("/api/v1/stats/runs?workspace_id=1")).status_code == 403
    assert (await seeded.vic.get("/api/v1/stats/runs?hours=0")).status_code == 422


async def test_the_run_feed_announces_a_new_run_and_its_status_changes(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live, "STREAM_SECONDS", 2.5)
    monkeypatch.setattr(live, "POLL_SECONDS", 0.1)
    feed = asyncio.create_task(seeded.vic.get("/api/v1/runs:stream"))
    outsider = asyncio.create_task(seeded.mallory.get("/api/v1/runs:stream"))
    await asyncio.sleep(0.5)
    started = await seeded.olive.post(
        f"/api/v1/workflows/{seeded.workflow_id}/runs", json={"input": {"n": 1}}
    )
    run_id = started.json()["id"]
    response, hidden = await feed, await outsider
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block.startswith("event: run")]
    statuses = [json.loads(block.split("data: ", 1)[1]) for block in events]
    assert {s["id"] for s in statuses} == {run_id}
    assert statuses[-1]["status"] == "succeeded"
    assert "event: run" not in hidden.text and "event: ready" in hidden.text


async def test_workspaces_lists_what_the_caller_can_read(seeded: Seeded) -> None:
    assert (await seeded.vic.get("/api/v1/workspaces")).json() == [
        {"id": 1, "slug": "ops", "name": "Operations", "role": "viewer"}
    ]
    assert (await seeded.mallory.get("/api/v1/workspaces")).json() == []
    assert (await seeded.root.get("/api/v1/workspaces")).json()[0]["role"] == "admin"
