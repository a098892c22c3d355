"""Triggers through the real app: /hooks/{id} deliveries, trigger and retry-policy CRUD,
manual runs and batches (inline executor, SQLite file)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher

from bastion.crypto import passwords
from bastion.triggers import gate
from bastion.web.app import Services
from tests.web.api.conftest import Team
from tests.web.api.test_workflows import create, finished

SECRET = "It's a Secret to Everybody"
NEW_SECRET = "It's a new Secret to Everybody"
WHSEC = "whsec_" + base64.b64encode(b"standard webhooks key, 32 bytes").decode()
SCHEMES = ("shared_secret", "hmac_sha256", "standard_webhooks", "stripe", "slack")
TIMESTAMPED = ("standard_webhooks", "stripe", "slack")
# Every refusal message signatures.verify can give: it names a check, never a value.
VOCABULARY = re.compile(
    r"(missing|malformed) [A-Za-z0-9-]+ header|(signature|secret) does not match"
    r"|webhook timestamp is (too old|in the future)|no secret configured"
    r"|malformed event id in body"
)
# Webhook runs get the request as input: the body's n comes back as the output.
HOOK_GRAPH = {
    "nodes": [{"id": "echo", "type": "set", "params": {"values": {"n": "{{ input.n }}"}}}]
}
ECHO_BODY = {
    "nodes": [{"id": "echo", "type": "set", "params": {"values": {"n": "{{ input.body.n }}"}}}]
}


# -- helpers ---------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sign-ins are not under test here: light argon2 parameters for the team's three
    accounts keep each app's setup short (verifying follows the parameters of the hash)."""
    light = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    monkeypatch.setattr(passwords, "_hasher", light)


def services(http: httpx.AsyncClient) -> Services:
    """The running app's Services. `serving` (tests/web/conftest.py) runs the lifespan and
    closes over its state, which it copies into every request: read it from there."""
    transport = http._transport
    assert isinstance(transport, httpx.ASGITransport)
    app = transport.app
    cells = dict(zip(app.__code__.co_freevars, app.__closure__ or (), strict=True))
    found = cells["state"].cell_contents["services"]
    assert isinstance(found, Services)
    return found


def database_file(team: Team) -> Path:
    return Path(team.settings_env["BASTION_DATA_DIR"]) / "bastion.db"


def sql(team: Team, statement: str, *params: object) -> None:
    with closing(sqlite3.connect(database_file(team))) as connection, connection:
        connection.execute(statement, params)


async def secret(
    http: httpx.AsyncClient, name: str = "hook-secret", value: str = SECRET
) -> dict[str, Any]:
    answer = await http.post(
        "/api/v1/credentials?workspace_id=1",
        json={"name": name, "kind": "secret", "fields": {"value": value}},
    )
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


async def workflow(http: httpx.AsyncClient, name: str = "demo", graph: Any = ECHO_BODY) -> str:
    answer = await create(http, graph, name)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


async def add_trigger(
    http: httpx.AsyncClient, workflow_id: str, *, name: str = "gh", **body: Any
) -> httpx.Response:
    return await http.post(
        f"/api/v1/workflows/{workflow_id}/triggers",
        json={"kind": "webhook", "name": name, **body},
    )


async def webhook(
    http: httpx.AsyncClient, workflow_id: str, *, name: str = "gh", **settings: Any
) -> dict[str, Any]:
    answer = await add_trigger(http, workflow_id, name=name, settings=settings)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _hex(key: str, content: bytes) -> str:
    return hmac.new(key.encode(), content, hashlib.sha256).hexdigest()


def sign(
    scheme: str,
    body: bytes,
    key: str = SECRET,
    *,
    at: int | None = None,
    event_id: str | None = None,
) -> dict[str, str]:
    """The headers a sender using `scheme` puts on `body`, signed with `key`."""
    ts = str(int(time.time()) if at is None else at)
    if scheme == "shared_secret":
        return {"x-webhook-secret": key}
    if scheme == "hmac_sha256":
        headers = {"x-hub-signature-256": "sha256=" + _hex(key, body)}
        return headers if event_id is None else {**headers, "x-github-delivery": event_id}
    if scheme == "standard_webhooks":
        message_id = event_id or "msg_" + uuid.uuid4().hex
        raw_key = base64.b64decode(key.removeprefix("whsec_"))
        mac = hmac.new(raw_key, f"{message_id}.{ts}.".encode() + body, hashlib.sha256).digest()
        return {
            "webhook-id": message_id,
            "webhook-timestamp": ts,
            "webhook-signature": "v1," + base64.b64encode(mac).decode(),
        }
    if scheme == "stripe":
        return {"stripe-signature": f"t={ts},v1={_hex(key, f'{ts}.'.encode() + body)}"}
    assert scheme == "slack"
    return {
        "x-slack-request-timestamp": ts,
        "x-slack-signature": "v0=" + _hex(key, f"v0:{ts}:".encode() + body),
    }


