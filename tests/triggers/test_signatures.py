"""Webhook signature verification, checked against vectors signed here from each specification
(with hmac/hashlib/base64 directly, independent of the module) and against published examples."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from contextlib import AbstractContextManager

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.triggers.errors import InvalidTrigger, SignatureInvalid
from bastion.triggers.signatures import (
    DEFAULT_TOLERANCE,
    MAX_EVENT_ID,
    SCHEMES,
    Verified,
    credential_headers,
    key_bytes,
    verify,
)

NOW = 1_700_000_000
KEY = b"current-secret-0123456789"
OLD_KEY = b"previous-secret-9876543210"
WRONG_KEY = b"not-the-secret"
BODY = b'{"id": "evt_1", "event_id": "Ev1", "type": "ping"}'

SIGNED = ("shared_secret", "hmac_sha256", "standard_webhooks", "stripe", "slack")
HMAC = ("hmac_sha256", "standard_webhooks", "stripe", "slack")
TIMESTAMPED = ("standard_webhooks", "stripe", "slack")
SIGNATURE_HEADER = {
    "shared_secret": "x-webhook-secret",
    "hmac_sha256": "x-hub-signature-256",
    "standard_webhooks": "webhook-signature",
    "stripe": "stripe-signature",
    "slack": "x-slack-signature",
}
DISPLAY = {  # how refusals spell each header's name
    "x-hub-signature-256": "X-Hub-Signature-256",
    "webhook-id": "webhook-id",
    "webhook-timestamp": "webhook-timestamp",
    "webhook-signature": "webhook-signature",
    "stripe-signature": "Stripe-Signature",
    "x-slack-signature": "X-Slack-Signature",
    "x-slack-request-timestamp": "X-Slack-Request-Timestamp",
}
EXPECTED = {  # what a valid request signed by `signed` verifies to
    "shared_secret": Verified(None, None),
    "hmac_sha256": Verified("delivery-1", None),
    "standard_webhooks": Verified("msg_1", NOW),
    "stripe": Verified("evt_1", NOW),
    "slack": Verified("Ev1", NOW),
}


# --- signing, straight from each specification ---------------------------------------------


def _mac(key: bytes, content: bytes) -> bytes:
    return hmac.new(key, content, hashlib.sha256).digest()


def github_signature(key: bytes, body: bytes) -> str:
    return "sha256=" + _mac(key, body).hex()


def standard_signature(key: bytes, msg_id: str, ts: int, body: bytes) -> str:
    return "v1," + base64.b64encode(_mac(key, f"{msg_id}.{ts}.".encode() + body)).decode()


def stripe_v1(key: bytes, ts: int, body: bytes) -> str:
    return _mac(key, f"{ts}.".encode() + body).hex()


def slack_signature(key: bytes, ts: int, body: bytes) -> str:
    return "v0=" + _mac(key, f"v0:{ts}:".encode() + body).hex()


def request(scheme: str) -> dict[str, str]:
    return {} if scheme == "none" else signed(scheme)


def signed(scheme: str, key: bytes = KEY, body: bytes = BODY, ts: int = NOW) -> dict[str, str]:
    """The headers a sender of `scheme` attaches to `body`, as verify receives them."""
    if scheme == "shared_secret":
        return {"x-webhook-secret": key.decode("latin-1")}
    if scheme == "hmac_sha256":
        return {
            "x-hub-signature-256": github_signature(key, body),
            "x-github-delivery": "delivery-1",
        }
    if scheme == "standard_webhooks":
        return {
            "webhook-id": "msg_1",
            "webhook-timestamp": str(ts),
            "webhook-signature": standard_signature(key, "msg_1", ts, body),
        }
    if scheme == "stripe":
        return {"stripe-signature": f"t={ts},v1={stripe_v1(key, ts, body)}"}
    assert scheme == "slack"
    return {
        "x-slack-signature": slack_signature(key, ts, body),
        "x-slack-request-timestamp": str(ts),
    }


def refused(message: str) -> AbstractContextManager[pytest.ExceptionInfo[SignatureInvalid]]:
    """Expect a refusal with exactly this message."""
    return pytest.raises(SignatureInvalid, match=f"^{re.escape(message)}$")


# --- published examples ---------------------------------------------------------------------


def test_githubs_published_example_verifies() -> None:
    # docs.github.com, "Validating webhook deliveries".
    key, body = b"It's a Secret to Everybody", b"Hello, World!"
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert github_signature(key, body) == expected
    headers = {"x-hub-signature-256": expected}
    assert verify("hmac_sha256", [key], headers, body, now=NOW) == Verified(None, None)


def test_standard_webhooks_published_vector_verifies() -> None:
    # The test vector of the standard-webhooks reference libraries (and Svix's docs).
    key = key_bytes("standard_webhooks", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    body = b'{"test": 2432232314}'
    expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert standard_signature(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body) == expected
    headers = {
        "webhook-id": "msg_p5jXN8AQM9LWM0D4loKWxJek",
        "webhook-timestamp": "1614265330",
        "webhook-signature": expected,
    }
    verified = verify("standard_webhooks", [key], headers, body, now=1614265330)
    assert verified == Verified("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330)


def test_slacks_published_example_verifies() -> None:
    # api.slack.com/authentication/verifying-requests-from-slack: a slash command's form body.
    key = b"8f742231b10e8888abcd99yyyzzz85a5"
    body = (
        b"token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow"
        b"&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner"
        b"&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2F"
        b"commands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN"
        b"&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c"
    )
    expected = "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503"
    assert slack_signature(key, 1531420618, body) == expected
    headers = {"x-slack-signature": expected, "x-slack-request-timestamp": "1531420618"}
    # A form body has no JSON event_id.
    assert verify("slack", [key], headers, body, now=1531420618 + 60) == Verified(None, 1531420618)


# --- every scheme ----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", SIGNED)
def test_a_correctly_signed_request_passes(scheme: str) -> None:
    assert verify(scheme, [KEY], signed(scheme), BODY, now=NOW) == EXPECTED[scheme]


@pytest.mark.parametrize("scheme", HMAC)
def test_a_tampered_body_is_refused(scheme: str) -> None:
    with refused("signature does not match"):
        verify(scheme, [KEY], signed(scheme), BODY + b" ", now=NOW)


@pytest.mark.parametrize("scheme", SIGNED)
def test_a_request_signed_with_another_secret_is_refused(scheme: str) -> None:
    message = "secret does not match" if scheme == "shared_secret" else "signature does not match"
    with refused(message):
        verify(scheme, [KEY], signed(scheme, WRONG_KEY), BODY, now=NOW)


@pytest.mark.parametrize(
    ("scheme", "header", "message"),
    [
        ("shared_secret", "x-webhook-secret", "missing x-webhook-secret header"),
        ("hmac_sha256", "x-hub-signature-256", "missing X-Hub-Signature-256 header"),
        ("standard_webhooks", "webhook-id", "missing webhook-id header"),
        ("standard_webhooks", "webhook-timestamp", "missing webhook-timestamp header"),
        ("standard_webhooks", "webhook-signature", "missing webhook-signature header"),
        ("stripe", "stripe-signature", "missing Stripe-Signature header"),
        ("slack", "x-slack-signature", "missing X-Slack-Signature header"),
        ("slack", "x-slack-request-timestamp", "missing X-Slack-Request-Timestamp header"),
    ],
)
@pytest.mark.parametrize("absent", ["dropped", "empty"])
def test_a_missing_or_empty_header_is_refused(
    scheme: str, header: str, message: str, absent: str
) -> None:
    headers = signed(scheme)
    if absent == "dropped":
        del headers[header]
    else:
        headers[header] = ""
    with refused(message):
        verify(scheme, [KEY], headers, BODY, now=NOW)


_HEX = stripe_v1(KEY, NOW, BODY)
_B64 = standard_signature(KEY, "msg_1", NOW, BODY).removeprefix("v1,")


@pytest.mark.parametrize(
    ("scheme", "header", "value"),
    [
        ("hmac_sha256", "x-hub-signature-256", _HEX),
        ("hmac_sha256", "x-hub-signature-256", "sha1=" + _HEX[:40]),
        ("hmac_sha256", "x-hub-signature-256", "sha256=" + _HEX[:-1]),
        ("hmac_sha256", "x-hub-signature-256", "sha256=" + _HEX + "00"),
        ("hmac_sha256", "x-hub-signature-256", "sha256=" + "zz" * 32),
        (
            "hmac_sha256",
            "x-hub-signature-256",
            "sha256=" + " ".join(_HEX[i : i + 2] for i in range(0, 64, 2)),
        ),
        ("standard_webhooks", "webhook-signature", "v1" + _B64),
        ("standard_webhooks", "webhook-signature", "v1,not base64!"),
        ("standard_webhooks", "webhook-signature", "v1," + _B64.rstrip("=")),
        ("standard_webhooks", "webhook-signature", "v1a," + _B64),
        ("standard_webhooks", "webhook-timestamp", "soon"),
        ("standard_webhooks", "webhook-timestamp", f"+{NOW}"),
        ("standard_webhooks", "webhook-timestamp", f"{NOW}.5"),
        ("standard_webhooks", "webhook-timestamp", "9" * 40),
        ("standard_webhooks", "webhook-id", "msg 1"),
        ("standard_webhooks", "webhook-id", "m" * (MAX_EVENT_ID + 1)),
        ("stripe", "stripe-signature", f"v1={_HEX}"),
        ("stripe", "stripe-signature", f"t={NOW}"),
        ("stripe", "stripe-signature", f"t={NOW},v0={_HEX}"),
        ("stripe", "stripe-signature", f"t=later,v1={_HEX}"),
        ("stripe", "stripe-signature", f"t={NOW},t={NOW},v1={_HEX}"),
        ("stripe", "stripe-signature", f"t={NOW},v1={_HEX[:-1]}"),
        ("stripe", "stripe-signature", f"t={NOW};v1={_HEX}"),
        ("stripe", "stripe-signature", f"t={NOW},,v1={_HEX}"),
        ("slack", "x-slack-signature", f"v1={_HEX}"),
        ("slack", "x-slack-signature", "v0=" + "g" * 64),
        ("slack", "x-slack-request-timestamp", f"{NOW}s"),
        ("slack", "x-slack-request-timestamp", f"-{NOW}"),
    ],
)
def test_a_malformed_header_is_refused_without_echoing_it(
    scheme: str, header: str, value: str
) -> None:
    headers = {**signed(scheme), header: value}
    with refused(f"malformed {DISPLAY[header]} header") as caught:
        verify(scheme, [KEY], headers, BODY, now=NOW)
    assert value not in str(caught.value)


@pytest.mark.parametrize("scheme", SIGNED)
def test_a_giant_header_value_is_refused(scheme: str) -> None:
    headers = signed(scheme)
    header = SIGNATURE_HEADER[scheme]
    headers[header] = headers[header] + "a" * 10_000
    with pytest.raises(SignatureInvalid, match=r"^malformed "):
        verify(scheme, [KEY], headers, BODY, now=NOW)


@pytest.mark.parametrize("scheme", TIMESTAMPED)
@pytest.mark.parametrize(
    ("offset", "message"),
    [
        (-DEFAULT_TOLERANCE - 1, "webhook timestamp is too old"),
        (DEFAULT_TOLERANCE + 1, "webhook timestamp is in the future"),
        (-(10**9), "webhook timestamp is too old"),
        (10**9, "webhook timestamp is in the future"),
    ],
)
def test_a_timestamp_outside_the_tolerance_is_refused_both_ways(
    scheme: str, offset: int, message: str
) -> None:
    # Correctly signed: only the timestamp's distance from now refuses it.
    with refused(message):
        verify(scheme, [KEY], signed(scheme, ts=NOW + offset), BODY, now=NOW)


@pytest.mark.parametrize("scheme", TIMESTAMPED)
@pytest.mark.parametrize("offset", [-DEFAULT_TOLERANCE, DEFAULT_TOLERANCE])
def test_a_timestamp_just_inside_the_tolerance_passes_both_ways(scheme: str, offset: int) -> None:
    verified = verify(scheme, [KEY], signed(scheme, ts=NOW + offset), BODY, now=NOW)
    assert verified.timestamp == NOW + offset


@pytest.mark.parametrize("scheme", TIMESTAMPED)
def test_the_tolerance_is_configurable(scheme: str) -> None:
    headers = signed(scheme, ts=NOW - 20)
    assert verify(scheme, [KEY], headers, BODY, now=NOW, tolerance=20).timestamp == NOW - 20
    with refused("webhook timestamp is too old"):
        verify(scheme, [KEY], headers, BODY, now=NOW, tolerance=19)


@pytest.mark.parametrize("scheme", SIGNED)
def test_during_a_rotation_a_request_signed_with_the_previous_secret_passes(scheme: str) -> None:
    headers = signed(scheme, OLD_KEY)
    assert verify(scheme, [KEY, OLD_KEY], headers, BODY, now=NOW) == EXPECTED[scheme]
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify(scheme, [KEY], headers, BODY, now=NOW)


def _two_signatures(scheme: str, first: bytes, second: bytes) -> dict[str, str]:
    if scheme == "standard_webhooks":
        sigs = [standard_signature(key, "msg_1", NOW, BODY) for key in (first, second)]
        # Versions other than v1 (v1a: asymmetric) are skipped, not refused.
        return {**signed(scheme), "webhook-signature": " ".join(["v1a,AAAA", *sigs])}
    v1 = ",".join(f"v1={stripe_v1(key, NOW, BODY)}" for key in (first, second))
    return {"stripe-signature": f"t={NOW},v0={'0' * 64},{v1}"}  # v0 is ignored


@pytest.mark.parametrize("scheme", ["standard_webhooks", "stripe"])
@pytest.mark.parametrize(("first", "second"), [(WRONG_KEY, OLD_KEY), (OLD_KEY, WRONG_KEY)])
def test_a_header_listing_several_signatures_passes_when_any_matches_any_key(
    scheme: str, first: bytes, second: bytes
) -> None:
    headers = _two_signatures(scheme, first, second)
    assert verify(scheme, [KEY, OLD_KEY], headers, BODY, now=NOW) == EXPECTED[scheme]
    with refused("signature does not match"):
        verify(scheme, [KEY], headers, BODY, now=NOW)


@pytest.mark.parametrize("scheme", SIGNED)
@pytest.mark.parametrize("raw", [b"\xff", "\u00e9".encode()])
def test_a_non_ascii_header_value_is_refused_cleanly(scheme: str, raw: bytes) -> None:
    # verify receives header bytes decoded as latin-1: non-ASCII bytes become chars > 0x7f.
    for header in signed(scheme):
        headers = signed(scheme)
        headers[header] = headers[header][:-1] + raw.decode("latin-1")
        with pytest.raises(SignatureInvalid):
            verify(scheme, [KEY], headers, BODY, now=NOW)


def test_a_shared_secret_in_utf8_round_trips_through_latin1_headers() -> None:
    secret = "s\u00e9same-ouvre-toi"
    header = secret.encode("utf-8").decode("latin-1")  # what the ASGI server hands over
    keys = [key_bytes("shared_secret", secret)]
    assert (
        verify("shared_secret", keys, {"x-webhook-secret": header}, b"", now=NOW).event_id is None
    )
    with refused("secret does not match"):
        verify("shared_secret", keys, {"x-webhook-secret": secret}, b"", now=NOW)


def test_the_shared_secret_header_name_is_configurable_and_case_insensitive() -> None:
    headers = {"x-token": KEY.decode()}
    verified = verify("shared_secret", [KEY], headers, b"", now=NOW, secret_header="X-Token")
    assert verified == Verified(None, None)
    with refused("missing X-Token header"):
        verify(
            "shared_secret", [KEY], signed("shared_secret"), b"", now=NOW, secret_header="X-Token"
        )


def test_github_signature_hex_is_accepted_in_upper_case() -> None:
    headers = {"x-hub-signature-256": "sha256=" + _mac(KEY, BODY).hex().upper()}
    assert verify("hmac_sha256", [KEY], headers, BODY, now=NOW) == Verified(None, None)


# --- event ids -------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["none", *SIGNED])
def test_a_configured_event_id_header_supplies_the_event_id(scheme: str) -> None:
    headers = {**request(scheme), "x-request-id": "req-42"}
    verified = verify(scheme, [KEY], headers, BODY, now=NOW, event_id_header="X-Request-Id")
    assert verified.event_id == "req-42"
    # Absent, there is no id (the scheme's default source is not consulted).
    del headers["x-request-id"]
    assert (
        verify(scheme, [KEY], headers, BODY, now=NOW, event_id_header="x-request-id").event_id
        is None
    )


@pytest.mark.parametrize("scheme", ["none", *SIGNED])
@pytest.mark.parametrize(
    "bad_id", ["i" * (MAX_EVENT_ID + 1), "two words", "tab\there", "caf\u00e9"]
)
def test_a_malformed_or_overlong_event_id_header_is_refused(scheme: str, bad_id: str) -> None:
    headers = {**request(scheme), "x-request-id": bad_id}
    with refused("malformed x-request-id header"):
        verify(scheme, [KEY], headers, BODY, now=NOW, event_id_header="x-request-id")


def test_an_event_id_of_the_maximum_length_is_accepted() -> None:
    headers = {**signed("hmac_sha256"), "x-github-delivery": "d" * MAX_EVENT_ID}
    assert verify("hmac_sha256", [KEY], headers, BODY, now=NOW).event_id == "d" * MAX_EVENT_ID


def test_a_github_delivery_without_the_delivery_header_has_no_event_id() -> None:
    headers = {"x-hub-signature-256": github_signature(KEY, BODY)}
    assert verify("hmac_sha256", [KEY], headers, BODY, now=NOW).event_id is None


def test_a_malformed_github_delivery_header_is_refused() -> None:
    headers = {**signed("hmac_sha256"), "x-github-delivery": "x" * (MAX_EVENT_ID + 1)}
    with refused("malformed X-GitHub-Delivery header"):
        verify("hmac_sha256", [KEY], headers, BODY, now=NOW)


@pytest.mark.parametrize(("scheme", "field"), [("stripe", "id"), ("slack", "event_id")])
@pytest.mark.parametrize(
    "body",
    [b"token=abc&id=evt_1&event_id=Ev1", b'["evt_1"]', b"{}", b"\xff\xfe", b"[" * 100_000],
)
def test_a_body_without_a_top_level_string_id_gives_no_event_id(
    scheme: str, field: str, body: bytes
) -> None:
    assert verify(scheme, [KEY], signed(scheme, body=body), body, now=NOW).event_id is None
    numeric = json.dumps({field: 7}).encode()
    assert verify(scheme, [KEY], signed(scheme, body=numeric), numeric, now=NOW).event_id is None


@pytest.mark.parametrize(("scheme", "field"), [("stripe", "id"), ("slack", "event_id")])
def test_an_overlong_event_id_in_the_body_is_refused(scheme: str, field: str) -> None:
    body = json.dumps({field: "e" * (MAX_EVENT_ID + 1)}).encode()
    with refused("malformed event id in body"):
        verify(scheme, [KEY], signed(scheme, body=body), body, now=NOW)


# --- configuration ---------------------------------------------------------------------------


def test_the_none_scheme_accepts_anything_and_signs_no_timestamp() -> None:
    assert verify("none", [], {}, BODY, now=NOW) == Verified(None, None)
    assert verify("none", [KEY], signed("hmac_sha256", WRONG_KEY), BODY, now=NOW) == Verified(
        None, None
    )


@pytest.mark.parametrize("scheme", SIGNED)
@pytest.mark.parametrize("keys", [[], [b""]])
def test_no_usable_secret_fails_closed(scheme: str, keys: list[bytes]) -> None:
    # [b""]: anyone can compute an HMAC under an empty key.
    headers = signed(scheme, b"") if scheme != "shared_secret" else {"x-webhook-secret": "x"}
    with refused("no secret configured"):
        verify(scheme, keys, headers, BODY, now=NOW)


def test_an_unknown_scheme_is_an_invalid_trigger() -> None:
    with pytest.raises(InvalidTrigger):
        verify("hmac_sha1", [KEY], {}, BODY, now=NOW)
    with pytest.raises(InvalidTrigger):
        key_bytes("hmac_sha1", "secret")
    with pytest.raises(InvalidTrigger):
        credential_headers("hmac_sha1")


def test_standard_webhooks_keys_are_the_base64_after_whsec() -> None:
    assert key_bytes("standard_webhooks", "whsec_" + base64.b64encode(KEY).decode()) == KEY


@pytest.mark.parametrize("scheme", [s for s in SCHEMES if s != "standard_webhooks"])
def test_other_schemes_key_is_the_utf8_secret(scheme: str) -> None:
    assert key_bytes(scheme, "whsec_s\u00e9same") == "whsec_s\u00e9same".encode()


@pytest.mark.parametrize(
    "secret",
    [
        "c2VjcmV0LXZhbHVlLTEyMzQ=",  # no prefix
        "WHSEC_c2VjcmV0LXZhbHVlLTEyMzQ=",
        "whsec_c2VjcmV0LXZhbHVlLTEyMzQ",  # padding lost
        "whsec_c2VjcmV0!LXZhbHVl",
        "whsec_c2VjcmV0\u00e9LXZhbHVl",
        "whsec_",
    ],
)
def test_a_malformed_standard_webhooks_secret_is_refused_without_echoing_it(secret: str) -> None:
    with pytest.raises(InvalidTrigger) as caught:
        key_bytes("standard_webhooks", secret)
    error = caught.value
    payload = secret.removeprefix("whsec_")
    assert not payload or payload not in str(error)
    # Nor in a chained exception that a traceback in the logs would print.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


@pytest.mark.parametrize(
    ("scheme", "expected"),
    [
        ("none", set()),
        ("shared_secret", {"x-webhook-secret"}),
        ("hmac_sha256", {"x-hub-signature-256", "x-hub-signature"}),
        ("standard_webhooks", {"webhook-signature"}),
        ("stripe", {"stripe-signature"}),
        ("slack", {"x-slack-signature"}),
    ],
)
def test_credential_headers_name_the_headers_carrying_the_secret(
    scheme: str, expected: set[str]
) -> None:
    assert credential_headers(scheme) == frozenset(expected)


def test_a_custom_secret_header_is_a_credential_header_in_lower_case() -> None:
    assert credential_headers("shared_secret", "X-Gitlab-Token") == frozenset({"x-gitlab-token"})


# --- robustness ------------------------------------------------------------------------------

# Every refusal message, in full: none has room for a header value, the body or a secret.
_VOCABULARY = re.compile(
    r"(missing|malformed) (x-webhook-secret|X-Hub-Signature-256|X-GitHub-Delivery|webhook-id"
    r"|webhook-timestamp|webhook-signature|Stripe-Signature|X-Slack-Signature"
    r"|X-Slack-Request-Timestamp) header"
    r"|webhook timestamp is (too old|in the future)|(signature|secret) does not match"
    r"|malformed event id in body"
)
_latin1 = st.text(alphabet=st.characters(max_codepoint=0xFF), max_size=300)


@pytest.mark.parametrize("scheme", SIGNED)
@given(values=st.lists(_latin1, min_size=5, max_size=5), body=st.binary(max_size=64))
def test_arbitrary_header_values_only_ever_raise_signature_invalid(
    scheme: str, values: list[str], body: bytes
) -> None:
    names = [*signed(scheme), "x-github-delivery", "webhook-id"][:5]
    headers = dict(zip(names, values, strict=False))
    try:
        verify(scheme, [KEY], headers, body, now=NOW)
    except SignatureInvalid as error:
        message = str(error)
    else:
        return
    assert _VOCABULARY.fullmatch(message)
