from __future__ import annotations

import base64
import os

import pytest

from bastion.crypto.errors import MalformedKey, UnknownKeyId
from bastion.crypto.keyring import Keyring, Purpose, decode_key, key_id_of, parse_key_list


def test_subkeys_differ_per_purpose_and_per_master_key() -> None:
    master = os.urandom(32)
    ring = Keyring(master)
    keys = {ring.active(purpose).key for purpose in Purpose}
    assert len(keys) == len(Purpose) and master not in keys
    assert Keyring(os.urandom(32)).active(Purpose.VAULT_KEK).key not in keys


def test_subkeys_are_stable_for_the_same_master_key() -> None:
    master = os.urandom(32)
    assert Keyring(master).active(Purpose.AUDIT_CHAIN) == Keyring(master).active(
        Purpose.AUDIT_CHAIN
    )


@pytest.mark.parametrize(
    "encoded", ["", "not base64!", base64.b64encode(b"short").decode(), "QUJD" * 20]
)
def test_malformed_master_keys_are_refused(encoded: str) -> None:
    with pytest.raises(MalformedKey, match="32 bytes"):
        decode_key(encoded)


def test_old_keys_are_listed_with_optional_ids_that_must_match() -> None:
    old = os.urandom(32)
    encoded = base64.b64encode(old).decode()
    assert parse_key_list(f"{encoded}, {key_id_of(old)}={encoded}") == [old, old]
    with pytest.raises(MalformedKey, match="entry 1: the key's id is"):
        parse_key_list(f"mk-000000000000={encoded}")
    with pytest.raises(MalformedKey, match="entry 2"):
        parse_key_list(f"{encoded},garbage")


def test_an_unknown_key_id_names_the_setting_to_fix() -> None:
    with pytest.raises(UnknownKeyId, match="BASTION_MASTER_KEYS"):
        Keyring(os.urandom(32)).subkey(Purpose.VAULT_KEK, "mk-000000000000")