def key_of(scheme: str) -> str:
    return WHSEC if scheme == "standard_webhooks" else SECRET


async def scheme_hooks(team: Team) -> dict[str, dict[str, Any]]:
    """One workflow per scheme, each with a webhook using that scheme."""
    await secret(team.olive)
    await secret(team.olive, "whsec", WHSEC)
    hooks = {}
    for scheme in SCHEMES:
        workflow_id = await workflow(team.olive, scheme.replace("_", "-"))
        credential = "whsec" if scheme == "standard_webhooks" else "hook-secret"
        hooks[scheme] = await webhook(
            team.olive, workflow_id, scheme=scheme, secret_credential=credential
        )
    return hooks


async def runs_of(http: httpx.AsyncClient, workflow_id: str | None = None) -> list[dict[str, Any]]:
    query = "" if workflow_id is None else f"&workflow_id={workflow_id}"
    answer = await http.get(f"/api/v1/runs?workspace_id=1&limit=500{query}")
    assert answer.status_code == 200, answer.text
    return list(answer.json()["runs"])


async def audit_events(http: httpx.AsyncClient, action: str) -> list[dict[str, Any]]:
    rows = await services(http).audit.events(limit=100_000)
    return [
        {"actor": r.actor, "target": r.target, "reason": r.reason, **json.loads(r.details)}
        for r in rows
        if r.action == action
    ]


def body_of(n: int) -> bytes:
    return json.dumps({"n": n}).encode()


# -- signatures, end to end ------------------------------------------------------------


async def test_a_signed_github_delivery_starts_a_run_without_its_signature(team: Team) -> None:
    workflow_id = await workflow(team.olive)
    await secret(team.olive)
    hook = await webhook(
        team.olive, workflow_id, scheme="hmac_sha256", secret_credential="hook-secret"
    )
    assert "It's a Secret" not in json.dumps(hook)
    body = body_of(12)
    headers = {
        **sign("hmac_sha256", body, event_id="d-1"),
        "content-type": "application/json",
        "cookie": "session=stolen",
    }
    answer = await team.mallory.post(hook["url"], content=body, headers=headers)
    assert answer.status_code == 202, answer.text
    run = await finished(team.olive, answer.json()["run_id"])
    assert run["trigger"] == "webhook" and run["trigger_id"] == hook["id"]
    assert run["input"]["body"] == {"n": 12}
    assert "x-hub-signature-256" not in run["input"]["headers"]
    assert "cookie" not in run["input"]["headers"]


async def test_every_signature_scheme_is_accepted_over_http_and_its_run_completes(
    team: Team,
) -> None:
    hooks = await scheme_hooks(team)
    for n, scheme in enumerate(SCHEMES):
        body = body_of(n)
        answer = await team.mallory.post(
            hooks[scheme]["url"], content=body, headers=sign(scheme, body, key_of(scheme))
        )
        assert answer.status_code == 202, (scheme, answer.text)
        run = await finished(team.olive, answer.json()["run_id"])
        assert run["status"] == "succeeded", (scheme, run["error"])
        assert run["output"] == {"n": n} and run["trigger"] == "webhook", scheme


async def test_a_wrong_secret_a_tampered_body_a_missing_header_or_a_stale_timestamp_is_401(
    team: Team,
) -> None:
    hooks = await scheme_hooks(team)
    body = body_of(1)
    for scheme in SCHEMES:
        url, key = hooks[scheme]["url"], key_of(scheme)
        wrong_key = "whsec_" + base64.b64encode(b"another key").decode()
        attempts: dict[str, tuple[bytes, dict[str, str]]] = {
            "wrong secret": (
                body,
                sign(scheme, body, wrong_key if scheme == "standard_webhooks" else "wrong"),
            ),
        }
        signed = sign(scheme, body, key)
        for name in signed:
            attempts[f"missing {name}"] = (body, {k: v for k, v in signed.items() if k != name})
        if scheme != "shared_secret":  # a shared secret does not cover the body
            attempts["tampered body"] = (body + b" ", sign(scheme, body, key))
        if scheme in TIMESTAMPED:
            attempts["stale timestamp"] = (body, sign(scheme, body, key, at=int(time.time()) - 600))
        for what, (content, headers) in attempts.items():
            answer = await team.mallory.post(url, content=content, headers=headers)
            assert answer.status_code == 401, (scheme, what, answer.text)
            message = answer.json()["message"]
            assert VOCABULARY.fullmatch(message), (scheme, what, message)
            assert "Everybody" not in answer.text and WHSEC not in answer.text
            expected = {
                "wrong secret": "(signature|secret) does not match",
                "tampered body": "signature does not match",
                "stale timestamp": "webhook timestamp is too old",
            }.get(what, f"missing (?i:{what.removeprefix('missing ')}) header")
            assert re.fullmatch(expected, message), (scheme, what, message)
    assert await runs_of(team.olive) == []


