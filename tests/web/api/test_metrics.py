"""/metrics lives outside /api/v1 but is guarded like it; the API actors sign in here."""

from __future__ import annotations

from tests.web.api.conftest import Actors


async def test_an_administrator_reads_the_metrics(actors_with_admin: Actors) -> None:
    shown = await actors_with_admin.charlie.http.get("/metrics")
    assert shown.status_code == 200
    assert "bastion_audit_export_lag" in shown.text
    assert shown.headers["content-type"].startswith("text/plain")


async def test_others_are_refused(actors: Actors) -> None:
    assert (await actors.alice.http.get("/metrics")).status_code == 403
    actors.alice.http.cookies.clear()
    assert (await actors.alice.http.get("/metrics")).status_code == 401
