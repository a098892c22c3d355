from __future__ import annotations

import logging
import stat
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from bastion.logs import (
    REDACTED,
    Redactor,
    configure_logging,
    escape_controls,
    redactor,
    request_id,
)

CONTROLS = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0)]


def test_every_c0_c1_and_del_character_is_escaped() -> None:
    for cp in CONTROLS:
        escaped = escape_controls(f"a{chr(cp)}b")
        assert chr(cp) not in escaped, hex(cp)
        assert escaped.startswith("a\\") and escaped.endswith("b")


def test_ansi_escape_sequences_are_neutralised() -> None:
    assert escape_controls("\x1b[31mred\x1b[0m") == "\\x1b[31mred\\x1b[0m"


def test_backslash_is_escaped_so_escapes_are_unambiguous() -> None:
    assert escape_controls("a\\nb") == "a\\\\nb"
    assert escape_controls("a\nb") == "a\\nb"
    assert escape_controls("a\\nb") != escape_controls("a\nb")


def test_line_separators_and_bidi_controls_are_escaped() -> None:
    assert escape_controls("x\u2028y\u202ez\u2066") == "x\\u2028y\\u202ez\\u2066"


@given(st.text())
def test_escaped_text_never_contains_a_control_or_line_break(text: str) -> None:
    escaped = escape_controls(text)
    assert not any(ord(ch) in CONTROLS for ch in escaped)
    assert len(escaped.splitlines()) <= 1


def test_redactor_replaces_registered_secrets_longest_first() -> None:
    r = Redactor()
    r.register("abcd")
    r.register("abcdefgh")
    r.register("xy")  # too short to register: would redact ordinary words
    assert r.redact("k=abcdefgh j=abcd xy") == f"k={REDACTED} j={REDACTED} xy"
    r.forget("abcd")
    assert r.redact("abcd") == "abcd"


def test_token_shapes_are_redacted_without_registration() -> None:
    r = Redactor()
    token = "bst_" + "A" * 43
    assert r.redact(f"used {token} now") == f"used {REDACTED} now"
    assert REDACTED in r.redact("Authorization: Bearer abc.def")
    assert "abc.def" not in r.redact("Authorization: Bearer abc.def")
    assert r.redact("secret whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw") == f"secret {REDACTED}"


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_a_forged_newline_stays_on_one_line_in_the_file(log_file: Path) -> None:
    logging.getLogger("bastion.test").warning("user %s", "eve\n2026-01-01 INFO fake line")
    logged = [line for line in lines(log_file) if "bastion.test" in line]
    assert len(logged) == 1
    assert logged[0].endswith("user eve\\n2026-01-01 INFO fake line")


def test_a_traceback_is_one_line(log_file: Path) -> None:
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        logging.getLogger("bastion.test").exception("failed")
    logged = [line for line in lines(log_file) if "bastion.test" in line]
    assert len(logged) == 1
    assert "Traceback (most recent call last):\\n" in logged[0]
    assert "ValueError: bad\\nvalue" in logged[0]


def test_registered_secrets_never_reach_the_file(log_file: Path) -> None:
    secret = "s3cr3t-\x07-value"
    redactor.register(secret)
    try:
        log = logging.getLogger("bastion.test")
        log.info("as arg %s", secret)
        log.info(f"in f-string {secret}")
        try:
            raise RuntimeError(f"in exception {secret}")
        except RuntimeError:
            log.exception("boom")
    finally:
        redactor.forget(secret)
    text = log_file.read_text()
    assert "s3cr3t" not in text
    assert text.count(REDACTED) == 3


def test_lines_carry_the_request_id_and_a_utc_timestamp(log_file: Path) -> None:
    token = request_id.set("abc123")
    try:
        logging.getLogger("bastion.test").info("inside")
    finally:
        request_id.reset(token)
    logging.getLogger("bastion.test").info("outside")
    inside, outside = (line for line in lines(log_file) if "bastion.test" in line)
    assert " INFO bastion.test [abc123] inside" in inside
    assert " INFO bastion.test [-] outside" in outside
    assert inside[:24].endswith("Z") and inside[10] == "T"


def test_log_dir_is_private_and_tightened(tmp_path: Path) -> None:
    loose = tmp_path / "logs"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        path = configure_logging(log_dir=loose, stream=None)
        fresh = configure_logging(log_dir=tmp_path / "new" / "logs", stream=None)
    finally:
        for handler in root.handlers:
            if handler not in saved:
                handler.close()
        root.handlers[:] = saved
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    assert stat.S_IMODE(fresh.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_configuring_twice_does_not_duplicate_lines(log_file: Path) -> None:
    configure_logging(log_dir=log_file.parent, stream=None)
    logging.getLogger("bastion.test").warning("once")
    assert len([line for line in lines(log_file) if line.endswith("once")]) == 1


def test_the_file_rotates_by_size(tmp_path: Path) -> None:
    root = logging.getLogger()
    saved = list(root.handlers)
    try:
        path = configure_logging(
            log_dir=tmp_path / "logs", max_bytes=64 * 1024, backup_count=2, stream=None
        )
        for i in range(2000):
            logging.getLogger("bastion.test").warning("line %d %s", i, "x" * 100)
    finally:
        for handler in root.handlers:
            if handler not in saved:
                handler.close()
        root.handlers[:] = saved
    assert path.with_name("bastion.log.1").exists()
    assert path.with_name("bastion.log.2").exists()
    assert not path.with_name("bastion.log.3").exists()
    assert path.stat().st_size <= 64 * 1024


def test_the_redactor_forgets_the_oldest_secrets_beyond_its_bound() -> None:
    from bastion.logs import Redactor

    redactor = Redactor(limit=3)
    for n in range(4):
        redactor.register(f"secret-{n}")
    assert redactor.redact("secret-0 secret-1") == "secret-0 [REDACTED]"


def test_request_urls_from_httpx_stay_out_of_the_log(log_file: Path) -> None:
    logging.getLogger("httpx").info("HTTP Request: GET https://api.example/?key=plain-key-1")
    for handler in logging.getLogger().handlers:
        handler.flush()
    assert "plain-key-1" not in log_file.read_text()