# -- what is stored ----------------------------------------------------------------------


async def test_credential_headers_never_reach_the_database_file(team: Team, tmp_path: Path) -> None:
    workflow_id = await workflow(team.olive)
    await secret(team.olive)
    hook = await webhook(
        team.olive,
        workflow_id,
        scheme="hmac_sha256",
        secret_credential="hook-secret",
        scrub_headers=["X-Api-Key"],
    )
    canary = uuid.uuid4().hex
    body = body_of(7)
    signed = sign("hmac_sha256", body)
    secrets = {
        "authorization": f"Bearer auth-{canary}",
        "cookie": f"session=cookie-{canary}",
        "proxy-authorization": f"Basic proxy-{canary}",
        "x-hub-signature": f"sha1=sha1-{canary}",
        "x-api-key": f"extra-{canary}",
    }
    harmless = f"harmless-{uuid.uuid4().hex}"
    answer = await team.mallory.post(
        hook["url"], content=body, headers={**signed, **secrets, "x-harmless": harmless}
    )
    assert answer.status_code == 202, answer.text
    run = await finished(team.olive, answer.json()["run_id"])
    assert run["input"]["headers"]["x-harmless"] == harmless
    assert not set(secrets) & set(run["input"]["headers"])
    assert "x-hub-signature-256" not in run["input"]["headers"]

    db = database_file(team)
    stored = b"".join(p.read_bytes() for p in (db, Path(f"{db}-wal")) if p.exists())
    assert harmless.encode() in stored  # the reading itself works
    leaked = [*secrets.values(), signed["x-hub-signature-256"].removeprefix("sha256=")]
    for value in leaked:
        assert value.encode() not in stored, value
    # Nor in anything else the server wrote: the checkpoint store, logs, the audit export.
    files = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name.startswith("bastion.checkpoints") for path in files)
    for path in files:
        assert canary.encode() not in path.read_bytes(), path


async def test_a_replayed_event_id_returns_the_original_run_and_starts_no_other(
    team: Team,
) -> None:
    await secret(team.olive)
    await secret(team.olive, "whsec", WHSEC)
    standard = await webhook(
        team.olive,
        await workflow(team.olive, "standard"),
        scheme="standard_webhooks",
        secret_credential="whsec",
    )
    github = await webhook(
        team.olive,
        await workflow(team.olive, "github"),
        scheme="hmac_sha256",
        secret_credential="hook-secret",
    )
    body = body_of(3)
    first = sign("standard_webhooks", body, WHSEC, event_id="msg_1")
    original = await team.mallory.post(standard["url"], content=body, headers=first)
    assert original.status_code == 202, original.text
    # The same request again, and the same event re-signed later (a sender's retry).
    resigned = sign("standard_webhooks", body, WHSEC, at=int(time.time()) + 5, event_id="msg_1")
    for headers in (first, resigned):
        replay = await team.mallory.post(standard["url"], content=body, headers=headers)
        assert replay.status_code == 202 and replay.content == original.content
    assert len(await runs_of(team.olive, standard["workflow_id"])) == 1

    delivered = await team.mallory.post(
        github["url"], content=body, headers=sign("hmac_sha256", body, event_id="d-1")
    )
    replay = await team.mallory.post(
        github["url"], content=body, headers=sign("hmac_sha256", body, event_id="d-1")
    )
    assert delivered.status_code == replay.status_code == 202
    assert replay.content == delivered.content
    other = await team.mallory.post(
        github["url"], content=body, headers=sign("hmac_sha256", body, event_id="d-2")
    )
    assert other.status_code == 202 and other.json() != delivered.json()
    runs = await runs_of(team.olive, github["workflow_id"])
    assert sorted(r["id"] for r in runs) == sorted(
        [delivered.json()["run_id"], other.json()["run_id"]]
    )
    for run_id in [original.json()["run_id"], *(r["id"] for r in runs)]:
        await finished(team.olive, run_id)


# -- status codes ----------------------------------------------------------------------


