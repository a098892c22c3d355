"""Errors of the crypto layer. None of them carries key material or plaintext."""

from __future__ import annotations

from bastion.errors import BastionError


class CryptoError(BastionError):
    pass


class MalformedKey(CryptoError):
    """A master key is malformed or does not match its declared id."""


class UnknownKeyId(CryptoError):
    def __init__(self, key_id: str) -> None:
        super().__init__(
            f"no master key with id {key_id!r} is configured: add it to BASTION_MASTER_KEYS"
        )
        self.key_id = key_id


class DecryptionFailed(CryptoError):
    """Wrong key, tampered or truncated ciphertext, or a ciphertext moved elsewhere."""

    def __init__(self) -> None:
        super().__init__("decryption failed: the ciphertext is damaged or does not belong here")
