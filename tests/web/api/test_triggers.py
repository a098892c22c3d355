from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx

from tests.web.api.conftest import Team
from tests.web.api.test_workflows import GRAPH, create, finished

SECRET = "It's a Secret to Everybody"


async def _secret(http: httpx.AsyncClient, name: str = "hook-secret", value: str = SECRET) -> None:
    answer = await http.post(
        "/api/v1/credentials?workspace_id=1",
        json={"name": name, "kind": "secret", "fields": {"value": value}},
    )
    assert answer.status_code == 201, answer.text


async def _webhook(http: httpx.AsyncClient, workflow_id: str, **settings: Any) -> dict[str, Any]:
    answer = await http.post(
        f"/api/v1/workflows/{workflow_id}/triggers",
        json={"kind": "webhook", "name": "gh", "settings": settings},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _github(body: bytes, secret: str = SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_a_signed_github_delivery_starts_a_run_without_its_signature(team: Team) -> None:
    workflow = (await create(team.olive)).json()
    await _secret(team.olive)
    hook = await _webhook(
        team.olive, workflow["id"], scheme="hmac_sha256", secret_credential="hook-secret"
    )
    assert "It's a Secret" not in json.dumps(hook)
    body = json.dumps({"n": 12}).encode()
    headers = {
        "x-hub-signature-256": _github(body),
        "x-github-delivery": "d-1",
        "content-type": "application/json",
        "cookie": "session=stolen",
    }
    answer = await team.mallory.post(hook["url"], content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    run = await finished(team.olive, answer.json()["run_id"])
    assert run["trigger"] == "webhook"
    assert run["input"]["body"] == {"n": 12}
    assert "x-hub-signature-256" not in run["input"]["headers"]
    assert "cookie" not in run["input"]["headers"]
    replay = await team.mallory.post(hook["url"], content=body, headers=headers)
    assert replay.status_code == 202
    assert replay.json() == answer.json()
    bad = await team.mallory.post(
        hook["url"], content=body + b" ", headers={**headers, "x-github-delivery": "d-2"}
    )
    assert bad.status_code == 401, bad.text
