from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from bastion.audit.log import AuditLog
from bastion.audit.verify import verify
from bastion.crypto.errors import DecryptionFailed
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db.tables import Credential, CredentialField
from bastion.errors import InvalidInput, PermissionDenied
from bastion.vault.credentials import Vault, VaultLimits
from bastion.vault.errors import CredentialBlocked, DuplicateName, OutOfScope, SameMaterial
from bastion.vault.policy import ScopePolicy
from bastion.vault.secret import Secret
from tests.vault.conftest import OTHER, editor, owner, run, viewer

LOGIN = {"username": Secret("svc-deploy"), "password": Secret("hunter2-but-longer")}


async def create(vault: Vault, name: str = "deploy", **kwargs: object) -> Credential:
    return await vault.create(owner(), name=name, kind="secret", fields=LOGIN, **kwargs)  # type: ignore[arg-type]


async def stored_versions(db: Database, credential_id: str) -> list[int]:
    """The versions whose encrypted fields are still in the database."""
    async with db.session() as session:
        rows = await session.scalars(
            select(CredentialField.version)
            .where(CredentialField.credential_id == credential_id)
            .distinct()
        )
        return sorted(rows)


async def actions(audit: AuditLog) -> list[tuple[str, str]]:
    return [(e.action, e.outcome) for e in await audit.events()]


async def test_created_credentials_are_described_without_secret_material(vault: Vault) -> None:
    credential = await create(vault)
    described = await vault.describe(viewer(), credential.id)
    assert described.name == "deploy" and described.version == 1 and described.health == "unknown"
    assert await vault.field_names(credential.id, 1) == ["password", "username"]
    assert "hunter2" not in repr(vars(described))


async def test_the_database_holds_no_plaintext(vault: Vault, db: Database) -> None:
    credential = await create(vault)
    async with db.session() as session:
        rows = (await session.scalars(select(CredentialField))).all()
    assert rows and all(b"hunter2" not in row.ciphertext + row.wrapped_key for row in rows)
    assert all(row.credential_id == credential.id for row in rows)


async def test_reveal_needs_a_reason_and_is_audited(vault: Vault, audit: AuditLog) -> None:
    credential = await create(vault)
    with pytest.raises(InvalidInput, match="reason"):
        await vault.reveal(owner(), credential.id, reason=" ")
    fields = await vault.reveal(owner(), credential.id, reason="incident 42")
    assert fields["password"].reveal() == "hunter2-but-longer"
    last = (await audit.events())[-1]
    assert (last.action, last.reason, last.actor) == (
        "credential.reveal",
        "incident 42",
        "user:olive",
    )
    assert "hunter2" not in last.details


async def test_reveal_is_refused_to_roles_without_the_permission(
    vault: Vault, audit: AuditLog
) -> None:
    credential = await create(vault)
    with pytest.raises(PermissionDenied):
        await vault.reveal(editor(), credential.id, reason="curious")
    assert (await actions(audit))[-1] == ("credential.reveal", "denied")


async def test_use_outside_the_scope_is_refused_and_audited(vault: Vault, audit: AuditLog) -> None:
    credential = await create(vault, policy=ScopePolicy(workflows=("wf-deploy",)))
    assert (await vault.resolve(run("wf-deploy"), credential.id))[
        "username"
    ].reveal() == "svc-deploy"
    with pytest.raises(OutOfScope, match="workflow"):
        await vault.resolve(run("wf-other"), credential.id)
    with pytest.raises(OutOfScope, match="workspace"):
        await vault.resolve(run("wf-deploy", OTHER), credential.id)
    assert (await actions(audit))[-3:] == [
        ("credential.use", "success"),
        ("credential.use", "denied"),
        ("credential.use", "denied"),
    ]


async def test_a_shared_workspace_may_use_it(vault: Vault) -> None:
    credential = await create(vault, policy=ScopePolicy(workspaces=(OTHER,)))
    assert await vault.resolve(run("wf", OTHER), credential.id)


async def test_roles_in_the_policy_narrow_who_may_touch_it(vault: Vault) -> None:
    credential = await create(vault, policy=ScopePolicy(roles=("owner",)))
    with pytest.raises(OutOfScope, match="role"):
        await vault.describe(viewer(), credential.id)
    assert [c.name for c in await vault.list_in_scope(viewer())] == []
    assert [c.name for c in await vault.list_in_scope(owner())] == ["deploy"]


