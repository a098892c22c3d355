from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from bastion.audit.log import AuditLog
from bastion.db import Database
from bastion.db.tables import Credential, CredentialAlert
from bastion.db.types import utcnow
from bastion.vault import alerts
from bastion.vault.credentials import Vault
from bastion.vault.errors import CredentialBlocked
from bastion.vault.health import HealthChecker
from bastion.vault.secret import Secret
from tests.oauth_server import OAuthServer
from tests.vault.conftest import owner, run

CLIENT, CLIENT_SECRET = "bastion-client", "client secret value 123"


@pytest.fixture
def provider() -> Iterator[OAuthServer]:
    with OAuthServer(token_lifetime=3600) as server:
        server.register_client(CLIENT, CLIENT_SECRET, ["repo"])
        yield server


async def oauth_credential(vault: Vault, provider: OAuthServer, refresh_token: str) -> Credential:
    return await vault.create(
        owner(),
        name="github",
        kind="oauth2",
        settings={"token_url": provider.token_url, "client_id": CLIENT, "scope": "repo"},
        fields={"client_secret": Secret(CLIENT_SECRET), "refresh_token": Secret(refresh_token)},
    )


async def open_alerts(db: Database) -> list[str]:
    async with db.session() as session:
        rows = await session.scalars(
            select(CredentialAlert.kind).where(CredentialAlert.resolved_at.is_(None))
        )
        return sorted(rows)


async def test_a_refresh_stores_the_new_access_token_and_the_rotated_refresh_token(
    vault: Vault, provider: OAuthServer
) -> None:
    first = provider.issue_refresh_token(CLIENT, ["repo"])
    credential = await oauth_credential(vault, provider, first)
    tested = await HealthChecker(vault).test(owner(), credential.id)
    assert tested.health == "healthy" and tested.expires_at is not None
    fields = await vault.resolve(run("wf"), credential.id)
    assert provider.issued_access_token(fields["access_token"].reveal())
    assert fields["refresh_token"].reveal() != first
    assert not provider.is_live_refresh_token(first)  # the provider rotated it
    assert provider.is_live_refresh_token(fields["refresh_token"].reveal())


async def test_invalid_grant_marks_it_unhealthy_raises_one_alert_and_blocks_runs(
    vault: Vault, provider: OAuthServer, db: Database, audit: AuditLog
) -> None:
    token = provider.issue_refresh_token(CLIENT, ["repo"])
    credential = await oauth_credential(vault, provider, token)
    provider.revoke(token)
    checker = HealthChecker(vault)
    for _ in range(2):
        tested = await checker.test(owner(), credential.id)
    assert tested.health == "unhealthy" and "invalid_grant" in tested.health_reason
    assert await open_alerts(db) == ["validation_failed"]  # once, however often it fails
    with pytest.raises(CredentialBlocked):
        await vault.resolve(run("wf"), credential.id)
    last = (await audit.events())[-1]
    assert (last.action, last.outcome) == ("credential.refresh", "failure")
    assert token not in last.reason + last.details and CLIENT_SECRET not in last.details

    fresh = provider.issue_refresh_token(CLIENT, ["repo"])
    await vault.rotate(
        owner(),
        credential.id,
        {"client_secret": Secret(CLIENT_SECRET), "refresh_token": Secret(fresh)},
    )
    assert (await checker.test(owner(), credential.id)).health == "healthy"
    assert await open_alerts(db) == []  # resolved by itself


async def test_a_provider_outage_is_reported_without_secrets(
    vault: Vault, provider: OAuthServer
) -> None:
    token = provider.issue_refresh_token(CLIENT, ["repo"])
    credential = await oauth_credential(vault, provider, token)
    provider.unavailable = True
    tested = await HealthChecker(vault).test(owner(), credential.id)
    assert tested.health == "unhealthy" and "temporarily_unavailable" in tested.health_reason
    assert token not in tested.health_reason and CLIENT_SECRET not in tested.health_reason


async def test_the_sweep_refreshes_tokens_about_to_expire(
    vault: Vault, provider: OAuthServer
) -> None:
    credential = await oauth_credential(
        vault, provider, provider.issue_refresh_token(CLIENT, ["repo"])
    )
    checker = HealthChecker(vault, margin=timedelta(minutes=5))
    await checker.test(owner(), credential.id)
    before = provider.requests
    await checker.sweep()  # an hour left: nothing to do
    assert provider.requests == before
    await checker.sweep(now=utcnow() + timedelta(minutes=56))  # inside the margin
    assert provider.requests == before + 1


async def test_rotation_overdue_is_raised_once_acknowledged_and_resolved_by_rotating(
    vault: Vault, db: Database
) -> None:
    credential = await vault.create(
        owner(),
        name="db",
        kind="secret",
        fields={"password": Secret("initial password")},
        rotation_period_days=30,
    )
    checker = HealthChecker(vault)
    later = utcnow() + timedelta(days=31)
    await checker.sweep(now=later)
    await checker.sweep(now=later)
    assert await open_alerts(db) == ["rotation_overdue"]
    async with db.transaction() as session:
        [(alert, _)] = await alerts.list_alerts(session, [credential.workspace_id])
        acknowledged = await alerts.acknowledge(session, alert.id, "user:olive", [1])
        assert acknowledged.acknowledged_by == "user:olive"
    await vault.rotate(owner(), credential.id, {"password": Secret("rotated password")})
    await checker.sweep(now=utcnow() + timedelta(days=1))
    assert await open_alerts(db) == []
