"""Checking the audit chain: every record against its HMAC, its predecessor and its seq."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select

from bastion.audit.chain import GENESIS, Checkpoint, record_hash
from bastion.audit.log import head_seq
from bastion.crypto.errors import UnknownKeyId
from bastion.crypto.keyring import Keyring, Purpose
from bastion.db import Database
from bastion.db.tables import AuditCursor, AuditEvent

BATCH = 2000


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int  # records read
    head: int  # highest seq in the store
    first_bad_seq: int | None = None
    problem: str = ""

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "head": self.head,
            "first_bad_seq": self.first_bad_seq,
            "problem": self.problem,
        }


async def verify(
    db: Database, keyring: Keyring, checkpoints: list[Checkpoint] | tuple[()] = ()
) -> Verdict:
    """Walk the whole chain; the first break is named by the seq where it shows.

    `checkpoints` (signed heads an exporter delivered) and the exporters' cursors are
    witnesses held outside the chain: a store whose head is behind them lost its tail.
    """
    expected_seq, prev_hash, checked = 1, GENESIS, 0
    witnessed = {point.seq: point.hash for point in checkpoints}
    async with db.session() as session:
        while True:
            query = select(AuditEvent).where(AuditEvent.seq >= expected_seq)
            rows = (await session.scalars(query.order_by(AuditEvent.seq).limit(BATCH))).all()
            for row in rows:
                checked += 1
                problem = _check(keyring, row, expected_seq, prev_hash)
                if problem:
                    bad = min(row.seq, expected_seq)  # a gap is named by the missing seq
                    return Verdict(False, checked, await head_seq(db), bad, problem)
                if row.seq in witnessed and witnessed[row.seq] != row.hash:
                    return Verdict(
                        False, checked, row.seq, row.seq, "differs from a signed checkpoint"
                    )
                expected_seq, prev_hash = row.seq + 1, row.hash
            if len(rows) < BATCH:
                break
        head = expected_seq - 1
        cursors = (await session.scalars(select(AuditCursor.seq))).all()
    witness = max([*witnessed, *cursors], default=0)
    if witness > head:
        return Verdict(
            False,
            checked,
            head,
            head + 1,
            f"records {head + 1}..{witness} are missing: the tail was deleted",
        )
    return Verdict(True, checked, head)


def _check(keyring: Keyring, row: AuditEvent, expected_seq: int, prev_hash: str) -> str:
    if row.seq != expected_seq:
        return f"expected record {expected_seq}, found {row.seq}: records removed"
    if row.prev_hash != prev_hash:
        return "does not follow its predecessor: inserted, removed or reordered"
    try:
        key = keyring.subkey(Purpose.AUDIT_CHAIN, row.key_id).key
    except UnknownKeyId:
        return f"signed with master key {row.key_id}, which is not configured"
    fields = {column.key: getattr(row, column.key) for column in AuditEvent.__table__.columns}
    if record_hash(key, row.prev_hash, fields) != row.hash:
        return "its contents do not match its hash: modified"
    return ""