async def test_unknown_and_disabled_webhooks_are_the_same_404_and_methods_are_405(
    team: Team,
) -> None:
    workflow_id = await workflow(team.olive)
    hook = await webhook(team.olive, workflow_id, scheme="none", methods=["POST", "PUT"])
    unknown = await team.mallory.post("/hooks/" + "0" * 32, content=b"{}")
    assert unknown.status_code == 404
    wrong_method = await team.mallory.get(hook["url"])
    assert wrong_method.status_code == 405
    assert wrong_method.headers["allow"] == "POST, PUT"
    assert (await team.mallory.put(hook["url"], content=b"{}")).status_code == 202
    disabled = await team.olive.patch(
        f"/api/v1/workflows/{workflow_id}/triggers/{hook['id']}", json={"enabled": False}
    )
    assert disabled.status_code == 200 and disabled.json()["enabled"] is False
    gone = await team.mallory.post(hook["url"], content=b"{}")
    assert gone.status_code == 404 and gone.content == unknown.content
    assert (await team.mallory.get(hook["url"])).status_code == 404  # no hint it exists
    created_disabled = await add_trigger(
        team.olive,
        workflow_id,
        name="off",
        enabled=False,
        settings={"scheme": "hmac_sha256"},  # no secret: allowed while disabled
    )
    assert created_disabled.status_code == 201, created_disabled.text
    off = await team.mallory.post(created_disabled.json()["url"], content=b"{}")
    assert off.status_code == 404 and off.content == unknown.content
    for run in await runs_of(team.olive):
        await finished(team.olive, run["id"])
    assert len(await runs_of(team.olive)) == 1


async def test_a_missing_required_header_or_query_value_is_400_and_a_wrong_type_415(
    team: Team,
) -> None:
    workflow_id = await workflow(team.olive)
    hook = await webhook(
        team.olive,
        workflow_id,
        scheme="none",
        required_headers={"X-Event": "push", "X-Sender": None},
        required_query={"source": None},
        content_types=["application/json"],
    )
    good = {"x-event": "push", "x-sender": "ci", "content-type": "application/json"}
    url = hook["url"] + "?source=ci"
    for headers, target in (
        ({**good, "x-event": "tag"}, url),
        ({k: v for k, v in good.items() if k != "x-sender"}, url),
        (good, hook["url"]),
        (good, hook["url"] + "?other=ci"),
    ):
        answer = await team.mallory.post(target, content=b"{}", headers=headers)
        assert answer.status_code == 400, (headers, target, answer.text)
        assert answer.json()["error"] == "invalid_input"
    for media in ("text/plain", "application/jsonx", ""):
        answer = await team.mallory.post(
            url, content=b"{}", headers={**good, "content-type": media}
        )
        assert answer.status_code == 415, (media, answer.text)
    assert await runs_of(team.olive) == []
    accepted = await team.mallory.post(
        url, content=body_of(4), headers={**good, "content-type": "Application/JSON; charset=utf-8"}
    )
    assert accepted.status_code == 202, accepted.text
    assert (await finished(team.olive, accepted.json()["run_id"]))["output"] == {"n": 4}


async def test_a_body_over_max_body_bytes_is_413_with_or_without_content_length(
    team: Team,
) -> None:
    workflow_id = await workflow(team.olive)
    hook = await webhook(team.olive, workflow_id, scheme="none", max_body_bytes=64)

    async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    declared = await team.mallory.post(hook["url"], content=b"x" * 65)
    assert declared.status_code == 413, declared.text
    streamed = await team.mallory.post(hook["url"], content=chunks(b"x" * 40, b"x" * 40))
    assert streamed.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413, streamed.text
    lying = await team.mallory.post(
        hook["url"], content=chunks(b"x" * 40, b"x" * 40), headers={"content-length": "10"}
    )
    assert lying.status_code == 413, lying.text
    assert await runs_of(team.olive) == []
    fits = await team.mallory.post(hook["url"], content=chunks(b"[" + b"1," * 30, b"1]"))
    assert fits.status_code == 202, fits.text
    await finished(team.olive, fits.json()["run_id"])


async def test_non_ascii_bytes_in_signature_headers_are_401_never_500(team: Team) -> None:
    hooks = await scheme_hooks(team)
    body = body_of(1)
    raw = b"\xff\xfe\xe9t\xe9"
    for scheme in SCHEMES:
        for name in sign(scheme, body, key_of(scheme)):
            headers = [
                (k.encode(), v.encode() + raw if k == name else v.encode())
                for k, v in sign(scheme, body, key_of(scheme)).items()
            ]
            answer = await team.mallory.post(hooks[scheme]["url"], content=body, headers=headers)
            assert answer.status_code == 401, (scheme, name, answer.text)
            assert VOCABULARY.fullmatch(answer.json()["message"]), answer.text
    assert await runs_of(team.olive) == []


