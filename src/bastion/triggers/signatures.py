"""Webhook signature verification: one configurable verifier for the schemes senders use.

Pure functions over the request's lower-cased headers and raw body; no I/O. The formats:

- ``none``: no authentication (the trigger relies on something else, e.g. network policy).
- ``shared_secret``: a header carries the secret itself (many simple senders; no standard).
- ``hmac_sha256``: GitHub's ``X-Hub-Signature-256: sha256=<hex>`` over the raw body,
  docs.github.com/webhooks/using-webhooks/validating-webhook-deliveries.
- ``standard_webhooks``: ``webhook-id``/``webhook-timestamp``/``webhook-signature`` as
  specified at standardwebhooks.com (github.com/standard-webhooks/standard-webhooks, spec/).
- ``stripe``: ``Stripe-Signature: t=..,v1=..``, docs.stripe.com/webhooks#verify-manually.
- ``slack``: ``X-Slack-Signature: v0=..`` with ``X-Slack-Request-Timestamp``,
  api.slack.com/authentication/verifying-requests-from-slack.

Every refusal is a SignatureInvalid whose message comes from a fixed vocabulary: it names the
check that failed and never echoes a header value, a secret or the body.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bastion.triggers.errors import InvalidTrigger, SignatureInvalid

SCHEMES: tuple[str, ...] = (
    "none",
    "shared_secret",
    "hmac_sha256",
    "standard_webhooks",
    "stripe",
    "slack",
)
DEFAULT_TOLERANCE = 300  # seconds
DEFAULT_SECRET_HEADER = "x-webhook-secret"  # noqa: S105 - a header name, not a secret
MAX_EVENT_ID = 200

# Far above any real signature header (a rotation sends a handful of signatures); refusing
# longer values up front bounds the parsing and HMAC work an unauthenticated request can cause.
_MAX_HEADER = 4096
_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}")  # int() alone would accept "+1", " 1", "1_0"
_EVENT_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_EVENT_ID}}}")
_WHSEC = "whsec_"


@dataclass(frozen=True)
class Verified:
    event_id: str | None  # the sender's delivery/event id, for de-duplication
    timestamp: int | None  # unix seconds the sender signed, when the scheme signs one


def _check_scheme(scheme: str) -> None:
    if scheme not in SCHEMES:
        raise InvalidTrigger("unknown signature scheme; expected one of " + ", ".join(SCHEMES))


def key_bytes(scheme: str, secret: str) -> bytes:
    """The HMAC key of a secret as stored in the vault (text)."""
    _check_scheme(scheme)
    if scheme != "standard_webhooks":
        return secret.encode("utf-8")
    if not secret.startswith(_WHSEC):
        raise InvalidTrigger("a standard_webhooks secret must start with whsec_")
    try:
        key = base64.b64decode(secret.removeprefix(_WHSEC), validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII text
        # `from None`: the chained exception could quote the secret into logs.
        raise InvalidTrigger("a standard_webhooks secret must be whsec_ + base64") from None
    if not key:
        raise InvalidTrigger("a standard_webhooks secret must not be empty")
    return key


def credential_headers(scheme: str, secret_header: str = DEFAULT_SECRET_HEADER) -> frozenset[str]:
    """Lower-case names of the headers carrying this scheme's secret or signature."""
    _check_scheme(scheme)
    return {
        "none": frozenset[str](),
        "shared_secret": frozenset({secret_header.lower()}),
        # The SHA-1 header is stripped too: it is also derived from the secret.
        "hmac_sha256": frozenset({"x-hub-signature-256", "x-hub-signature"}),
        "standard_webhooks": frozenset({"webhook-signature"}),
        "stripe": frozenset({"stripe-signature"}),
        "slack": frozenset({"x-slack-signature"}),
    }[scheme]


def _header(headers: Mapping[str, str], name: str, *, ascii_only: bool = True) -> str:
    value = headers.get(name.lower())
    if not value:
        raise SignatureInvalid(f"missing {name} header")
    # Values are latin-1 decoded raw bytes: a byte > 0x7f must be refused here, as a clean 401,
    # rather than surface later as a UnicodeError from .encode() or base64 (a 500).
    if len(value) > _MAX_HEADER or (ascii_only and not value.isascii()):
        raise SignatureInvalid(f"malformed {name} header")
    return value


def _event_id(value: str | None, name: str) -> str | None:
    # Ids become de-duplication keys (and get stored): bound their length and alphabet.
    if value is not None and not _EVENT_ID.fullmatch(value):
        raise SignatureInvalid(f"malformed {name} header")
    return value


