from __future__ import annotations

from tests.web.api.conftest import Actors


async def test_only_an_admin_can_end_another_users_sessions(actors: Actors) -> None:
    # Charlie (no admin) tries to end Alice's sessions: refused, and Alice stays in.
    refused = await actors.charlie.http.delete(
        "/api/v1/users/1/sessions", headers={"x-csrf-token": actors.csrf["charlie"]}
    )
    assert refused.status_code == 403
    assert (await actors.alice.http.get("/")).status_code == 200


async def test_an_admin_ends_all_sessions_of_a_user(actors_with_admin: Actors) -> None:
    admin = actors_with_admin.charlie  # signed in as "root" here
    listed = await admin.http.get("/api/v1/users")
    alice_id = next(u["id"] for u in listed.json() if u["username"] == "alice")
    ended = await admin.http.delete(
        f"/api/v1/users/{alice_id}/sessions",
        headers={"x-csrf-token": actors_with_admin.csrf["charlie"]},
    )
    assert ended.status_code == 204
    assert (await actors_with_admin.alice.http.get("/")).status_code == 303
    assert (await admin.http.get("/")).status_code == 200
    missing = await admin.http.delete(
        "/api/v1/users/999/sessions", headers={"x-csrf-token": actors_with_admin.csrf["charlie"]}
    )
    assert missing.status_code == 404


async def test_the_console_bundle_is_for_signed_in_users_only(actors: Actors) -> None:
    inside = await actors.alice.http.get("/app/console.js")
    assert inside.status_code == 200
    assert inside.headers["content-type"].startswith("text/javascript")
    assert inside.headers["cache-control"] == "private, max-age=300"
    actors.alice.http.cookies.clear()
    outside = await actors.alice.http.get("/app/console.js")
    assert outside.status_code == 401
    assert "export" not in outside.text
