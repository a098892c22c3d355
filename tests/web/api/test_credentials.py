from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bastion.audit.export import JsonLinesExporter, Shipper
from bastion.audit.log import AuditLog
from bastion.db import Database
from tests.oauth_server import OAuthServer
from tests.web.api.conftest import Team
from tests.web.auth.conftest import PASSWORD
from tests.web.conftest import make_settings

CANARY = "canary-7f3e9d1c-do-not-leak"
CLIENT_SECRET = "oauth-client-secret-5a1b"


@pytest.fixture
def provider() -> Iterator[OAuthServer]:
    with OAuthServer() as server:
        server.register_client("bastion", CLIENT_SECRET, ["repo"])
        yield server


async def create(http: httpx.AsyncClient, **body: object) -> httpx.Response:
    payload = {"name": "deploy", "fields": {"password": CANARY}, **body}
    return await http.post("/api/v1/credentials?workspace_id=1", json=payload)


async def test_an_owner_creates_and_describes_without_any_secret_byte(team: Team) -> None:
    created = await create(team.olive)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["fields"] == ["password"] and body["version"] == 1
    assert CANARY not in created.text
    listed = await team.vic.get("/api/v1/credentials?workspace_id=1")
    assert listed.status_code == 200 and [c["name"] for c in listed.json()] == ["deploy"]
    assert CANARY not in listed.text and "ciphertext" not in listed.text


async def test_a_viewer_cannot_create_reveal_rotate_or_delete(team: Team) -> None:
    credential = (await create(team.olive)).json()["id"]
    assert (await create(team.vic, name="mine")).status_code == 403
    base = f"/api/v1/credentials/{credential}"
    assert (await team.vic.post(base + "/reveal", json={"reason": "curious"})).status_code == 403
    assert (await team.vic.post(base + "/rotate", json={"fields": {"p": "x"}})).status_code == 403
    assert (await team.vic.delete(base)).status_code == 403


async def test_reveal_requires_a_reason_and_returns_the_material(team: Team) -> None:
    credential = (await create(team.olive)).json()["id"]
    url = f"/api/v1/credentials/{credential}/reveal"
    assert (await team.olive.post(url, json={"password": PASSWORD})).status_code == 422
    revealed = await team.olive.post(
        url, json={"reason": "migrating the database", "password": PASSWORD}
    )
    assert revealed.status_code == 200 and revealed.json() == {"password": CANARY}
    assert revealed.headers["cache-control"] == "no-store"


async def test_a_console_reveal_needs_the_password_again_and_a_refusal_is_audited(
    team: Team,
) -> None:
    credential = (await create(team.olive)).json()["id"]
    url = f"/api/v1/credentials/{credential}/reveal"
    for body in ({"reason": "no password"}, {"reason": "wrong one", "password": "guess"}):
        refused = await team.olive.post(url, json=body)
        assert refused.status_code == 403, refused.text
        assert "re-enter your password" in refused.json()["message"]
        assert CANARY not in refused.text
    trail = (await team.olive.get("/api/v1/audit/search?action=credential.reveal")).status_code
    assert trail == 403  # olive owns the workspace but is no administrator
    settings = make_settings(team.settings_env)
    db = Database(settings.effective_database_url)
    try:
        rows = await AuditLog(db, settings.keyring()).events()
    finally:
        await db.dispose()
    denied = [r for r in rows if r.action == "credential.reveal" and r.outcome == "denied"]
    assert len(denied) == 2 and "guess" not in str([r.details for r in denied])


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"fields": {}}, 400),
        ({"fields": {"password": "x" * 70_000}}, 400),
        ({"fields": {"Bad Field": "x"}}, 400),
        ({"kind": "ldap"}, 422),
        ({"kind": "oauth2"}, 400),
        ({"name": "../etc"}, 400),
    ],
)
async def test_bad_input_is_a_clear_4xx_and_never_echoes_the_value(
    team: Team, body: dict[str, object], status: int
) -> None:
    response = await create(team.olive, **body)
    assert response.status_code == status, response.text
    assert (
        response.json()["message"] and CANARY not in response.text and "xxxx" not in response.text
    )
    listed = await team.olive.get("/api/v1/credentials?workspace_id=1")
    assert listed.json() == []


async def test_duplicates_and_same_value_rotations_are_refused(team: Team) -> None:
    credential = (await create(team.olive)).json()["id"]
    assert (await create(team.olive)).status_code == 409
    same = await team.olive.post(
        f"/api/v1/credentials/{credential}/rotate", json={"fields": {"password": CANARY}}
    )
    assert same.status_code == 400 and "same" in same.json()["message"]


async def test_unknown_credentials_are_404(team: Team) -> None:
    assert (await team.olive.get("/api/v1/credentials/nope")).status_code == 404


