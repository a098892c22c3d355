"""The audit hash chain: canonical records, their HMACs, and signed checkpoints.

hash = HMAC(audit chain key, prev_hash || canonical record). Changing, removing,
inserting or reordering a record breaks every hash after it; without the key an attacker
cannot recompute them. A checkpoint (the head's seq and hash, HMAC-signed) handed to the
exporters lets a verifier notice a deleted tail, which the chain alone cannot show.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bastion.crypto.keyring import Keyring, Purpose

GENESIS = "0" * 64
OUTCOMES = ("success", "failure", "denied")


@dataclass(frozen=True)
class Event:
    """What a caller records; the log adds seq, time, key id and the hashes."""

    action: str  # "credential.reveal", "auth.sign_in", ...
    actor: str  # "user:alice", "token:7", "system", "cli"
    target: str = ""
    outcome: str = "success"
    reason: str = ""
    client_ip: str = ""
    request_id: str = ""
    details: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {OUTCOMES}")


def canonical(record: Mapping[str, Any]) -> bytes:
    """The bytes the chain signs: every field but the hashes, in one fixed JSON form."""
    body = {
        "seq": record["seq"],
        "time": record["time"].isoformat(timespec="microseconds"),
        "actor": record["actor"],
        "action": record["action"],
        "target": record["target"],
        "outcome": record["outcome"],
        "reason": record["reason"],
        "client_ip": record["client_ip"],
        "request_id": record["request_id"],
        "details": json.loads(record["details"])
        if isinstance(record["details"], str)
        else record["details"],
        "key_id": record["key_id"],
    }
    return to_json(body).encode()


def record_hash(key: bytes, prev_hash: str, record: Mapping[str, Any]) -> str:
    return hmac.new(key, prev_hash.encode() + b"\n" + canonical(record), hashlib.sha256).hexdigest()


def canonical_details(details: Mapping[str, Any]) -> str:
    return to_json(details)


def to_json(value: Mapping[str, Any]) -> str:
    """The one JSON form of audit data, hashed and exported alike: sorted keys, compact,
    UTF-8 text, times to the microsecond (a SIEM sees the same record from every sink)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_time
    )


def _time(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat(timespec="microseconds")
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def hash_value(keyring: Keyring, value: str) -> str:
    """A sensitive string as it appears in audit details: searchable, not readable."""
    key = keyring.active(Purpose.AUDIT_VALUES).key
    return "hmac-sha256:" + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Checkpoint:
    seq: int
    hash: str
    time: datetime
    key_id: str
    signature: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "type": "checkpoint",
            "seq": self.seq,
            "hash": self.hash,
            "time": self.time.isoformat(timespec="microseconds"),
            "key_id": self.key_id,
            "signature": self.signature,
        }


def _checkpoint_mac(key: bytes, seq: int, head: str, time: datetime) -> str:
    message = f"bastion audit checkpoint\n{seq}\n{head}\n{time.isoformat()}".encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_checkpoint(keyring: Keyring, seq: int, head: str, time: datetime) -> Checkpoint:
    key = keyring.active(Purpose.AUDIT_CHAIN)
    return Checkpoint(seq, head, time, key.key_id, _checkpoint_mac(key.key, seq, head, time))


def checkpoint_from(keyring: Keyring, data: Mapping[str, Any]) -> Checkpoint:
    """A checkpoint read back from an export, its signature checked (ValueError if bad)."""
    try:
        time = datetime.fromisoformat(str(data["time"]))
        point = Checkpoint(
            int(data["seq"]), str(data["hash"]), time, str(data["key_id"]), str(data["signature"])
        )
    except (KeyError, TypeError, ValueError):
        raise ValueError("not a checkpoint record") from None
    key = keyring.subkey(Purpose.AUDIT_CHAIN, point.key_id).key
    expected = _checkpoint_mac(key, point.seq, point.hash, point.time)
    if not hmac.compare_digest(expected, point.signature):
        raise ValueError("the checkpoint's signature does not match: forged or damaged")
    return point
