"""/api/v1/workflows and /api/v1/runs through the real app (inline executor, SQLite)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx

from tests.web.api.conftest import Team

GRAPH = {
    "nodes": [
        {"id": "seed", "type": "set", "params": {"values": {"n": "{{ input.n }}"}}},
        {"id": "pick", "type": "transform", "params": {"expression": "steps.seed.n"}},
        {"id": "big", "type": "condition", "params": {"expression": "steps.pick > `10`"}},
    ],
    "edges": [{"from": "seed", "to": "pick"}, {"from": "pick", "to": "big"}],
}


async def create(http: httpx.AsyncClient, graph: Any = GRAPH, name: str = "demo") -> httpx.Response:
    return await http.post("/api/v1/workflows?workspace_id=1", json={"name": name, "graph": graph})


async def finished(http: httpx.AsyncClient, run_id: str) -> dict[str, Any]:
    async with asyncio.timeout(20):
        while True:
            run: dict[str, Any] = (await http.get(f"/api/v1/runs/{run_id}")).json()
            if run["status"] not in ("queued", "running"):
                return run
            await asyncio.sleep(0.05)


async def test_an_owner_creates_a_workflow_runs_it_and_reads_its_history(team: Team) -> None:
    created = await create(team.olive)
    assert created.status_code == 201, created.text
    workflow = created.json()
    started = await team.olive.post(
        f"/api/v1/workflows/{workflow['id']}/runs", json={"input": {"n": 12}}
    )
    assert started.status_code == 202, started.text
    assert started.json()["status"] == "queued" and started.json()["trigger"] == "manual"
    run = await finished(team.olive, started.json()["id"])
    assert run["status"] == "succeeded" and run["output"] == {"result": True}
    assert [step["node"] for step in run["steps"]] == ["seed", "pick", "big"]
    assert run["actor"] == "user:olive"


async def test_an_invalid_graph_is_a_400_naming_the_node(team: Team) -> None:
    bad = {"nodes": [{"id": "x", "type": "teleport", "params": {}}]}
    response = await create(team.olive, bad)
    assert response.status_code == 400
    assert "node 'x' has unknown type 'teleport'" in response.json()["message"]
    assert (await team.olive.get("/api/v1/workflows?workspace_id=1")).json() == []


async def test_versions_are_immutable_and_runs_pin_theirs(team: Team) -> None:
    workflow = (await create(team.olive)).json()
    v2 = {"nodes": [{"id": "only", "type": "set", "params": {"values": {"v": 2}}}]}
    added = await team.olive.post(
        f"/api/v1/workflows/{workflow['id']}/versions", json={"graph": v2}
    )
    assert added.status_code == 201 and added.json()["version"] == 2
    old = await team.olive.post(
        f"/api/v1/workflows/{workflow['id']}/runs", json={"input": {"n": 1}, "version": 1}
    )
    new = await team.olive.post(f"/api/v1/workflows/{workflow['id']}/runs", json={"input": {}})
    assert (await finished(team.olive, old.json()["id"]))["output"] == {"result": False}
    assert (await finished(team.olive, new.json()["id"]))["output"] == {"v": 2}
    versions = (await team.olive.get(f"/api/v1/workflows/{workflow['id']}/versions")).json()
    assert [v["version"] for v in versions] == [2, 1]
    assert versions[1]["graph"]["nodes"][0]["id"] == "seed"


async def test_a_viewer_reads_but_cannot_edit_or_run(team: Team) -> None:
    workflow = (await create(team.olive)).json()
    assert (await team.vic.get(f"/api/v1/workflows/{workflow['id']}")).status_code == 200
    assert (await create(team.vic, name="mine")).status_code == 403
    run = await team.vic.post(f"/api/v1/workflows/{workflow['id']}/runs", json={})
    assert run.status_code == 403


async def test_a_run_list_pages_newest_first_by_key(team: Team) -> None:
    workflow = (await create(team.olive)).json()
    ids = []
    for n in range(5):
        started = await team.olive.post(
            f"/api/v1/workflows/{workflow['id']}/runs", json={"input": {"n": n}}
        )
        ids.append(started.json()["id"])
    for run_id in ids:
        await finished(team.olive, run_id)
    first = (await team.olive.get("/api/v1/runs?workspace_id=1&limit=2")).json()
    assert [r["id"] for r in first["runs"]] == ids[::-1][:2]
    second = (
        await team.olive.get(f"/api/v1/runs?workspace_id=1&limit=2&before={first['next_before']}")
    ).json()
    assert [r["id"] for r in second["runs"]] == ids[::-1][2:4]
    failed = await team.olive.get("/api/v1/runs?workspace_id=1&status=failed")
    assert failed.json()["runs"] == []
    assert (await team.olive.get("/api/v1/runs?workspace_id=1&status=exploded")).status_code == 422


async def test_replay_runs_the_same_version_with_the_same_input(team: Team) -> None:
    workflow = (await create(team.olive)).json()
    first = (
        await team.olive.post(f"/api/v1/workflows/{workflow['id']}/runs", json={"input": {"n": 50}})
    ).json()
    await finished(team.olive, first["id"])
    replayed = await team.olive.post(f"/api/v1/runs/{first['id']}/replay")
    assert replayed.status_code == 202
    again = await finished(team.olive, replayed.json()["id"])
    assert again["input"] == {"n": 50} and again["version"] == 1 and again["id"] != first["id"]


async def test_cancel_stops_a_running_run_and_a_finished_one_is_a_409(team: Team) -> None:
    slow = {
        "nodes": [
            {"id": "wait", "type": "delay", "params": {"seconds": 1}},
            {"id": "after", "type": "set", "params": {"values": {}}},
        ],
        "edges": [{"from": "wait", "to": "after"}],
    }
    workflow = (await create(team.olive, slow, "slow")).json()
    run = (await team.olive.post(f"/api/v1/workflows/{workflow['id']}/runs", json={})).json()
    cancelled = await team.olive.post(f"/api/v1/runs/{run['id']}/cancel")
    assert cancelled.status_code == 202
    ended = await finished(team.olive, run["id"])
    assert ended["status"] == "cancelled"
    assert "after" not in [step["node"] for step in ended["steps"]]
    assert (await team.olive.post(f"/api/v1/runs/{run['id']}/cancel")).status_code == 409


async def test_step_events_stream_as_server_sent_events_until_the_end(team: Team) -> None:
    workflow = (await create(team.olive)).json()
    run = (
        await team.olive.post(f"/api/v1/workflows/{workflow['id']}/runs", json={"input": {"n": 3}})
    ).json()
    response = await team.olive.get(f"/api/v1/runs/{run['id']}/events")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [block for block in response.text.split("\n\n") if block.strip()]
    kinds = [
        line.split(": ", 1)[1]
        for block in events
        for line in block.splitlines()
        if line.startswith("event:")
    ]
    assert kinds == ["step", "step", "step", "end"]
    last = json.loads(events[-1].split("data: ", 1)[1])
    assert last == {"status": "succeeded", "error": ""}
    resumed = await team.olive.get(
        f"/api/v1/runs/{run['id']}/events", headers={"Last-Event-ID": "2"}
    )
    assert resumed.text.count("event: step") == 1


async def test_workflows_and_runs_of_another_workspace_are_not_found(team: Team) -> None:
    workflow = (await create(team.olive)).json()
    run = (await team.olive.post(f"/api/v1/workflows/{workflow['id']}/runs", json={})).json()
    await finished(team.olive, run["id"])
    outsider = team.mallory
    for path in (
        f"/api/v1/workflows/{workflow['id']}",
        f"/api/v1/runs/{run['id']}",
        f"/api/v1/runs/{run['id']}/events",
    ):
        answer = await outsider.get(path)
        assert answer.status_code == 404, path
        assert "demo" not in answer.text
    assert (await outsider.post(f"/api/v1/runs/{run['id']}/replay")).status_code == 404
    assert (await outsider.get("/api/v1/runs?workspace_id=1")).status_code == 403
    assert (await outsider.get("/api/v1/workflows?workspace_id=1")).status_code == 403


async def test_an_oversized_or_non_json_input_is_a_clean_4xx(team: Team) -> None:
    workflow = (await create(team.olive)).json()
    url = f"/api/v1/workflows/{workflow['id']}/runs"
    huge = await team.olive.post(url, json={"input": {"x": "y" * (1024 * 1024 + 1)}})
    assert huge.status_code == 400 and "run input exceeds" in huge.json()["message"]
    garbage = await team.olive.post(
        url, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert garbage.status_code == 422
    assert (await team.olive.get("/api/v1/runs?workspace_id=1")).json()["runs"] == []


async def test_an_input_with_no_utf8_form_is_a_400_not_a_500(team: Team) -> None:
    workflow = (await create(team.olive)).json()
    answer = await team.olive.post(
        f"/api/v1/workflows/{workflow['id']}/runs",
        content=b'{"input": {"a": "\\ud800"}}',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code == 400, answer.text
    assert answer.json()["message"].startswith("run input is not JSON")
    assert (await team.olive.get("/api/v1/runs?workspace_id=1")).json()["runs"] == []
