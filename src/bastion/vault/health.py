"""Validating credentials now, refreshing OAuth2 tokens, and keeping alerts in step.

A refresh runs under a per-credential lock and outside any database transaction (an
SQLite write lock must not be held across an HTTP call). If the provider refuses a
refresh token that another process has just replaced, the newer token wins: that is
not a failure of the credential.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict
from datetime import datetime, timedelta

import httpx
from sqlalchemy import delete, select

from bastion.accounts.rbac import Permission
from bastion.db.tables import Credential, CredentialField
from bastion.db.types import utcnow
from bastion.vault import alerts, oauth
from bastion.vault.credentials import Vault
from bastion.vault.policy import AccessContext
from bastion.vault.secret import Secret

logger = logging.getLogger("bastion.vault.health")
SYSTEM = AccessContext("system", 0, frozenset({"admin"}))


class HealthChecker:
    def __init__(
        self,
        vault: Vault,
        *,
        margin: timedelta = timedelta(minutes=5),
        http: httpx.AsyncClient | None = None,
    ) -> None:
        self.vault = vault
        self.margin = margin
        self.http = http
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    async def test(self, context: AccessContext, credential_id: str) -> Credential:
        """Validate now: decrypt every field; for OAuth2, obtain fresh tokens."""
        credential = await self.vault.check(
            context, credential_id, Permission.MANAGE_CREDENTIALS, "test"
        )
        if credential.kind == "oauth2":
            return await self.refresh(credential_id, context)
        async with self.vault.db.session() as session:
            await self.vault.open_fields(session, credential)
        return await self._settle(credential_id, context, "test", "healthy", "")

    async def refresh(self, credential_id: str, context: AccessContext = SYSTEM) -> Credential:
        async with self._locks[credential_id]:
            async with self.vault.db.session() as session:
                credential = await self.vault.load(session, credential_id)
                fields = await self.vault.open_fields(session, credential)
            settings = json.loads(credential.settings)
            try:
                tokens = await self._obtain(settings, fields)
            except oauth.OAuthError as exc:
                if exc.code == "invalid_grant" and await self._replaced(credential, fields):
                    return await self.vault.describe(SYSTEM, credential_id)
                return await self._settle(
                    credential_id, context, "refresh", "unhealthy", f"{exc.code}: {exc.reason}"
                )
            return await self._store_tokens(credential, context, tokens)

    async def _obtain(self, settings: dict[str, str], fields: dict[str, Secret]) -> oauth.TokenSet:
        url, client_id, scope = settings["token_url"], settings["client_id"], settings.get("scope")
        if "refresh_token" in fields:
            return await oauth.refresh(
                token_url=url,
                client_id=client_id,
                client_secret=fields["client_secret"],
                refresh_token=fields["refresh_token"],
                scope=scope,
                http=self.http,
            )
        return await oauth.client_credentials(
            token_url=url,
            client_id=client_id,
            client_secret=fields["client_secret"],
            scope=scope,
            http=self.http,
        )

    async def _replaced(self, credential: Credential, used: dict[str, Secret]) -> bool:
        async with self.vault.db.session() as session:
            fresh = await self.vault.load(session, credential.id)
            current = await self.vault.open_fields(session, fresh)
        return current.get("refresh_token") != used.get("refresh_token")

    async def _store_tokens(
        self, credential: Credential, context: AccessContext, tokens: oauth.TokenSet
    ) -> Credential:
        new = {"access_token": tokens.access_token}
        if tokens.refresh_token is not None:
            new["refresh_token"] = tokens.refresh_token
        now = utcnow()
        async with self.vault.db.transaction() as session:
            current = await self.vault.load(session, credential.id)
            await session.execute(
                delete(CredentialField).where(
                    CredentialField.credential_id == current.id,
                    CredentialField.version == current.version,
                    CredentialField.name.in_(list(new)),
                )
            )
            self.vault.seal_fields(session, current.id, current.version, new)
            current.expires_at = tokens.expires_at
            current.health, current.health_reason, current.health_checked_at = "healthy", "", now
            await alerts.sync(session, current, now, self.margin)
            await self.vault.audit.append(
                session,
                self.vault.event(
                    "refresh",
                    context,
                    current.id,
                    name=current.name,
                    expires_at=str(tokens.expires_at),
                ),
            )
        return current

    async def _settle(
        self, credential_id: str, context: AccessContext, action: str, health: str, reason: str
    ) -> Credential:
        now = utcnow()
        outcome = "success" if health == "healthy" else "failure"
        async with self.vault.db.transaction() as session:
            credential = await self.vault.load(session, credential_id)
            credential.health, credential.health_reason = health, reason[:500]
            credential.health_checked_at = now
            await alerts.sync(session, credential, now, self.margin)
            await self.vault.audit.append(
                session,
                self.vault.event(
                    action, context, credential_id, outcome, reason, name=credential.name
                ),
            )
        return credential

    async def sweep(self, now: datetime | None = None) -> None:
        """Refresh OAuth2 tokens about to expire; bring every credential's alerts up to date."""
        now = now or utcnow()
        async with self.vault.db.session() as session:
            due = (
                await session.scalars(
                    select(Credential.id).where(
                        Credential.kind == "oauth2",
                        Credential.expires_at.is_not(None),
                        Credential.expires_at <= now + self.margin,
                    )
                )
            ).all()
        for credential_id in due:
            try:
                await self.refresh(credential_id)
            except Exception:  # one bad credential must not stop the sweep for the rest
                logger.exception("refreshing credential %s failed", credential_id)
        await self.vault.purge_retired(now)
        async with self.vault.db.transaction() as session:
            for credential in await session.scalars(select(Credential)):
                await alerts.sync(session, credential, now, self.margin)