async def test_over_the_rate_limit_is_429_with_retry_after(team: Team) -> None:
    workflow_id = await workflow(team.olive)
    everyone = await webhook(team.olive, workflow_id, scheme="none", rate_limit="2/minute")
    each = await webhook(
        team.olive, workflow_id, name="each", scheme="none", ip_rate_limit="1/minute"
    )
    answers = [await team.mallory.post(everyone["url"], content=b"{}") for _ in range(2)]
    answers.append(await team.vic.post(everyone["url"], content=b"{}"))  # all senders count
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert 1 <= int(answers[-1].headers["retry-after"]) <= 60
    assert answers[-1].json()["error"] == "too_many_requests"
    assert (await team.mallory.post(each["url"], content=b"{}")).status_code == 202
    again = await team.mallory.post(each["url"], content=b"{}")
    assert again.status_code == 429 and 1 <= int(again.headers["retry-after"]) <= 60
    assert (await team.vic.post(each["url"], content=b"{}")).status_code == 202  # own budget
    runs = await runs_of(team.olive)
    assert len(runs) == 4
    for run in runs:
        await finished(team.olive, run["id"])


async def test_after_30_failed_authentications_an_address_is_refused_before_verification(
    team: Team,
) -> None:
    workflow_id = await workflow(team.olive)
    await secret(team.olive)
    hook = await webhook(
        team.olive, workflow_id, scheme="hmac_sha256", secret_credential="hook-secret"
    )
    body = body_of(1)
    for _ in range(30):
        failed = await team.mallory.post(
            hook["url"], content=body, headers=sign("hmac_sha256", body, "guess")
        )
        assert failed.status_code == 401
    valid = await team.mallory.post(hook["url"], content=body, headers=sign("hmac_sha256", body))
    assert valid.status_code == 429, valid.text
    assert 1 <= int(valid.headers["retry-after"]) <= 60
    # Refused before its body is even read: an oversized body is not a 413.
    huge = await team.mallory.post(hook["url"], content=b"x" * (2 * 2**20))
    assert huge.status_code == 429
    assert await runs_of(team.olive) == []
    elsewhere = await team.vic.post(hook["url"], content=body, headers=sign("hmac_sha256", body))
    assert elsewhere.status_code == 202, elsewhere.text
    await finished(team.olive, elsewhere.json()["run_id"])


async def test_failed_authentications_are_audited_once_in_aggregate(team: Team) -> None:
    workflow_id = await workflow(team.olive)
    await secret(team.olive)
    hook = await webhook(
        team.olive, workflow_id, scheme="hmac_sha256", secret_credential="hook-secret"
    )
    body = body_of(1)
    primed = await team.vic.post(hook["url"], content=body, headers=sign("hmac_sha256", body))
    assert primed.status_code == 202
    await finished(team.olive, primed.json()["run_id"])
    audit = services(team.olive).audit
    head = await audit.head()
    for _ in range(4):
        bad = await team.mallory.post(
            hook["url"], content=body, headers=sign("hmac_sha256", body, "x")
        )
        assert bad.status_code == 401
    assert (await team.mallory.post(hook["url"], content=body)).status_code == 401
    assert await audit.head() == head  # nothing per request

    await services(team.olive).webhooks.report_failures()
    await services(team.olive).webhooks.report_failures()  # nothing new: nothing written
    records = list(await audit.events(after=head))
    assert [(r.action, r.target, r.outcome) for r in records] == [
        ("webhook.auth_failed", hook["id"], "denied")
    ]
    details = json.loads(records[0].details)
    assert details == {
        "count": 5,
        "reasons": {"signature does not match": 4, "missing X-Hub-Signature-256 header": 1},
        "addresses": ["198.51.100.10"],
    }


async def test_during_the_rotation_grace_old_and_new_secrets_work_and_without_it_only_new(
    team: Team,
) -> None:
    workflow_id = await workflow(team.olive)
    credential = await secret(team.olive)
    graceful = await webhook(
        team.olive, workflow_id, scheme="hmac_sha256", secret_credential="hook-secret"
    )
    strict = await webhook(
        team.olive,
        workflow_id,
        name="strict",
        scheme="hmac_sha256",
        secret_credential="hook-secret",
        rotation_grace_seconds=0,
    )
    # No delivery before the rotation: nothing of the old secret is cached in the process.
    rotated = await team.olive.post(
        f"/api/v1/credentials/{credential['id']}/rotate", json={"fields": {"value": NEW_SECRET}}
    )
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["version"] == 2
    body = body_of(1)
    outcomes = {
        (name, key): (
            await team.mallory.post(
                hook["url"], content=body, headers=sign("hmac_sha256", body, key)
            )
        ).status_code
        for name, hook in (("graceful", graceful), ("strict", strict))
        for key in (SECRET, NEW_SECRET)
    }
    assert outcomes == {
        ("graceful", SECRET): 202,
        ("graceful", NEW_SECRET): 202,
        ("strict", SECRET): 401,
        ("strict", NEW_SECRET): 202,
    }
    for run in await runs_of(team.olive):
        await finished(team.olive, run["id"])


# -- configuration -------------------------------------------------------------------------


