"""Webhooks with real Database, AuditLog and Vault objects (SQLite and PostgreSQL): event-id
de-duplication, aggregated failure reports, pruning, and what a run gets of a request."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from bastion.audit.log import AuditLog
from bastion.audit.verify import verify
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db.tables import AuditEvent, Run, Trigger, WebhookDelivery, Workflow, Workspace
from bastion.db.types import utcnow
from bastion.errors import NotFound
from bastion.execution.dispatcher import Dispatcher
from bastion.runs.ledger import Ledger
from bastion.stores import open_stores
from bastion.triggers import deliveries, signatures
from bastion.triggers.deliveries import store_deliveries
from bastion.triggers.errors import SignatureInvalid
from bastion.triggers.gate import Gate
from bastion.triggers.store import ALWAYS_SCRUBBED, Triggers, WebhookSettings
from bastion.triggers.webhook import DEDUP_RETENTION, Delivery, Webhooks, _stored_request
from bastion.vault.credentials import Vault
from bastion.vault.secret import Secret
from bastion.workflows import graph as graphs
from bastion.workflows.store import Workflows
from tests.vault.conftest import owner

SECRET = "It's a Secret to Everybody"
GRAPH = {"nodes": [{"id": "only", "type": "set", "params": {"values": {}}}]}


@dataclass
class Recorder:
    """The executor: records what it is handed (running runs is not under test here)."""

    name: str = "recorder"
    submitted: list[str] = field(default_factory=list)

    async def submit(self, run_id: str, workspace_id: int) -> None:
        self.submitted.append(run_id)

    def cancel(self, run_id: str) -> None:
        pass

    async def stop(self) -> None:
        pass


@dataclass
class Rig:
    db: Database
    audit: AuditLog
    webhooks: Webhooks
    triggers: Triggers
    workflow: Workflow
    executor: Recorder

    async def hook(self, name: str = "hook", **settings: Any) -> Trigger:
        return await self.triggers.create(
            self.workflow,
            kind="webhook",
            name=name,
            settings=WebhookSettings(**settings),
            enabled=True,
            version=None,
            actor="user:olive",
        )

    async def count(self, table: type[Run] | type[WebhookDelivery]) -> int:
        async with self.db.session() as session:
            return int(await session.scalar(select(func.count()).select_from(table)) or 0)


@pytest.fixture
async def rig(migrated_db: Database, keyring: Keyring) -> AsyncIterator[Rig]:
    db = migrated_db
    async with db.transaction() as session:
        session.add(Workspace(id=1, slug="ops", name="Ops"))
    audit = AuditLog(db, keyring)
    vault = Vault(db, keyring, audit)
    await vault.create(owner(), name="hook-secret", kind="secret", fields={"value": Secret(SECRET)})
    workflows = Workflows(db)
    workflow = await workflows.create(1, "wf", "", graphs.parse(GRAPH), "user:olive")
    executor = Recorder()
    dispatcher = Dispatcher(db, Ledger(db), executor, max_input_bytes=64 * 1024)
    triggers = Triggers(db)
    stores = open_stores(None)
    webhooks = Webhooks(Gate(dispatcher, audit), triggers, workflows, vault, stores.limiter, audit)
    yield Rig(db, audit, webhooks, triggers, workflow, executor)
    await stores.aclose()


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
    assert rig.webhooks._triggers and all(len(k) <= 64 for k in rig.webhooks._triggers)


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


async def test_concurrent_deliveries_commit_together_and_a_replay_in_the_same_batch_starts_nothing(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = await rig.hook(
        scheme="hmac_sha256",
        secret_credential="hook-secret",
        rate_limit="1000/minute",
        ip_rate_limit="1000/minute",
    )
    warm = await send(rig, trigger, b"{}", github(b"{}", "warm-up"))  # the secret is cached now
    batches = count_batches(monkeypatch)
    bodies = [json.dumps({"n": n}).encode() for n in range(20)]
    sends = [send(rig, trigger, body, github(body, f"evt-{n}")) for n, body in enumerate(bodies)]
    # The same event id twice more, arriving with the others (a sender retrying at once).
    sends += [send(rig, trigger, bodies[3], github(bodies[3], "evt-3")) for _ in range(2)]
    run_ids = await asyncio.gather(*sends)
    assert batches == [22]
    assert len(set(run_ids)) == 20
    assert run_ids[20] == run_ids[21] == run_ids[3]
    assert await rig.count(Run) == 21
    assert await rig.count(WebhookDelivery) == 21
    assert sorted(rig.executor.submitted) == sorted({warm, *run_ids})
    async with rig.db.session() as session:
        started = await session.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "run.start")
        )
    assert started == 21
    assert (await verify(rig.db, rig.audit.keyring)).ok


def count_batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch of deliveries written, in order."""
    batches: list[int] = []

    def counted(gate: Gate, session: Any, accepted: Any) -> list[str]:
        batches.append(len(accepted))
        return store_deliveries(gate, session, accepted)

    monkeypatch.setattr(deliveries, "store_deliveries", counted)
    return batches


async def test_a_delivery_that_cannot_be_stored_fails_alone_and_its_batch_still_commits(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = await rig.hook(scheme="hmac_sha256", secret_credential="hook-secret")
    good = [json.dumps({"n": n}).encode() for n in range(5)]
    # Run ids are unique: a colliding one makes its insert (and so its first batch) fail.
    taken = await send(rig, trigger, good[0], github(good[0], "first"))
    intake = await rig.webhooks.open(trigger.id, "POST", "203.0.113.5")
    real_build = rig.webhooks.gate.build

    def colliding(*args: Any, **kwargs: Any) -> Run:
        run = real_build(*args, **kwargs)
        if run.input and json.loads(run.input)["body"] == {"n": 4}:
            run.id = taken
        return run

    rig.webhooks.gate.build = colliding  # type: ignore[method-assign]
    batches = count_batches(monkeypatch)
    results = await asyncio.gather(
        *[
            rig.webhooks.accept(intake, delivery(trigger, body, github(body, f"evt-{n}")))
            for n, body in enumerate(good[1:], start=1)
        ],
        return_exceptions=True,
    )
    assert batches == [4, 1, 1, 1, 1]  # together first; after the failure, one by one
    assert [type(r) for r in results[:3]] == [str, str, str]
    assert isinstance(results[3], IntegrityError)
    assert await rig.count(Run) == 4
    assert await rig.count(WebhookDelivery) == 4