def _body_event_id(body: bytes, field: str) -> str | None:
    """A top-level string field of a JSON-object body; only read once the body is verified."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):  # not JSON (e.g. Slack's form posts), or too deep
        return None
    value = document.get(field) if isinstance(document, dict) else None
    if not isinstance(value, str):
        return None
    if not _EVENT_ID.fullmatch(value):
        raise SignatureInvalid("malformed event id in body")
    return value


def _timestamp(raw: str, name: str, now: float, tolerance: int) -> int:
    if not _TIMESTAMP.fullmatch(raw):
        raise SignatureInvalid(f"malformed {name} header")
    signed_at = int(raw)
    # A stale timestamp is a captured request being replayed. The future side matters as much:
    # a request signed "later" stays fresh for longer than the de-duplication store remembers
    # its id, so it could be replayed after its id is forgotten.
    if now - signed_at > tolerance:
        raise SignatureInvalid("webhook timestamp is too old")
    if signed_at - now > tolerance:
        raise SignatureInvalid("webhook timestamp is in the future")
    return signed_at


def _hex_signature(value: str, prefix: str, name: str) -> bytes:
    # fullmatch first: bytes.fromhex alone would accept spaces and any length.
    if not value.startswith(prefix) or not _HEX_SHA256.fullmatch(value[len(prefix) :]):
        raise SignatureInvalid(f"malformed {name} header")
    return bytes.fromhex(value[len(prefix) :])


def _require_match(keys: Sequence[bytes], content: bytes, signatures: Sequence[bytes]) -> None:
    matched = False
    for key in keys:
        expected = hmac.new(key, content, hashlib.sha256).digest()
        for signature in signatures:
            # compare_digest takes the same time however many leading bytes agree, so timing
            # cannot guide a forger byte by byte; `|=` rather than `or` keeps every comparison.
            matched |= hmac.compare_digest(expected, signature)
    if not matched:
        raise SignatureInvalid("signature does not match")


def verify(
    scheme: str,
    keys: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: int = DEFAULT_TOLERANCE,
    secret_header: str = DEFAULT_SECRET_HEADER,
    event_id_header: str | None = None,
) -> Verified:
    """Check a request against every accepted key; raise SignatureInvalid unless one matches.

    Cheap header and format checks all come before any HMAC is computed.
    """
    _check_scheme(scheme)
    # A configured event-id header replaces each scheme's default source of the id.
    event_id = None
    if event_id_header is not None:
        event_id = _event_id(headers.get(event_id_header.lower()), event_id_header)
    if scheme == "none":
        return Verified(event_id, None)
    # Fail closed when nothing is configured. Empty keys are dropped: anyone can compute an
    # HMAC under an empty key, so an empty secret must never authenticate anything.
    keys = [key for key in keys if key]
    if not keys:
        raise SignatureInvalid("no secret configured")

    if scheme == "shared_secret":
        # Non-ASCII allowed: latin-1 round-trips the raw bytes a sender of a UTF-8 secret sent.
        sent = _header(headers, secret_header, ascii_only=False).encode("latin-1")
        matched = False
        for key in keys:
            # Digests on both sides: compare_digest's time still depends on the lengths, and
            # the secret's length is not to be learned from it. Every key is compared, so
            # timing does not reveal which one (current or previous) matched.
            matched |= hmac.compare_digest(
                hashlib.sha256(sent).digest(), hashlib.sha256(key).digest()
            )
        if not matched:
            raise SignatureInvalid("secret does not match")
        return Verified(event_id, None)

    if scheme == "hmac_sha256":
        signature = _hex_signature(
            _header(headers, "X-Hub-Signature-256"), "sha256=", "X-Hub-Signature-256"
        )
        if event_id_header is None:
            event_id = _event_id(headers.get("x-github-delivery"), "X-GitHub-Delivery")
        _require_match(keys, body, [signature])
        return Verified(event_id, None)

    if scheme == "standard_webhooks":
        message_id = _event_id(_header(headers, "webhook-id"), "webhook-id")
        raw_ts = _header(headers, "webhook-timestamp")
        signatures: list[bytes] = []
        for entry in _header(headers, "webhook-signature").split():
            version, comma, encoded = entry.partition(",")
            if not comma:
                raise SignatureInvalid("malformed webhook-signature header")
            if version != "v1":  # e.g. v1a (asymmetric): not ours to check
                continue
            try:
                signatures.append(base64.b64decode(encoded, validate=True))
            except binascii.Error:
                raise SignatureInvalid("malformed webhook-signature header") from None
        if not signatures:
            raise SignatureInvalid("malformed webhook-signature header")
        signed_at = _timestamp(raw_ts, "webhook-timestamp", now, tolerance)
        # The raw timestamp text is what the sender signed (it may differ from str(int(...))).
        _require_match(keys, f"{message_id}.{raw_ts}.".encode() + body, signatures)
        return Verified(message_id if event_id_header is None else event_id, signed_at)

    if scheme == "stripe":
        stripe_ts: str | None = None
        signatures = []
        for item in _header(headers, "Stripe-Signature").split(","):
            name, equals, value = item.strip().partition("=")
            if not equals or (name == "t" and stripe_ts is not None):
                raise SignatureInvalid("malformed Stripe-Signature header")
            if name == "t":
                stripe_ts = value
            elif name == "v1":  # v0 and future schemes are ignored, as Stripe's libraries do
                signatures.append(_hex_signature(value, "", "Stripe-Signature"))
        if stripe_ts is None or not signatures:
            raise SignatureInvalid("malformed Stripe-Signature header")
        signed_at = _timestamp(stripe_ts, "Stripe-Signature", now, tolerance)
        _require_match(keys, f"{stripe_ts}.".encode() + body, signatures)
        if event_id_header is None:  # read only now that the body is authenticated
            event_id = _body_event_id(body, "id")
        return Verified(event_id, signed_at)

    # slack
    signature = _hex_signature(_header(headers, "X-Slack-Signature"), "v0=", "X-Slack-Signature")
    slack_ts = _header(headers, "X-Slack-Request-Timestamp")
    signed_at = _timestamp(slack_ts, "X-Slack-Request-Timestamp", now, tolerance)
    _require_match(keys, b"v0:" + slack_ts.encode() + b":" + body, [signature])
    if event_id_header is None:
        event_id = _body_event_id(body, "event_id")
    return Verified(event_id, signed_at)
