"""A secret value that cannot leak by accident.

`repr`, `str`, f-strings and `%` formatting see a mask, JSON encoders refuse it; the plaintext
comes out only through `reveal()`, so every place that needs it is greppable. Creating a
Secret registers the value with the log redactor, so even a plaintext copied into a log
message by mistake is masked on the way out.
"""

from __future__ import annotations

import hmac
from typing import NoReturn

from bastion.logs import redactor

MASK = "********"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("a Secret holds text")
        self._value = value
        redactor.register(value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        # Constant time: comparing a guess against a stored secret must not time-leak it.
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        raise TypeError("Secret is not hashable")  # no dict keys or sets of secrets

    def __bool__(self) -> bool:
        return bool(self._value)

    def __len__(self) -> int:
        return len(self._value)

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Secret cannot be pickled")  # nor leave the process that way
