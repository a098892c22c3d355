"""Password hashing with argon2id (RFC 9106's second recommended parameter set)."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from bastion.errors import InvalidInput

MIN_LENGTH = 12
# Hashing cost grows with input; an unbounded password is a CPU/memory denial of service.
MAX_LENGTH = 1024

_hasher = PasswordHasher(time_cost=3, memory_cost=64 * 1024, parallelism=4)


def check_password_policy(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidInput(f"password must be at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise InvalidInput(f"password must be at most {MAX_LENGTH} characters")
    if any(ord(ch) < 32 or 0x7F <= ord(ch) <= 0x9F for ch in password):
        raise InvalidInput("password must not contain control characters")


def hash_password(password: str) -> str:
    check_password_policy(password)
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)
