from __future__ import annotations

import os
from dataclasses import replace

import pytest

from bastion.crypto.envelope import associated_data, open_envelope, rewrap, seal
from bastion.crypto.errors import DecryptionFailed, UnknownKeyId
from bastion.crypto.keyring import Keyring

AAD = associated_data("cred-1", "password", "1")


@pytest.fixture
def keyring() -> Keyring:
    return Keyring(os.urandom(32))


def test_a_sealed_field_opens_with_its_own_associated_data(keyring: Keyring) -> None:
    envelope = seal(keyring, "pässwörd".encode(), AAD)
    assert b"p\xc3\xa4ssw" not in envelope.ciphertext
    assert open_envelope(keyring, envelope, AAD) == "pässwörd".encode()


@pytest.mark.parametrize(
    "elsewhere",
    [
        associated_data("cred-2", "password", "1"),  # another credential
        associated_data("cred-1", "username", "1"),  # another field
        associated_data("cred-1", "password", "2"),  # another version
    ],
)
def test_a_ciphertext_moved_elsewhere_does_not_open(keyring: Keyring, elsewhere: bytes) -> None:
    envelope = seal(keyring, b"secret", AAD)
    with pytest.raises(DecryptionFailed):
        open_envelope(keyring, envelope, elsewhere)


def test_swapping_ciphertexts_between_fields_fails(keyring: Keyring) -> None:
    user_aad = associated_data("cred-1", "username", "1")
    password = seal(keyring, b"secret", AAD)
    username = seal(keyring, b"alice", user_aad)
    swapped = replace(username, ciphertext=password.ciphertext)
    with pytest.raises(DecryptionFailed):
        open_envelope(keyring, swapped, user_aad)


def test_truncated_or_flipped_ciphertexts_fail_cleanly(keyring: Keyring) -> None:
    envelope = seal(keyring, b"secret", AAD)
    for damaged in (
        replace(envelope, ciphertext=envelope.ciphertext[:-1]),
        replace(envelope, ciphertext=envelope.ciphertext[:5]),
        replace(envelope, ciphertext=b""),
        replace(envelope, wrapped_key=envelope.wrapped_key[:20]),
        replace(envelope, ciphertext=bytes([envelope.ciphertext[0] ^ 1]) + envelope.ciphertext[1:]),
    ):
        with pytest.raises(DecryptionFailed):
            open_envelope(keyring, damaged, AAD)


def test_the_wrong_master_key_fails_and_says_nothing_of_the_plaintext(keyring: Keyring) -> None:
    envelope = seal(keyring, b"secret", AAD)
    other = os.urandom(32)
    with pytest.raises(UnknownKeyId):
        open_envelope(Keyring(other), envelope, AAD)
    forged_id = replace(envelope, kek_id=Keyring(other).active_id)
    with pytest.raises(DecryptionFailed) as caught:
        open_envelope(Keyring(other), forged_id, AAD)
    assert "secret" not in str(caught.value)


def test_rekeying_moves_the_data_key_and_the_old_key_becomes_removable() -> None:
    old, new = os.urandom(32), os.urandom(32)
    envelope = seal(Keyring(old), b"secret", AAD)
    during = Keyring(new, [old])
    assert open_envelope(during, envelope, AAD) == b"secret"  # old ids stay readable
    moved = rewrap(during, envelope, AAD)
    assert moved.kek_id == during.active_id and moved.ciphertext == envelope.ciphertext
    assert open_envelope(Keyring(new), moved, AAD) == b"secret"  # old key gone
