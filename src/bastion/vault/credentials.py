"""The credential vault: encrypted storage, scope checks and an audit record for each use.

Every operation takes an AccessContext and checks, in this order, the role permission,
then the credential's scope policy; a refusal is audited before it is raised. Secret
material only ever leaves as `Secret` values, and only through `reveal` (audited with a
reason) and `resolve` (run-time use, audited).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from bastion.accounts.rbac import Permission
from bastion.audit.chain import Event
from bastion.audit.log import AuditLog
from bastion.config import Settings
from bastion.crypto.envelope import Envelope, associated_data, open_envelope, seal
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db.tables import Credential, CredentialField
from bastion.db.types import utcnow
from bastion.errors import InvalidInput, PermissionDenied
from bastion.vault.errors import (
    CredentialBlocked,
    CredentialNotFound,
    DuplicateName,
    OutOfScope,
    SameMaterial,
)
from bastion.vault.policy import AccessContext, ScopePolicy
from bastion.vault.secret import Secret

KINDS = ("secret", "oauth2")
OAUTH_SECRET_FIELDS = ("client_secret", "refresh_token", "access_token")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
_FIELD = re.compile(r"[a-z][a-z0-9_]{0,63}")
MAX_FIELDS = 32


def in_scope(credential: Credential, context: AccessContext) -> bool:
    """Whether `context` may see `credential` at all (its scope policy, metadata only)."""
    policy = ScopePolicy.from_json(credential.policy)
    return policy.refusal(credential.workspace_id, context) is None


@dataclass(frozen=True)
class VaultLimits:
    max_secret_bytes: int = 64 * 1024
    rollback: timedelta = timedelta(days=30)

    @classmethod
    def of(cls, settings: Settings) -> VaultLimits:
        return cls(settings.vault_max_secret_bytes, timedelta(days=settings.vault_rollback_days))


def field_aad(credential_id: str, field: str, version: int) -> bytes:
    return associated_data("bastion credential", credential_id, field, str(version))


def _check_fields(fields: Mapping[str, Secret], limits: VaultLimits) -> None:
    if not fields:
        raise InvalidInput("a credential needs at least one secret field")
    if len(fields) > MAX_FIELDS:
        raise InvalidInput(f"at most {MAX_FIELDS} fields")
    for name, value in fields.items():
        if not _FIELD.fullmatch(name):
            raise InvalidInput(
                f"field name {name[:64]!r}: lower-case letters, digits and _, at most 64"
            )
        try:
            size = len(value.reveal().encode("utf-8"))
        except UnicodeEncodeError:
            raise InvalidInput(f"field {name!r} is not valid UTF-8 text") from None
        if size > limits.max_secret_bytes:
            raise InvalidInput(f"field {name!r} is larger than {limits.max_secret_bytes} bytes")
        if size == 0:
            raise InvalidInput(f"field {name!r} is empty")


def _check_settings(kind: str, settings: Mapping[str, Any], fields: Mapping[str, Secret]) -> None:
    if kind not in KINDS:
        raise InvalidInput(f"kind must be one of {', '.join(KINDS)}")
    if kind == "secret":
        if settings:
            raise InvalidInput("a secret credential takes no settings")
        return
    for key in ("token_url", "client_id"):
        if not isinstance(settings.get(key), str) or not settings[key]:
            raise InvalidInput(f"an oauth2 credential needs settings.{key}")
    if set(settings) - {"token_url", "client_id", "scope"}:
        raise InvalidInput("oauth2 settings are token_url, client_id and scope")
    if "client_secret" not in fields:
        raise InvalidInput("an oauth2 credential needs the field client_secret")
    if set(fields) - set(OAUTH_SECRET_FIELDS):
        raise InvalidInput(f"oauth2 fields are {', '.join(OAUTH_SECRET_FIELDS)}")


# Built once: composing a statement costs more than SQLite takes to run it.
_CURRENT_FIELDS = (
    select(Credential, CredentialField)
    .join(
        CredentialField,
        (CredentialField.credential_id == Credential.id)
        & (CredentialField.version == Credential.version),
    )
    .where(Credential.id == bindparam("credential_id"))
)


def _refusal(
    credential: Credential | None, context: AccessContext, permission: Permission | None
) -> str | None:
    if permission is not None and not context.may(permission):
        return f"needs the {permission.value} permission"
    if credential is not None:
        policy = ScopePolicy.from_json(credential.policy)
        return policy.refusal(credential.workspace_id, context)
    return None


class Vault:
    def __init__(
        self, db: Database, keyring: Keyring, audit: AuditLog, limits: VaultLimits = VaultLimits()
    ) -> None:
        self.db = db
        self.keyring = keyring
        self.audit = audit
        self.limits = limits

    # -- checks -------------------------------------------------------------------------

    async def authorize(
        self,
        credential: Credential | None,
        context: AccessContext,
        permission: Permission | None,
        action: str,
        target: str,
    ) -> None:
        """Role permission, then scope; a refusal is audited before it is raised."""
        refusal = _refusal(credential, context, permission)
        if refusal is not None:
            await self.deny(context, action, target, refusal, permission)

    async def deny(
        self,
        context: AccessContext,
        action: str,
        target: str,
        refusal: str,
        permission: Permission | None,
    ) -> NoReturn:
        await self.audit.record(self.event(action, context, target, "denied", refusal))
        if permission is not None and refusal.startswith("needs"):
            raise PermissionDenied(refusal)
        raise OutOfScope(refusal)

    def event(
        self,
        action: str,
        context: AccessContext,
        target: str,
        outcome: str = "success",
        reason: str = "",
        **details: Any,
    ) -> Event:
        return Event(
            action=f"credential.{action}",
            actor=context.actor,
            target=target,
            outcome=outcome,
            reason=reason,
            client_ip=context.client_ip,
            request_id=context.request_id,
            details={"workspace_id": context.workspace_id, **details},
        )

    async def load(self, session: AsyncSession, credential_id: str) -> Credential:
        credential = await session.get(Credential, credential_id)
        if credential is None:
            raise CredentialNotFound(f"no credential {credential_id[:40]!r}")
        return credential

    # -- encryption ---------------------------------------------------------------------

    def seal_fields(
        self, session: AsyncSession, credential_id: str, version: int, fields: Mapping[str, Secret]
    ) -> None:
        for name, value in fields.items():
            envelope = seal(
                self.keyring, value.reveal().encode(), field_aad(credential_id, name, version)
            )
            session.add(
                CredentialField(
                    credential_id=credential_id,
                    version=version,
                    name=name,
                    ciphertext=envelope.ciphertext,
                    wrapped_key=envelope.wrapped_key,
                    kek_id=envelope.kek_id,
                )
            )

    async def open_fields(
        self, session: AsyncSession, credential: Credential, version: int | None = None
    ) -> dict[str, Secret]:
        version = credential.version if version is None else version
        rows = await session.scalars(
            select(CredentialField).where(
                CredentialField.credential_id == credential.id, CredentialField.version == version
            )
        )
        return self._decrypt(rows)

    def _decrypt(self, rows: Iterable[CredentialField]) -> dict[str, Secret]:
        opened = {}
        for row in rows:
            envelope = Envelope(row.ciphertext, row.wrapped_key, row.kek_id)
            aad = field_aad(row.credential_id, row.name, row.version)
            opened[row.name] = Secret(open_envelope(self.keyring, envelope, aad).decode())
        return opened

    # -- operations ---------------------------------------------------------------------

    async def create(
        self,
        context: AccessContext,
        *,
        name: str,
        kind: str,
        fields: Mapping[str, Secret],
        settings: Mapping[str, Any] | None = None,
        policy: ScopePolicy = ScopePolicy(),
        description: str = "",
        rotation_period_days: int | None = None,
    ) -> Credential:
        await self.authorize(None, context, Permission.MANAGE_CREDENTIALS, "create", name)
        if not _NAME.fullmatch(name):
            raise InvalidInput("name: letters, digits, '.', '_' and '-', at most 100")
        settings = dict(settings or {})
        _check_settings(kind, settings, fields)
        _check_fields(fields, self.limits)
        if len(description) > 500:
            raise InvalidInput("description is longer than 500 characters")
        credential = Credential(
            id=uuid.uuid4().hex,
            workspace_id=context.workspace_id,
            name=name,
            kind=kind,
            description=description,
            version=1,
            policy=policy.to_json(),
            settings=json.dumps(settings, sort_keys=True),
            health="unknown",
            health_reason="",
            rotation_period_days=rotation_period_days,
            rotated_at=utcnow(),
            created_by=context.actor,
        )
        try:
            async with self.db.transaction() as session:
                session.add(credential)
                await session.flush()
                self.seal_fields(session, credential.id, 1, fields)
                await self.audit.append(
                    session,
                    self.event(
                        "create",
                        context,
                        credential.id,
                        name=name,
                        kind=kind,
                        fields=sorted(fields),
                    ),
                )
        except IntegrityError:
            raise DuplicateName(f"a credential named {name!r} exists in this workspace") from None
        return credential

    async def list_in_scope(self, context: AccessContext) -> Sequence[Credential]:
        """The workspace's credentials the context is in scope for (metadata only)."""
        if not context.may(Permission.READ):
            raise PermissionDenied("needs the read permission")
        async with self.db.session() as session:
            rows = await session.scalars(
                select(Credential)
                .where(Credential.workspace_id == context.workspace_id)
                .order_by(Credential.name)
            )
            return [c for c in rows if in_scope(c, context)]

    async def check(
        self,
        context: AccessContext,
        credential_id: str,
        permission: Permission | None,
        action: str,
    ) -> Credential:
        """Load and authorize outside any write transaction, so a refusal's audit record
        is not rolled back with it (nor waits on that transaction's lock)."""
        async with self.db.session() as session:
            credential = await self.load(session, credential_id)
        await self.authorize(credential, context, permission, action, credential_id)
        return credential

    async def workspace_of(self, credential_id: str) -> int:
        async with self.db.session() as session:
            return (await self.load(session, credential_id)).workspace_id

    async def id_named(self, workspace_id: int, name: str) -> str:
        """The id of the credential called `name` in a workspace (how workflows name them)."""
        async with self.db.session() as session:
            found = await session.scalar(
                select(Credential.id).where(
                    Credential.workspace_id == workspace_id, Credential.name == name
                )
            )
        if found is None:
            raise CredentialNotFound(f"no credential named {name[:100]!r} in this workspace")
        return found

    async def describe(self, context: AccessContext, credential_id: str) -> Credential:
        return await self.check(context, credential_id, Permission.READ, "describe")

    async def current_field_names(self, credential_id: str) -> list[str]:
        async with self.db.session() as session:
            rows = await session.scalars(
                select(CredentialField.name)
                .join(Credential, Credential.id == CredentialField.credential_id)
                .where(
                    Credential.id == credential_id,
                    CredentialField.version == Credential.version,
                )
            )
            return sorted(rows)

    async def field_names(self, credential_id: str, version: int) -> list[str]:
        async with self.db.session() as session:
            rows = await session.scalars(
                select(CredentialField.name).where(
                    CredentialField.credential_id == credential_id,
                    CredentialField.version == version,
                )
            )
            return sorted(rows)

    async def reveal(
        self, context: AccessContext, credential_id: str, *, reason: str
    ) -> dict[str, Secret]:
        reason = reason.strip()
        if not 3 <= len(reason) <= 500:
            raise InvalidInput("a reveal needs a reason (3 to 500 characters)")
        await self.check(context, credential_id, Permission.REVEAL_CREDENTIALS, "reveal")
        async with self.db.transaction() as session:
            credential = await self.load(session, credential_id)
            fields = await self.open_fields(session, credential)
            # Written in the same transaction before anything is returned: no audit
            # record, no plaintext.
            await self.audit.append(
                session,
                self.event("reveal", context, credential_id, reason=reason, name=credential.name),
            )
        return fields

    async def resolve(self, context: AccessContext, credential_id: str) -> dict[str, Secret]:
        """Run-time use by a workflow: scope-checked, blocked when unhealthy, audited."""
        return (await self.resolve_recent(context, credential_id, timedelta(0)))[0]

    async def resolve_recent(
        self, context: AccessContext, credential_id: str, grace: timedelta
    ) -> list[dict[str, Secret]]:
        """The current fields, plus the replaced version's when the rotation was less than
        `grace` ago (newest first): a verifier accepts both while senders switch over.

        The hot path of every run (through resolve, grace 0): one query for the credential
        and its current fields, the audit append, one transaction, all on one worker
        thread. A refusal leaves the transaction first, so its audit record is not rolled
        back with it.
        """

        def work(session: Session) -> list[dict[str, Secret]] | str:
            rows = session.execute(_CURRENT_FIELDS, {"credential_id": credential_id}).all()
            if not rows:
                raise CredentialNotFound(f"no credential {credential_id[:40]!r}")
            credential = rows[0][0]
            refusal = _refusal(credential, context, None)
            if refusal is not None:
                return refusal
            if credential.health == "unhealthy":
                raise CredentialBlocked(
                    f"credential {credential.name!r} is unhealthy: {credential.health_reason}"
                )
            versions = [self._decrypt(field for _, field in rows)]
            if credential.version > 1 and credential.rotated_at > utcnow() - grace:
                previous = session.scalars(
                    select(CredentialField).where(
                        CredentialField.credential_id == credential.id,
                        CredentialField.version == credential.version - 1,
                    )
                ).all()
                if previous:
                    versions.append(self._decrypt(previous))
            counted: dict[str, Any] = {"versions": len(versions)} if grace else {}
            event = self.event("use", context, credential_id, name=credential.name, **counted)
            self.audit.append_blocking(session, event)
            return versions

        outcome = await self.db.write_in_thread(work)
        if isinstance(outcome, str):
            await self.deny(context, "use", credential_id, outcome, None)
        return outcome

    async def rotate(
        self, context: AccessContext, credential_id: str, fields: Mapping[str, Secret]
    ) -> Credential:
        _check_fields(fields, self.limits)
        await self.check(context, credential_id, Permission.MANAGE_CREDENTIALS, "rotate")
        async with self.db.transaction() as session:
            credential = await self.load(session, credential_id)
            _check_settings(credential.kind, json.loads(credential.settings), fields)
            current = await self.open_fields(session, credential)
            if current.keys() == fields.keys() and all(
                current[name] == value for name, value in fields.items()
            ):
                raise SameMaterial("the new material is the same as the current one")
            now = utcnow()
            # Versions past their rollback period go; the one being replaced is kept.
            await self._purge(session, now, credential.id)
            for row in await session.scalars(
                select(CredentialField).where(
                    CredentialField.credential_id == credential.id,
                    CredentialField.version == credential.version,
                )
            ):
                row.retire_after = now + self.limits.rollback
            credential.version += 1
            credential.health, credential.health_reason = "unknown", ""
            credential.health_checked_at = None
            credential.rotated_at = now
            self.seal_fields(session, credential.id, credential.version, fields)
            await self.audit.append(
                session,
                self.event(
                    "rotate",
                    context,
                    credential_id,
                    name=credential.name,
                    version=credential.version,
                ),
            )
        return credential

    async def update(
        self,
        context: AccessContext,
        credential_id: str,
        *,
        description: str | None = None,
        policy: ScopePolicy | None = None,
        rotation_period_days: int | None = None,
    ) -> Credential:
        """Metadata only: the material changes through rotate()."""
        if description is not None and len(description) > 500:
            raise InvalidInput("description is longer than 500 characters")
        await self.check(context, credential_id, Permission.MANAGE_CREDENTIALS, "update")
        changed = []
        async with self.db.transaction() as session:
            credential = await self.load(session, credential_id)
            if description is not None:
                credential.description = description
                changed.append("description")
            if policy is not None:
                credential.policy = policy.to_json()
                changed.append("policy")
            if rotation_period_days is not None:
                credential.rotation_period_days = rotation_period_days
                changed.append("rotation_period_days")
            await self.audit.append(
                session,
                self.event("update", context, credential_id, name=credential.name, changed=changed),
            )
        return credential

    async def _purge(
        self, session: AsyncSession, now: datetime, credential_id: str | None = None
    ) -> None:
        query = delete(CredentialField).where(CredentialField.retire_after < now)
        if credential_id is not None:
            query = query.where(CredentialField.credential_id == credential_id)
        await session.execute(query)

    async def purge_retired(self, now: datetime | None = None) -> None:
        """Destroy every replaced version whose rollback period has passed."""
        async with self.db.transaction() as session:
            await self._purge(session, now or utcnow())

    async def delete(self, context: AccessContext, credential_id: str) -> None:
        await self.check(context, credential_id, Permission.MANAGE_CREDENTIALS, "delete")
        async with self.db.transaction() as session:
            credential = await self.load(session, credential_id)
            # The wrapped data keys go with the rows (SQLite overwrites them: secure_delete),
            # so the material cannot be recovered even with the master key.
            await session.execute(
                delete(CredentialField).where(CredentialField.credential_id == credential.id)
            )
            await session.delete(credential)
            await self.audit.append(
                session, self.event("delete", context, credential_id, name=credential.name)
            )

    async def set_health(
        self,
        credential_id: str,
        health: str,
        reason: str,
        *,
        now: datetime | None = None,
    ) -> None:
        async with self.db.transaction() as session:
            credential = await self.load(session, credential_id)
            credential.health, credential.health_reason = health, reason[:500]
            credential.health_checked_at = now or utcnow()
