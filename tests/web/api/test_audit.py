from __future__ import annotations

import json

from sqlalchemy import update

from bastion.db import Database
from bastion.db.tables import AuditEvent
from tests.web.api.conftest import Actors
from tests.web.conftest import make_settings


async def events(actors: Actors) -> list[dict[str, object]]:
    answer = await actors.charlie.http.get("/api/v1/audit/events?limit=1000")
    assert answer.status_code == 200, answer.text
    records: list[dict[str, object]] = answer.json()
    return records


async def test_sign_ins_are_audited_and_a_mistyped_username_only_as_its_hmac(
    actors_with_admin: Actors,
) -> None:
    typed = "my password typed as a username"
    actors_with_admin.alice.http.cookies.clear()  # signed out, trying again
    failed = await actors_with_admin.alice.sign_in(typed, "wrong password here")
    assert failed.status_code == 401
    records = await events(actors_with_admin)
    assert [r["actor"] for r in records if r["action"] == "auth.sign_in"][:2] == [
        "user:alice",
        "user:root",
    ]
    failure = [r for r in records if r["outcome"] == "failure"][-1]
    assert failure["actor"] == "anonymous"
    assert typed not in json.dumps(records)
    assert str(failure["details"]["username"]).startswith("hmac-sha256:")  # type: ignore[index]


async def test_only_administrators_read_and_verify_the_trail(actors_with_admin: Actors) -> None:
    alice = actors_with_admin.alice.http
    assert (await alice.get("/api/v1/audit/events")).status_code == 403
    assert (await alice.get("/api/v1/audit/verify")).status_code == 403
    verdict = await actors_with_admin.charlie.http.get("/api/v1/audit/verify")
    assert verdict.status_code == 200 and verdict.json()["ok"] is True


async def test_verify_names_a_tampered_record(
    actors_with_admin: Actors, base_env: dict[str, str]
) -> None:
    db = Database(make_settings(base_env).effective_database_url)
    try:
        async with db.transaction() as session:
            await session.execute(
                update(AuditEvent).where(AuditEvent.seq == 1).values(actor="user:mallory")
            )
    finally:
        await db.dispose()
    verdict = (await actors_with_admin.charlie.http.get("/api/v1/audit/verify")).json()
    assert verdict["ok"] is False and verdict["first_bad_seq"] == 1
