"""Webhooks with real Database, AuditLog and Vault objects (SQLite and PostgreSQL): event-id
de-duplication, aggregated failure reports, pruning, and what a run gets of a request."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import delete, select

from bastion.db.tables import (
    Credential,
    Run,
    Trigger,
    WebhookDelivery,
)
from bastion.db.types import utcnow
from bastion.errors import NotFound, Unavailable
from bastion.triggers import signatures
from bastion.triggers.errors import SignatureInvalid
from bastion.triggers.store import ALWAYS_SCRUBBED, WebhookSettings
from bastion.triggers.webhook import (
    AUTH_FAILURES,
    DEDUP_RETENTION,
    Delivery,
    _Cache,
    _stored_request,
)
from tests.triggers.conftest import SECRET, Rig


def github(body: bytes, delivery_id: str | None = None, key: str = SECRET) -> dict[str, str]:
    headers = {
        "x-hub-signature-256": "sha256=" + hmac.new(key.encode(), body, hashlib.sha256).hexdigest()
    }
    return headers if delivery_id is None else {**headers, "x-github-delivery": delivery_id}


def delivery(
    trigger: Trigger, body: bytes, headers: dict[str, str], source_ip: str = "203.0.113.5"
) -> Delivery:
    return Delivery("POST", f"/hooks/{trigger.id}", [], headers, body, source_ip)


async def send(
    rig: Rig, trigger: Trigger, body: bytes, headers: dict[str, str], ip: str = "203.0.113.5"
) -> str:
    intake = await rig.webhooks.open(trigger.id, "POST", ip)
    return await rig.webhooks.accept(intake, delivery(trigger, body, headers, ip))


async def test_a_replayed_event_id_answers_with_the_original_run_and_stores_nothing_more(
    rig: Rig,
) -> None:
    hook = await rig.hook(scheme="hmac_sha256", secret_credential="hook-secret")
    body = b'{"n": 1}'
    first = await send(rig, hook, body, github(body, "d-1"))
    assert await send(rig, hook, body, github(body, "d-1")) == first
    assert await send(rig, hook, b'{"n": 2}', github(b'{"n": 2}', "d-1")) == first
    assert (await rig.count(Run), await rig.count(WebhookDelivery)) == (1, 1)
    other = await send(rig, hook, body, github(body, "d-2"))
    assert other != first
    anonymous = await send(rig, hook, body, github(body))  # no event id: never de-duplicated
    assert await send(rig, hook, body, github(body)) != anonymous
    assert (await rig.count(Run), await rig.count(WebhookDelivery)) == (4, 2)
    assert rig.executor.submitted[:2] == [first, other]  # a replay hands nothing over


async def test_failed_authentications_become_one_audit_record_per_trigger_when_reported(
    rig: Rig,
) -> None:
    busy = await rig.hook(scheme="hmac_sha256", secret_credential="hook-secret")
    quiet = await rig.hook("quiet", scheme="shared_secret", secret_credential="hook-secret")
    body = b"{}"
    head = await rig.audit.head()
    for n in range(25):
        with pytest.raises(SignatureInvalid):
            await send(rig, busy, body, github(body, key="guess"), ip=f"198.51.100.{n}")
    with pytest.raises(SignatureInvalid):
        await send(rig, busy, body, {}, ip="198.51.100.0")
    with pytest.raises(SignatureInvalid):
        await send(rig, quiet, body, {"x-webhook-secret": "guess"})
    # Fetching the secret once is audited (credential.use); no failure is, yet.
    assert {e.action for e in await rig.audit.events(after=head)} == {"credential.use"}
    head = await rig.audit.head()

    await rig.webhooks.report_failures()
    reported = {e.target: e for e in await rig.audit.events(after=head)}
    assert {e.action for e in reported.values()} == {"webhook.auth_failed"}
    assert set(reported) == {busy.id, quiet.id}
    details = json.loads(reported[busy.id].details)
    assert details["count"] == 26 and reported[busy.id].reason == "26 failed authentication(s)"
    assert details["reasons"] == {
        "signature does not match": 25,
        "missing X-Hub-Signature-256 header": 1,
    }
    assert len(details["addresses"]) == 20  # a bounded sample
    assert json.loads(reported[quiet.id].details) == {
        "count": 1,
        "reasons": {"secret does not match": 1},
        "addresses": ["203.0.113.5"],
    }
    head = await rig.audit.head()
    await rig.webhooks.report_failures()
    assert await rig.audit.head() == head  # counted failures are reported once


async def test_prune_forgets_event_ids_older_than_the_retention(rig: Rig) -> None:
    hook = await rig.hook(scheme="none", event_id_header="X-Event-Id")
    for event_id in ("old", "recent"):
        await send(rig, hook, b"{}", {"x-event-id": event_id})
    async with rig.db.transaction() as session:
        old = await session.get(WebhookDelivery, (hook.id, "old"))
        assert old is not None
        old.received_at = utcnow() - DEDUP_RETENTION - timedelta(minutes=1)
    await rig.webhooks.prune()
    async with rig.db.session() as session:
        kept = await session.scalars(select(WebhookDelivery.event_id))
        assert kept.all() == ["recent"]
    assert await rig.count(Run) == 2


async def test_an_unpaired_surrogate_in_a_json_body_is_stored_as_text_not_a_crash(
    rig: Rig,
) -> None:
    hook = await rig.hook(scheme="none")
    escaped = b'{"text": "\\ud800 and \\ud83d\\ude00"}'
    raw = b'{"text": "\xed\xa0\x80"}'  # the same surrogate as (CESU) bytes: json.loads takes it
    pair = b'{"text": "\\ud83d\\ude00"}'
    stored = {}
    for body in (escaped, raw, pair):
        run_id = await send(rig, hook, body, {})
        async with rig.db.session() as session:
            run = await session.get(Run, run_id)
            assert run is not None
            stored[body] = json.loads(run.input)
    assert stored[escaped]["body_text"] == escaped.decode()
    assert "body" not in stored[escaped]
    assert stored[raw]["body_base64"] == "eyJ0ZXh0IjogIu2ggCJ9"
    assert stored[pair]["body"] == {"text": "\N{GRINNING FACE}"}


async def test_an_overlong_trigger_id_is_not_found_and_caches_a_bounded_key(rig: Rig) -> None:
    for n in range(3):
        with pytest.raises(NotFound):
            await rig.webhooks.open(str(n) * 20_000, "POST", "203.0.113.5")
    cached = rig.webhooks._triggers._values
    assert cached and all(len(k) <= 64 for k in cached)


async def test_concurrent_deliveries_meeting_an_expired_entry_share_one_lookup(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = await rig.hook(scheme="hmac_sha256", secret_credential="hook-secret")
    lookups: list[str] = []
    get, id_named = rig.webhooks.triggers.get, rig.webhooks.vault.id_named

    async def counted_get(trigger_id: str) -> Trigger:
        lookups.append("trigger")
        return await get(trigger_id)

    async def counted_id_named(workspace_id: int, name: str) -> int:
        lookups.append("secret")
        return await id_named(workspace_id, name)

    monkeypatch.setattr(rig.webhooks.triggers, "get", counted_get)
    monkeypatch.setattr(rig.webhooks.vault, "id_named", counted_id_named)
    bodies = [json.dumps({"n": n}).encode() for n in range(20)]
    run_ids = await asyncio.gather(
        *(send(rig, trigger, body, github(body, f"evt-{n}")) for n, body in enumerate(bodies))
    )
    assert len(set(run_ids)) == 20
    assert sorted(lookups) == ["secret", "trigger"]


async def test_an_entry_forgotten_while_its_load_runs_is_loaded_again() -> None:
    cache = _Cache[int](ttl=60, max_entries=10)
    release = asyncio.Event()
    loads: list[int] = []

    async def load() -> int:
        n = len(loads) + 1
        loads.append(n)
        await release.wait()
        return n

    first = asyncio.create_task(cache.get("t", load))
    await asyncio.sleep(0)
    cache.forget("t")  # edited here while the old settings were being read
    second = asyncio.create_task(cache.get("t", load))
    await asyncio.sleep(0)
    release.set()
    assert await first == 1  # its own waiters get the answer they waited for
    assert await second == 2
    assert await cache.get("t", load) == 2  # the stale answer was never kept
    assert loads == [1, 2]


@pytest.mark.parametrize("scheme", signatures.SCHEMES)
def test_the_stored_request_keeps_no_header_that_carries_a_credential(scheme: str) -> None:
    settings = WebhookSettings(
        scheme=scheme,
        secret_header="X-Token",
        scrub_headers=["X-Api-Key"],
    )
    carriers = {
        *ALWAYS_SCRUBBED,
        *signatures.credential_headers(scheme, "x-token"),
        "x-api-key",
    }
    headers = {name: f"value of {name}" for name in carriers} | {"x-harmless": "kept"}
    request = Delivery("POST", "/hooks/t", [("a", "1")], headers, b"[1]", "203.0.113.5")
    stored = _stored_request(settings, request, "evt-1")
    assert stored["headers"] == {"x-harmless": "kept"}
    assert "value of" not in json.dumps(stored)
    assert (stored["body"], stored["query"], stored["event_id"]) == ([1], [["a", "1"]], "evt-1")


@pytest.mark.parametrize(
    ("body", "stored"),
    [
        (b"", {"body": None}),
        (b'{"n": 1}', {"body": {"n": 1}}),
        (b"[NaN]", {"body_text": "[NaN]"}),
        (b"a=1&b=2", {"body_text": "a=1&b=2"}),
        (b"\xff\xfe", {"body_base64": "//4="}),
        (b"[" * 100_000, {"body_text": "[" * 100_000}),
    ],
)
def test_a_body_is_stored_as_json_else_as_text_else_as_base64(
    body: bytes, stored: dict[str, Any]
) -> None:
    settings = WebhookSettings(scheme="none")
    request = Delivery("POST", "/hooks/t", [], {}, body, "203.0.113.5")
    kept = _stored_request(settings, request, None)
    assert {k: v for k, v in kept.items() if k.startswith("body")} == stored


async def test_a_secret_that_cannot_be_used_refuses_with_503_without_blaming_the_sender(
    rig: Rig,
) -> None:
    trigger = await rig.hook(scheme="hmac_sha256", secret_credential="hook-secret")
    async with rig.db.transaction() as session:  # the operator deleted it after enabling
        await session.execute(delete(Credential).where(Credential.name == "hook-secret"))
    for _ in range(40):  # more than AUTH_FAILURES allows one address
        with pytest.raises(Unavailable):
            await send(rig, trigger, b"{}", github(b"{}", "evt"))
    assert rig.webhooks._failures == {}  # nothing counted, nothing to report
    assert await rig.webhooks.limiter.test(AUTH_FAILURES, "hook-auth-failures", "203.0.113.5")
    assert await rig.count(Run) == 0