async def test_a_webhook_with_a_scheme_fails_closed_without_an_existing_secret_credential(
    team: Team,
) -> None:
    workflow_id = await workflow(team.olive)
    await secret(team.olive)
    for settings, words in (
        ({"scheme": "hmac_sha256"}, "needs secret_credential"),
        ({"scheme": "stripe", "secret_credential": "nope"}, "no credential named 'nope'"),
        (
            {"scheme": "slack", "secret_credential": "hook-secret", "secret_field": "token"},
            "has no field 'token'",
        ),
    ):
        answer = await add_trigger(team.olive, workflow_id, settings=settings)
        assert answer.status_code == 400, answer.text
        assert words in answer.json()["message"]
    assert (await team.olive.get(f"/api/v1/workflows/{workflow_id}/triggers")).json() == []
    off = await add_trigger(team.olive, workflow_id, enabled=False, settings={"scheme": "stripe"})
    assert off.status_code == 201, off.text
    url = f"/api/v1/workflows/{workflow_id}/triggers/{off.json()['id']}"
    enabling = await team.olive.patch(url, json={"enabled": True})
    assert enabling.status_code == 400 and "needs secret_credential" in enabling.text
    assert (await team.olive.get(url)).json()["enabled"] is False
    fixed = await team.olive.patch(
        url,
        json={
            "enabled": True,
            "settings": {"scheme": "stripe", "secret_credential": "hook-secret"},
        },
    )
    assert fixed.status_code == 200 and fixed.json()["enabled"] is True


async def test_scheme_none_must_be_explicit_is_marked_insecure_and_no_answer_has_the_secret(
    team: Team,
) -> None:
    workflow_id = await workflow(team.olive)
    await secret(team.olive)
    implicit = await add_trigger(team.olive, workflow_id, settings={})
    assert implicit.status_code == 400 and "scheme" in implicit.json()["message"]
    open_hook = await webhook(team.olive, workflow_id, name="open", scheme="none")
    assert open_hook["insecure"] is True
    signed = await add_trigger(
        team.olive,
        workflow_id,
        settings={"scheme": "hmac_sha256", "secret_credential": "hook-secret"},
    )
    assert signed.status_code == 201 and signed.json()["insecure"] is False
    base = f"/api/v1/workflows/{workflow_id}/triggers"
    answers = [
        signed,
        await team.olive.get(base),
        await team.vic.get(base),
        await team.olive.get(f"{base}/{signed.json()['id']}"),
        await team.olive.patch(f"{base}/{signed.json()['id']}", json={"name": "renamed"}),
        await team.olive.get(base),
    ]
    for answer in answers:
        assert answer.status_code == 200 or answer.status_code == 201, answer.text
        assert SECRET not in answer.text and "Secret to Everybody" not in answer.text
    listed = {t["name"]: t for t in answers[-1].json()}
    assert listed["open"]["insecure"] is True and listed["renamed"]["insecure"] is False
    assert listed["renamed"]["settings"]["secret_credential"] == "hook-secret"


# -- the health guard ------------------------------------------------------------------


async def test_an_unhealthy_credential_blocks_webhook_and_manual_runs_with_422(
    team: Team,
) -> None:
    graph = {
        "nodes": [
            {
                "id": "call",
                "type": "http_request",
                "params": {
                    "method": "GET",
                    "url": "https://example.invalid/",
                    "headers": {"Authorization": "Bearer {{ credentials.upstream.value }}"},
                },
            }
        ]
    }
    workflow_id = await workflow(team.olive, graph=graph)
    await secret(team.olive)
    await secret(team.olive, "upstream", "upstream-token")
    hook = await webhook(
        team.olive, workflow_id, scheme="hmac_sha256", secret_credential="hook-secret"
    )
    # Before any run is attempted, so the gate has no cached verdict yet.
    sql(team, "UPDATE credentials SET health='unhealthy' WHERE name='upstream'")
    body = body_of(1)
    headers = sign("hmac_sha256", body, event_id="d-1")
    delivery = await team.mallory.post(hook["url"], content=body, headers=headers)
    assert delivery.status_code == 422, delivery.text
    assert delivery.json()["credentials"] == ["upstream"]
    runs_url = f"/api/v1/workflows/{workflow_id}/runs"
    manual = await team.olive.post(runs_url, json={"input": {}})
    assert manual.status_code == 422 and manual.json()["credentials"] == ["upstream"]
    batch = await team.olive.post(runs_url + ":batch", json={"runs": [{}, {}]})
    assert batch.status_code == 422 and batch.json()["credentials"] == ["upstream"]
    assert await runs_of(team.olive) == []

    sql(team, "UPDATE credentials SET health='healthy' WHERE name='upstream'")
    await asyncio.sleep(gate.HEALTH_TTL_SECONDS + 0.05)  # the gate's cached verdict expires
    # The refused delivery did not use up its event id: the sender's retry starts the run.
    retried = await team.mallory.post(hook["url"], content=body, headers=headers)
    assert retried.status_code == 202, retried.text
    assert [r["id"] for r in await runs_of(team.olive)] == [retried.json()["run_id"]]
    await finished(team.olive, retried.json()["run_id"])


