from __future__ import annotations

import httpx
import pytest

from tests.web.api.conftest import Actors


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_a_session_creates_a_token_shown_once_that_then_authenticates(actors: Actors) -> None:
    http = actors.alice.http
    created = await http.post(
        "/api/v1/tokens",
        json={"name": "ci", "workspace_id": 1, "role": "operator", "expires_in_days": 30},
        headers={"x-csrf-token": actors.csrf["alice"]},
    )
    assert created.status_code == 201, created.text
    token = created.json()["token"]
    assert token.startswith("bst_")
    listed = await http.get("/api/v1/tokens")
    assert token not in listed.text
    assert [t["name"] for t in listed.json()] == ["ci"]
    assert listed.headers["cache-control"] == "no-store"
    with_token = await httpx.AsyncClient(
        transport=http._transport, base_url="https://bastion.test"
    ).get("/api/v1/tokens", headers=bearer(token))
    assert with_token.status_code == 200
    assert [t["name"] for t in with_token.json()] == ["ci"]


async def test_a_token_cannot_mint_tokens(actors: Actors) -> None:
    http = actors.alice.http
    created = await http.post(
        "/api/v1/tokens",
        json={"name": "ci", "workspace_id": 1, "role": "viewer"},
        headers={"x-csrf-token": actors.csrf["alice"]},
    )
    token = created.json()["token"]
    async with httpx.AsyncClient(
        transport=http._transport, base_url="https://bastion.test"
    ) as bare:
        minted = await bare.post(
            "/api/v1/tokens",
            json={"name": "x", "workspace_id": 1, "role": "viewer"},
            headers=bearer(token),
        )
    assert minted.status_code == 403


async def test_session_calls_that_change_state_need_the_csrf_header(actors: Actors) -> None:
    body = {"name": "ci", "workspace_id": 1, "role": "viewer"}
    missing = await actors.alice.http.post("/api/v1/tokens", json=body)
    wrong = await actors.alice.http.post("/api/v1/tokens", json=body, headers={"x-csrf-token": "x"})
    foreign = await actors.alice.http.post(
        "/api/v1/tokens",
        json=body,
        headers={"x-csrf-token": actors.csrf["alice"], "origin": "https://evil.example"},
    )
    assert [r.status_code for r in (missing, wrong, foreign)] == [403, 403, 403]
    assert (await actors.alice.http.get("/api/v1/tokens")).json() == []


async def test_an_outsider_cannot_take_a_role_or_revoke_others_tokens(actors: Actors) -> None:
    refused = await actors.charlie.http.post(
        "/api/v1/tokens",
        json={"name": "x", "workspace_id": 1, "role": "viewer"},
        headers={"x-csrf-token": actors.csrf["charlie"]},
    )
    assert refused.status_code == 403
    created = await actors.alice.http.post(
        "/api/v1/tokens",
        json={"name": "ci", "workspace_id": 1, "role": "viewer"},
        headers={"x-csrf-token": actors.csrf["alice"]},
    )
    token_id = created.json()["id"]
    assert (await actors.charlie.http.get("/api/v1/tokens")).json() == []
    stolen = await actors.charlie.http.delete(
        f"/api/v1/tokens/{token_id}", headers={"x-csrf-token": actors.csrf["charlie"]}
    )
    assert stolen.status_code == 404
    own = await actors.alice.http.delete(
        f"/api/v1/tokens/{token_id}", headers={"x-csrf-token": actors.csrf["alice"]}
    )
    assert own.status_code == 204
    assert (await actors.alice.http.get("/api/v1/tokens")).json()[0]["revoked"] is True


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer",
        "Bearer bst_nope",
        "Basic YWRtaW46YWRtaW4=",
        "Bearer " + "bst_" + "A" * 43,
        "Bearer \u00e9",
    ],
)
async def test_bad_credentials_get_401_with_a_challenge(actors: Actors, authorization: str) -> None:
    async with httpx.AsyncClient(
        transport=actors.alice.http._transport, base_url="https://bastion.test"
    ) as bare:
        response = await bare.get(
            "/api/v1/tokens", headers={"authorization": authorization.encode("utf-8")}
        )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"name": "", "workspace_id": 1, "role": "viewer"},
        {"name": "x", "workspace_id": 1, "role": "emperor"},
        {"name": "x", "workspace_id": 1, "role": "viewer", "expires_in_days": 1000},
    ],
)
async def test_invalid_token_requests_get_422_and_create_nothing(
    actors: Actors, body: dict[str, object]
) -> None:
    response = await actors.alice.http.post(
        "/api/v1/tokens", json=body, headers={"x-csrf-token": actors.csrf["alice"]}
    )
    assert response.status_code == 422
    assert (await actors.alice.http.get("/api/v1/tokens")).json() == []