async def test_the_canary_appears_nowhere_but_in_the_reveal(
    team: Team, provider: OAuthServer, tmp_path: Path, log_file: Path
) -> None:
    answers: list[str] = []

    async def call(method: str, url: str, **kwargs: object) -> httpx.Response:
        response = await team.olive.request(method, url, **kwargs)  # type: ignore[arg-type]
        answers.append(response.text)
        return response

    created = await call(
        "POST",
        "/api/v1/credentials?workspace_id=1",
        json={"name": "deploy", "fields": {"password": CANARY}},
    )
    secret_id = created.json()["id"]
    refresh = provider.issue_refresh_token("bastion", ["repo"])
    oauth = await call(
        "POST",
        "/api/v1/credentials?workspace_id=1",
        json={
            "name": "github",
            "kind": "oauth2",
            "settings": {"token_url": provider.token_url, "client_id": "bastion"},
            "fields": {"client_secret": CLIENT_SECRET, "refresh_token": refresh},
        },
    )
    oauth_id = oauth.json()["id"]
    tested = await call("POST", f"/api/v1/credentials/{oauth_id}/test")
    assert tested.json()["health"] == "healthy", tested.text
    await call("POST", f"/api/v1/credentials/{secret_id}/test")
    await call("GET", f"/api/v1/credentials/{secret_id}")
    await call("GET", "/api/v1/credentials?workspace_id=1")
    await call("GET", "/api/v1/credential-alerts")
    await call(
        "POST",
        f"/api/v1/credentials/{secret_id}/rotate",
        json={"fields": {"password": CANARY + "2"}},
    )
    revealed = await team.olive.post(
        f"/api/v1/credentials/{secret_id}/reveal",
        json={"reason": "canary check", "password": PASSWORD},
    )
    assert CANARY in revealed.text  # the one place it may appear

    settings = make_settings(team.settings_env)
    db = Database(settings.effective_database_url)
    try:
        audit = AuditLog(db, settings.keyring())
        exporter = JsonLinesExporter(settings.audit_jsonl_path, max_bytes=10**6)  # type: ignore[arg-type]
        assert await Shipper(audit, exporter).ship_once() > 0
    finally:
        await db.dispose()

    needles = [CANARY, CLIENT_SECRET, refresh]
    places = {f"answer {n}": text.encode() for n, text in enumerate(answers)}
    for path in [
        *settings.data_dir.rglob("*"),
        *log_file.parent.rglob("*"),
        *tmp_path.joinpath("audit").rglob("*"),
    ]:
        if path.is_file():
            places[str(path)] = path.read_bytes()
    assert len(places) > len(answers) + 3
    for place, data in places.items():
        for needle in needles:
            assert needle.encode() not in data, f"{needle[:8]}… leaked into {place}"


async def test_alerts_are_listed_and_acknowledged_by_owners_only(team: Team) -> None:
    # A failed test raises an alert at once: an OAuth2 credential whose provider is down.
    broken = await team.olive.post(
        "/api/v1/credentials?workspace_id=1",
        json={
            "name": "unreachable",
            "kind": "oauth2",
            "settings": {"token_url": "http://127.0.0.1:9/token", "client_id": "x"},
            "fields": {"client_secret": "client secret value"},
        },
    )
    tested = await team.olive.post(f"/api/v1/credentials/{broken.json()['id']}/test")
    assert tested.json()["health"] == "unhealthy"
    listed = await team.vic.get("/api/v1/credential-alerts")
    [alert] = listed.json()
    assert alert["kind"] == "validation_failed" and alert["credential_name"] == "unreachable"
    url = f"/api/v1/credential-alerts/{alert['id']}/acknowledge"
    assert (await team.vic.post(url)).status_code == 404  # a viewer cannot
    acknowledged = await team.olive.post(url)
    assert (
        acknowledged.status_code == 200 and acknowledged.json()["acknowledged_by"] == "user:olive"
    )


async def test_owners_update_the_scope_and_viewers_cannot(team: Team) -> None:
    credential = (await create(team.olive)).json()["id"]
    url = f"/api/v1/credentials/{credential}"
    assert (await team.vic.patch(url, json={"description": "mine"})).status_code == 403
    narrowed = await team.olive.patch(url, json={"policy": {"roles": ["owner"]}})
    assert narrowed.status_code == 200 and narrowed.json()["policy"]["roles"] == ["owner"]
    assert (await team.vic.get(url)).status_code == 403  # now out of the viewer's scope
    bad = await team.olive.patch(url, json={"policy": {"roles": ["root"]}})
    assert bad.status_code == 400 and "unknown role" in bad.json()["message"]
