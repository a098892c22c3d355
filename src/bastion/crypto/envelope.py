"""Envelope encryption: AES-256-GCM under a fresh data key, the data key wrapped by a KEK.

The associated data names what the plaintext is (credential id, field, version): GCM
authenticates it, so a ciphertext copied onto another credential or field fails to open
instead of silently decrypting there. The wrapped data key is bound to the same
associated data and to the KEK's id. Destroying the wrapped key destroys the plaintext.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from bastion.crypto.errors import DecryptionFailed
from bastion.crypto.keyring import Keyring, Purpose

NONCE_BYTES = 12  # 96-bit random nonces: one message per data key, so no reuse risk
DATA_KEY_BYTES = 32
TAG_BYTES = 16


@dataclass(frozen=True)
class Envelope:
    ciphertext: bytes  # nonce || AES-GCM(data key, plaintext, aad) with its tag
    wrapped_key: bytes  # nonce || AES-GCM(KEK, data key, kek_id || aad) with its tag
    kek_id: str


def associated_data(*parts: str) -> bytes:
    # Length-prefixed, so ("ab", "c") and ("a", "bc") cannot collide.
    return b"".join(len(p.encode()).to_bytes(4, "big") + p.encode() for p in parts)


def _seal(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def _open(key: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionFailed
    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
    except InvalidTag:
        raise DecryptionFailed from None


def _wrap_aad(kek_id: str, aad: bytes) -> bytes:
    return associated_data("bastion data key", kek_id) + aad


def seal(keyring: Keyring, plaintext: bytes, aad: bytes) -> Envelope:
    kek = keyring.active(Purpose.VAULT_KEK)
    data_key = AESGCM.generate_key(bit_length=8 * DATA_KEY_BYTES)
    return Envelope(
        ciphertext=_seal(data_key, plaintext, aad),
        wrapped_key=_seal(kek.key, data_key, _wrap_aad(kek.key_id, aad)),
        kek_id=kek.key_id,
    )


def _data_key(keyring: Keyring, envelope: Envelope, aad: bytes) -> bytes:
    kek = keyring.subkey(Purpose.VAULT_KEK, envelope.kek_id)
    return _open(kek.key, envelope.wrapped_key, _wrap_aad(kek.key_id, aad))


def open_envelope(keyring: Keyring, envelope: Envelope, aad: bytes) -> bytes:
    return _open(_data_key(keyring, envelope, aad), envelope.ciphertext, aad)


def rewrap(keyring: Keyring, envelope: Envelope, aad: bytes) -> Envelope:
    """The same data key under the active KEK; the ciphertext itself is untouched."""
    kek = keyring.active(Purpose.VAULT_KEK)
    data_key = _data_key(keyring, envelope, aad)
    return replace(
        envelope,
        wrapped_key=_seal(kek.key, data_key, _wrap_aad(kek.key_id, aad)),
        kek_id=kek.key_id,
    )
