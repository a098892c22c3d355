"""The master key and the per-purpose subkeys HKDF derives from it, each with a key id.

One root secret, many keys: a key used for two purposes lets an attacker who can make
one purpose compute something replay it as the other. HKDF's `info` separates them.
Old master keys stay in the ring (BASTION_MASTER_KEYS): the vault needs one until
`bastion vault rekey` has moved every wrapped data key off it; audit records stay signed
by the key that was active when they were written, so `bastion audit verify` needs every
key that signed a record it is asked to check (the chain is never re-signed: that would
be exactly the rewrite it exists to expose).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from bastion.crypto.errors import MalformedKey, UnknownKeyId

MASTER_KEY_BYTES = 32


class Purpose(Enum):
    VAULT_KEK = "vault-kek"  # wraps the data keys of credential fields
    AUDIT_CHAIN = "audit-chain"  # HMAC of the audit hash chain and checkpoints
    AUDIT_VALUES = "audit-values"  # HMAC of sensitive strings inside audit details


@dataclass(frozen=True)
class Subkey:
    key_id: str  # the master key's id: which master key this came from
    key: bytes


def key_id_of(master: bytes) -> str:
    # A public fingerprint; derived with its own label, so it says nothing about subkeys.
    return "mk-" + hashlib.sha256(b"bastion key id\x00" + master).hexdigest()[:12]


def decode_key(encoded: str) -> bytes:
    """A base64 (standard or URL-safe) master key of exactly 32 bytes."""
    text = encoded.strip()
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != MASTER_KEY_BYTES:
        raise MalformedKey("a master key must be 32 bytes encoded as base64")
    return raw


def parse_key_list(text: str) -> list[bytes]:
    """BASTION_MASTER_KEYS: comma-separated `[key-id=]base64` entries.

    An entry's optional id must match the key: a typo in an old key then fails here,
    at start-up, not months later when a ciphertext under that key cannot be opened.
    """
    keys = []
    for n, entry in enumerate(filter(None, (e.strip() for e in text.split(","))), 1):
        named, _, encoded = entry.partition("=") if entry.startswith("mk-") else ("", "", entry)
        try:
            key = decode_key(encoded)
        except MalformedKey as exc:
            raise MalformedKey(f"entry {n}: {exc}") from None
        if named and named != key_id_of(key):
            raise MalformedKey(f"entry {n}: the key's id is {key_id_of(key)}, not {named}")
        keys.append(key)
    return keys


class Keyring:
    def __init__(self, active: bytes, old: Iterable[bytes] = ()) -> None:
        if len(active) != MASTER_KEY_BYTES:
            raise MalformedKey("a master key must be 32 bytes")
        self.active_id = key_id_of(active)
        self._masters = {key_id_of(key): key for key in old}
        self._masters[self.active_id] = active
        self._derived: dict[tuple[Purpose, str], Subkey] = {}

    @property
    def key_ids(self) -> list[str]:
        return sorted(self._masters)

    def active(self, purpose: Purpose) -> Subkey:
        return self.subkey(purpose, self.active_id)

    def subkey(self, purpose: Purpose, key_id: str) -> Subkey:
        cached = self._derived.get((purpose, key_id))
        if cached is not None:
            return cached
        master = self._masters.get(key_id)
        if master is None:
            raise UnknownKeyId(key_id)
        hkdf = HKDF(
            algorithm=hashes.SHA256(),
            length=32,
            salt=b"bastion/v1",
            info=b"bastion/" + purpose.value.encode(),
        )
        derived = Subkey(key_id, hkdf.derive(master))
        self._derived[(purpose, key_id)] = derived
        return derived