# -- manual runs and batches -------------------------------------------------------------


async def test_a_manual_run_records_its_reason_and_actor_and_targets_only_its_own_versions(
    team: Team,
) -> None:
    mine = await workflow(team.olive, "mine")
    theirs = await workflow(team.olive, "theirs")
    added = await team.olive.post(
        f"/api/v1/workflows/{theirs}/versions", json={"graph": HOOK_GRAPH}
    )
    assert added.json()["version"] == 2
    url = f"/api/v1/workflows/{mine}/runs"
    for version in (2, 99):  # 2 is another workflow's version
        answer = await team.olive.post(url, json={"input": {}, "version": version})
        assert answer.status_code == 404, answer.text
        batch = await team.olive.post(url + ":batch", json={"runs": [{"version": version}]})
        assert batch.status_code == 404, batch.text
    assert await runs_of(team.olive) == []
    started = await team.olive.post(
        url, json={"input": {"body": {"n": 5}}, "version": 1, "reason": "  backfill #42 "}
    )
    assert started.status_code == 202, started.text
    run = await finished(team.olive, started.json()["id"])
    assert (run["reason"], run["actor"], run["trigger"]) == ("backfill #42", "user:olive", "manual")
    assert (run["version"], run["output"]) == (1, {"n": 5})
    [audited] = await audit_events(team.olive, "run.start")
    assert audited["target"] == run["id"] and audited["actor"] == "user:olive"
    assert audited["reason"] == "backfill #42" and audited["trigger"] == "manual"


async def test_a_batch_of_1_to_100_runs_is_created_whole_and_0_or_101_is_422(
    team: Team,
) -> None:
    workflow_id = await workflow(team.olive)
    url = f"/api/v1/workflows/{workflow_id}/runs:batch"
    for size in (0, 101):
        refused = await team.olive.post(url, json={"runs": [{}] * size})
        assert refused.status_code == 422, (size, refused.text)
    one = await team.olive.post(
        url, json={"runs": [{"input": {"body": {"n": 1}}, "reason": "one"}]}
    )
    assert one.status_code == 202, one.text
    assert [r["reason"] for r in one.json()] == ["one"]
    hundred = await team.olive.post(
        url, json={"runs": [{"input": {"body": {"n": n}}} for n in range(100)]}
    )
    assert hundred.status_code == 202, hundred.text
    assert [r["input"]["body"]["n"] for r in hundred.json()] == list(range(100))
    assert all(r["actor"] == "user:olive" for r in hundred.json())
    runs = await runs_of(team.olive)
    assert len(runs) == 101
    assert {r["id"] for r in runs} == {r["id"] for r in [*one.json(), *hundred.json()]}
    for run in runs:
        await finished(team.olive, run["id"])


async def test_a_batch_with_one_bad_item_creates_none(team: Team) -> None:
    workflow_id = await workflow(team.olive)
    url = f"/api/v1/workflows/{workflow_id}/runs:batch"
    good = [{"input": {"n": 1}}, {"input": {"n": 2}}]
    bad_version = await team.olive.post(url, json={"runs": [*good, {"version": 9}, {}]})
    assert bad_version.status_code == 404, bad_version.text
    oversized = await team.olive.post(
        url, json={"runs": [*good, {"input": {"x": "y" * (1024 * 1024 + 1)}}, {}]}
    )
    assert oversized.status_code == 400 and "run input exceeds" in oversized.json()["message"]
    assert await runs_of(team.olive) == []
    assert await audit_events(team.olive, "run.start") == []


async def test_viewers_cannot_start_runs_and_outsiders_do_not_see_the_workflow(
    team: Team,
) -> None:
    workflow_id = await workflow(team.olive)
    url = f"/api/v1/workflows/{workflow_id}/runs"
    for client, status in ((team.vic, 403), (team.mallory, 404)):
        assert (await client.post(url, json={"input": {}})).status_code == status
        assert (await client.post(url + ":batch", json={"runs": [{}]})).status_code == status
    assert await runs_of(team.olive) == []


# -- retry policies and trigger CRUD ---------------------------------------------------------


