"""Moving every wrapped data key onto the active master key (`bastion vault rekey`).

Only the wrapped data keys change: each field's data key is unwrapped with the old key
encryption key and wrapped again with the active one; the ciphertexts stay as they are.
The work runs in small batches, each its own short write transaction, so the server
keeps running meanwhile, and it is resumable: a field already on the active key is never
selected again, so a run that stopped half-way is simply started again. Once nothing is
left on an old key, that key can leave BASTION_MASTER_KEYS.

A field under a key the keyring does not know (or one that no longer opens) is counted
as unreadable and left as it is: the run moves everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field

from sqlalchemy import func, select, tuple_

from bastion.audit.chain import Event
from bastion.audit.log import AuditLog
from bastion.crypto.envelope import Envelope, rewrap
from bastion.crypto.errors import DecryptionFailed
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db.tables import CredentialField
from bastion.vault.credentials import field_aad

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class RekeyReport:
    active_id: str
    moved: int  # fields re-wrapped by this run
    moved_from: tuple[str, ...]  # the key ids they were moved off
    remaining: dict[str, int] = field(default_factory=dict)  # key id -> fields still on it
    unreadable: int = 0  # fields under an unknown key id, or whose data key would not open
    unknown_keys: tuple[str, ...] = ()  # key ids in use that the keyring does not hold

    @property
    def done(self) -> bool:
        """Nothing is left on an old key: they can all be removed."""
        return not self.remaining


async def remaining_by_key(db: Database, active_id: str) -> dict[str, int]:
    """How many fields are still under each key other than `active_id`."""
    async with db.session() as session:
        rows = await session.execute(
            select(CredentialField.kek_id, func.count())
            .where(CredentialField.kek_id != active_id)
            .group_by(CredentialField.kek_id)
        )
        return {kek_id: int(count) for kek_id, count in rows}


async def rekey(
    db: Database,
    keyring: Keyring,
    *,
    batch: int = 100,
    progress: Progress | None = None,
    audit: AuditLog | None = None,
) -> RekeyReport:
    """Re-wrap every field not on `keyring.active_id`; one audit record per run.

    `progress(done, total)` is called before the first batch and after each committed
    one; `total` counts the fields on old keys the keyring holds.
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    audit = audit or AuditLog(db, keyring)
    active = keyring.active_id
    old_ids = [key_id for key_id in keyring.key_ids if key_id != active]
    before = await remaining_by_key(db, active)
    total = sum(count for key_id, count in before.items() if key_id in old_ids)
    moved, damaged = 0, 0
    moved_from: set[str] = set()
    # Keyset pagination over the primary key: a field that fails to open is passed by,
    # not selected again in the next batch.
    last: tuple[str, int, str] | None = None

    def event(outcome: str = "success", reason: str = "") -> Event:
        return Event(
            "vault.rekey",
            actor="cli",
            outcome=outcome,
            reason=reason,
            details={"moved": moved, "from": sorted(moved_from), "to": active},
        )

    try:
        if progress is not None:
            progress(0, total)
        while old_ids:
            async with db.transaction() as session:
                query = select(CredentialField).where(CredentialField.kek_id.in_(old_ids))
                key = tuple_(
                    CredentialField.credential_id, CredentialField.version, CredentialField.name
                )
                if last is not None:
                    query = query.where(key > tuple_(*last))
                rows = (
                    await session.scalars(
                        query.order_by(
                            CredentialField.credential_id,
                            CredentialField.version,
                            CredentialField.name,
                        )
                        .limit(batch)
                        # PostgreSQL: a concurrent rotation or refresh waits for this batch.
                        .with_for_update()
                    )
                ).all()
                sources = []
                for row in rows:
                    aad = field_aad(row.credential_id, row.name, row.version)
                    envelope = Envelope(row.ciphertext, row.wrapped_key, row.kek_id)
                    try:
                        envelope = rewrap(keyring, envelope, aad)
                    except DecryptionFailed:
                        continue
                    sources.append(row.kek_id)
                    row.wrapped_key, row.kek_id = envelope.wrapped_key, envelope.kek_id
            # Counted once committed: the audit record states what really moved.
            if not rows:
                break
            last = (rows[-1].credential_id, rows[-1].version, rows[-1].name)
            moved += len(sources)
            damaged += len(rows) - len(sources)
            moved_from.update(sources)
            if progress is not None:
                done = moved + damaged
                progress(done, max(total, done))
            if len(rows) < batch:
                break
    except BaseException as exc:
        # What was committed before the interruption is on record; a re-run continues.
        reason = f"interrupted after {moved} fields: {type(exc).__name__}"
        with suppress(Exception):  # the interruption itself is what the caller must see
            await audit.record(event("failure", reason))
        raise
    await audit.record(event())
    remaining = await remaining_by_key(db, active)
    unknown = tuple(sorted(key_id for key_id in remaining if key_id not in old_ids))
    return RekeyReport(
        active_id=active,
        moved=moved,
        moved_from=tuple(sorted(moved_from)),
        remaining=remaining,
        unreadable=damaged + sum(remaining[key_id] for key_id in unknown),
        unknown_keys=unknown,
    )