async def test_names_are_unique_per_workspace(vault: Vault) -> None:
    await create(vault)
    with pytest.raises(DuplicateName):
        await create(vault)
    await vault.create(owner(OTHER), name="deploy", kind="secret", fields=LOGIN)


async def test_rotation_to_the_same_value_is_refused(vault: Vault) -> None:
    credential = await create(vault)
    with pytest.raises(SameMaterial):
        await vault.rotate(owner(), credential.id, dict(LOGIN))


async def test_rotation_increments_the_version_resets_health_and_keeps_the_old_version(
    vault: Vault, db: Database
) -> None:
    credential = await create(vault)
    await vault.set_health(credential.id, "unhealthy", "old password refused")
    rotated = await vault.rotate(
        owner(), credential.id, {**LOGIN, "password": Secret("a fresh password!")}
    )
    assert rotated.version == 2 and rotated.health == "unknown"
    assert await stored_versions(db, credential.id) == [1, 2]
    assert (await vault.resolve(run("wf"), credential.id))[
        "password"
    ].reveal() == "a fresh password!"
    async with db.session() as session:
        old = await session.scalar(
            select(CredentialField).where(CredentialField.version == 1).limit(1)
        )
    assert old is not None and old.retire_after is not None


async def test_versions_past_their_rollback_period_are_destroyed(
    db: Database, keyring: Keyring, audit: AuditLog
) -> None:
    vault = Vault(db, keyring, audit, VaultLimits(rollback=timedelta(seconds=-1)))
    credential = await create(vault)
    await vault.rotate(owner(), credential.id, {"token": Secret("second value")})
    await vault.rotate(owner(), credential.id, {"token": Secret("third value")})
    assert await stored_versions(db, credential.id) == [2, 3]  # 1 destroyed; 2 just replaced
    await vault.purge_retired()
    assert await stored_versions(db, credential.id) == [3]


async def test_deleting_destroys_the_data_keys(vault: Vault, db: Database) -> None:
    credential = await create(vault)
    await vault.delete(owner(), credential.id)
    async with db.session() as session:
        left = await session.scalar(select(func.count()).select_from(CredentialField))
    assert left == 0


async def test_an_unhealthy_credential_blocks_run_time_use(vault: Vault) -> None:
    credential = await create(vault)
    await vault.set_health(credential.id, "unhealthy", "provider said invalid_grant")
    with pytest.raises(CredentialBlocked, match="invalid_grant"):
        await vault.resolve(run("wf"), credential.id)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({}, "at least one"),
        ({"Bad Name": Secret("x")}, "field name"),
        ({"token": Secret("")}, "empty"),
        ({"token": Secret("x" * 70_000)}, "larger than"),
        ({"token": Secret("\udcff broken")}, "UTF-8"),
    ],
)
async def test_bad_material_is_refused_and_nothing_is_stored(
    vault: Vault, db: Database, fields: dict[str, Secret], message: str
) -> None:
    with pytest.raises(InvalidInput, match=message):
        await vault.create(owner(), name="bad", kind="secret", fields=fields)
    async with db.session() as session:
        assert await session.scalar(select(func.count()).select_from(Credential)) == 0


async def test_a_ciphertext_swapped_between_credentials_fails_to_decrypt(
    vault: Vault, db: Database
) -> None:
    first, second = await create(vault, "first"), await create(vault, "second")
    async with db.transaction() as session:
        a = await session.get(CredentialField, (first.id, 1, "password"))
        b = await session.get(CredentialField, (second.id, 1, "password"))
        assert a and b
        a.ciphertext, a.wrapped_key, a.kek_id = b.ciphertext, b.wrapped_key, b.kek_id
    with pytest.raises(DecryptionFailed):
        await vault.resolve(run("wf"), first.id)


async def test_every_operation_leaves_a_verifiable_audit_chain(
    vault: Vault, audit: AuditLog, db: Database, keyring: Keyring
) -> None:
    credential = await create(vault)
    await vault.reveal(owner(), credential.id, reason="check")
    await vault.rotate(owner(), credential.id, {"token": Secret("replacement value")})
    await vault.delete(owner(), credential.id)
    assert [a for a, _ in await actions(audit)] == [
        "credential.create",
        "credential.reveal",
        "credential.rotate",
        "credential.delete",
    ]
    assert (await verify(db, keyring)).ok
