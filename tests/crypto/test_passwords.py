from __future__ import annotations

import pytest

from bastion.crypto.passwords import hash_password, needs_rehash, verify_password
from bastion.errors import InvalidInput


def test_hash_is_argon2id_and_verifies_only_the_right_password() -> None:
    hashed = hash_password("correct horse battery")
    assert hashed.startswith("$argon2id$v=19$m=65536,t=3,p=4$")
    assert "correct horse battery" not in hashed
    assert verify_password(hashed, "correct horse battery")
    assert not verify_password(hashed, "correct horse batterY")
    assert not needs_rehash(hashed)


def test_same_password_hashes_differently_each_time() -> None:
    assert hash_password("correct horse battery") != hash_password("correct horse battery")


@pytest.mark.parametrize(
    ("password", "message"),
    [
        ("short", "password must be at least 12 characters"),
        ("x" * 1025, "password must be at most 1024 characters"),
        ("twelve chars\x00!", "password must not contain control characters"),
        ("twelve chars\u0085!", "password must not contain control characters"),
    ],
)
def test_policy_rejects_unusable_passwords(password: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=f"^{message}$"):
        hash_password(password)


def test_garbage_hash_and_oversized_candidate_fail_closed() -> None:
    assert not verify_password("not-a-hash", "correct horse battery")
    hashed = hash_password("correct horse battery")
    assert not verify_password(hashed, "x" * 100_000)
