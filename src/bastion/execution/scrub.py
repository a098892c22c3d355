"""Keep credential values out of what a node leaves behind.

A node that received a secret can echo it back: an API that reflects its Authorization
header, code that returns what it was given. Every place a secret was handed to is
searched before the output enters the run state (and so checkpoints, history and
events), and before an error message is stored.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from bastion.logs import MIN_SECRET_LENGTH

MASK = "[redacted]"


def scrub(value: Any, secrets: Collection[str]) -> Any:
    if not secrets:
        return value
    if isinstance(value, str):
        return scrub_text(value, secrets)
    if isinstance(value, dict):
        return {scrub_text(str(k), secrets): scrub(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(item, secrets) for item in value]
    return value


def scrub_text(text: str, secrets: Collection[str]) -> str:
    # Longest first, so a secret that contains another is masked whole. The log redactor's
    # floor applies: shorter values would mask ordinary text everywhere (and a credential
    # that short protects nothing).
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= MIN_SECRET_LENGTH and secret in text:
            text = text.replace(secret, MASK)
    return text