async def test_a_retry_policy_is_put_read_and_deleted_by_editors_within_bounds(
    team: Team,
) -> None:
    workflow_id = await workflow(team.olive)
    url = f"/api/v1/workflows/{workflow_id}/retry-policy"
    assert (await team.olive.get(url)).status_code == 404
    for body in (
        {"max_attempts": 0},
        {"max_attempts": 101},
        {"max_attempts": 3, "initial_delay_seconds": 60, "max_delay_seconds": 30},
        {"max_attempts": 3, "retry_on": []},
        {"max_attempts": 3, "surprise": True},
    ):
        refused = await team.olive.put(url, json=body)
        assert refused.status_code == 422, (body, refused.text)
    assert (await team.olive.get(url)).status_code == 404
    policy = {"max_attempts": 50, "initial_delay_seconds": 1.5, "max_delay_seconds": 60}
    stored = await team.olive.put(url, json=policy)
    assert stored.status_code == 200, stored.text
    read = await team.vic.get(url)
    assert read.status_code == 200
    assert {**read.json(), "retry_on": sorted(read.json()["retry_on"])} == {
        **stored.json(),
        "retry_on": sorted(stored.json()["retry_on"]),
    }
    assert {k: read.json()[k] for k in policy} == policy
    assert (await team.vic.put(url, json={"max_attempts": 1})).status_code == 403
    assert (await team.vic.delete(url)).status_code == 403
    assert (await team.mallory.get(url)).status_code == 404
    assert (await team.olive.get(url)).json()["max_attempts"] == 50
    assert (await team.olive.delete(url)).status_code == 204
    assert (await team.olive.get(url)).status_code == 404
    assert (await team.olive.delete(url)).status_code == 404


async def test_triggers_are_listed_edited_and_deleted_within_their_workflow_and_audited(
    team: Team,
) -> None:
    workflow_id = await workflow(team.olive, graph=HOOK_GRAPH)
    other_id = await workflow(team.olive, "other")
    base = f"/api/v1/workflows/{workflow_id}/triggers"
    hook = await webhook(team.olive, workflow_id, scheme="none")
    assert hook["url"] == f"/hooks/{hook['id']}" and hook["version"] is None
    assert hook["created_by"] == "user:olive"
    assert (await team.vic.get(base)).json() == [hook]
    assert (await team.vic.get(f"{base}/{hook['id']}")).json() == hook
    assert (
        await add_trigger(team.vic, workflow_id, name="v", settings={"scheme": "none"})
    ).status_code == 403
    assert (await team.vic.patch(f"{base}/{hook['id']}", json={"name": "x"})).status_code == 403
    assert (await team.mallory.get(base)).status_code == 404
    assert (
        await add_trigger(team.olive, workflow_id, settings={"scheme": "none"})
    ).status_code == 409

    elsewhere = f"/api/v1/workflows/{other_id}/triggers/{hook['id']}"
    assert (await team.olive.get(elsewhere)).status_code == 404
    assert (await team.olive.patch(elsewhere, json={"name": "x"})).status_code == 404
    assert (await team.olive.delete(elsewhere)).status_code == 404

    url = f"{base}/{hook['id']}"
    renamed = await team.olive.patch(url, json={"name": "renamed"})
    assert renamed.status_code == 200 and renamed.json()["name"] == "renamed"
    await team.olive.post(f"/api/v1/workflows/{workflow_id}/versions", json={"graph": ECHO_BODY})
    assert (await team.olive.patch(url, json={"version": 9})).status_code == 404
    pinned = await team.olive.patch(url, json={"version": 1})
    assert pinned.status_code == 200 and pinned.json()["version"] == 1
    delivered = await team.mallory.post(hook["url"], content=body_of(8))
    run = await finished(team.olive, delivered.json()["run_id"])
    assert (run["version"], run["output"]) == (1, {"n": None})  # v1 reads input.n
    unpinned = await team.olive.patch(url, json={"unpin_version": True})
    assert unpinned.status_code == 200 and unpinned.json()["version"] is None
    delivered = await team.mallory.post(hook["url"], content=body_of(8))
    run = await finished(team.olive, delivered.json()["run_id"])
    assert (run["version"], run["output"]) == (2, {"n": 8})
    disabled = await team.olive.patch(url, json={"enabled": False})
    assert disabled.json()["enabled"] is False and disabled.json()["name"] == "renamed"
    assert (await team.mallory.post(hook["url"], content=b"{}")).status_code == 404

    assert (await team.olive.delete(url)).status_code == 204
    assert (await team.olive.get(url)).status_code == 404
    assert (await team.olive.get(base)).json() == []
    assert (await team.olive.delete(url)).status_code == 404
    audited = {
        action: [e["target"] for e in await audit_events(team.olive, action)]
        for action in ("trigger.create", "trigger.update", "trigger.delete")
    }
    assert audited == {
        "trigger.create": [hook["id"]],
        "trigger.update": [hook["id"]] * 4,
        "trigger.delete": [hook["id"]],
    }
