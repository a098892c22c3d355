from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bastion.audit.syslog import (
    MAX_UDP_MESSAGE,
    SinkUnavailable,
    SyslogSink,
    format_cef,
    format_cef_syslog,
    format_rfc5424,
    sink_from_url,
)
from tests.rsyslog import RsyslogServer, make_ca, run_rsyslog
from tests.services import free_port

HOST = "bastion-1.example"
TIME = datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)


def make_record(seq: int = 1, **changes: object) -> dict[str, object]:
    record: dict[str, object] = {
        "seq": seq,
        "time": TIME + timedelta(seconds=seq),
        "actor": "alice",
        "action": "credential.reveal",
        "target": "credential:db-prod",
        "outcome": "success",
        "reason": "",
        "client_ip": "192.0.2.10",
        "request_id": f"req-{seq}",
        "details": {"field": "password"},
        "prev_hash": hashlib.sha256(str(seq - 1).encode()).hexdigest(),
        "hash": hashlib.sha256(str(seq).encode()).hexdigest(),
    }
    return record | changes


def tricky_record(seq: int) -> dict[str, object]:
    """Quotes, backslashes, brackets, CEF separators and non-ASCII in every kind of field."""
    return make_record(
        seq,
        actor='José "ops" [admin]\\',
        target="clé]🔑|x=y",
        outcome=["success", "failure", "denied"][seq % 3],
        reason="line one\nline two = done | ok \\ ",
        request_id="" if seq % 2 else f"req-{seq}",
        client_ip="" if seq % 4 == 0 else "198.51.100.7",
        details={"note": "ünïcödé ✓", "n": seq, "nested": {"ok": True}},
    )


# A small RFC 5424 parser, written from the ABNF in RFC 5424 §6, to read messages back.

_HEADER = re.compile(rb"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")


@dataclass
class Parsed:
    pri: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    sd: dict[str, dict[str, str]] | None
    msg: str


def parse_sd(text: str) -> tuple[dict[str, dict[str, str]] | None, str]:
    """Structured data at the start of `text` and what follows it."""
    if text.startswith("-"):
        return None, text[1:]
    elements: dict[str, dict[str, str]] = {}
    i = 0
    while i < len(text) and text[i] == "[":
        match = re.compile(r'[^ =\]"]{1,32}').match(text, i + 1)
        assert match, text[i:]
        params = elements[match[0]] = {}
        i = match.end()
        while text[i] == " ":
            name = re.compile(r'([^ =\]"]{1,32})="').match(text, i + 1)
            assert name, text[i:]
            i, value = name.end(), []
            while text[i] != '"':
                if text[i] == "\\" and text[i + 1] in '"\\]':
                    i += 1
                value.append(text[i])
                i += 1
            params[name[1]] = "".join(value)
            i += 1
        assert text[i] == "]", text[i:]
        i += 1
    return elements, text[i:]


def parse_rfc5424(message: bytes) -> Parsed:
    header = _HEADER.match(message)
    assert header, message[:200]
    assert all(33 <= byte <= 126 for byte in b"".join(header.groups()))
    sd, rest = parse_sd(message[header.end() :].decode("utf-8"))
    assert rest == "" or rest.startswith(" ")
    pri, timestamp, hostname, app_name, procid, msgid = (f.decode("ascii") for f in header.groups())
    return Parsed(int(pri), timestamp, hostname, app_name, procid, msgid, sd, rest[1:])


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """CEF header fields (unescaped) and extension values (unescaped)."""
    assert line.startswith("CEF:0|")
    header: list[str] = []
    current: list[str] = []
    i = len("CEF:0|")
    while len(header) < 6:
        if line[i] == "\\":
            i += 1
            current.append(line[i])
        elif line[i] == "|":
            header.append("".join(current))
            current = []
        else:
            current.append(line[i])
        i += 1
    # A key is a word followed by "="; an "=" inside a value is always escaped.
    parts = re.split(r"(?:^| )([A-Za-z0-9]+)=", line[i:])
    assert parts[0] == ""
    unescape = {"n": "\n", "r": "\r"}
    extension = {
        key: re.sub(r"\\(.)", lambda m: unescape.get(m[1], m[1]), value, flags=re.DOTALL)
        for key, value in zip(parts[1::2], parts[2::2], strict=True)
    }
    return header, extension


def expected_json(record: dict[str, object]) -> dict[str, object]:
    def time(value: datetime) -> str:
        return value.isoformat(timespec="microseconds")

    decoded: dict[str, object] = json.loads(json.dumps(record, default=time))
    return decoded


# RFC 5424 formatting


@pytest.mark.parametrize(
    ("outcome", "facility", "pri"),
    [("success", 13, 110), ("failure", 13, 108), ("denied", 13, 108), ("denied", 4, 36)],
)
def test_pri_is_facility_times_eight_plus_severity(outcome: str, facility: int, pri: int) -> None:
    message = format_rfc5424(make_record(outcome=outcome), hostname=HOST, facility=facility)
    assert message.startswith(f"<{pri}>1 ".encode())
    assert parse_rfc5424(message).pri == pri


def test_header_fields_follow_rfc5424() -> None:
    message = format_rfc5424(make_record(7), hostname=HOST)
    parsed = parse_rfc5424(message)
    assert parsed.timestamp == "2024-05-06T07:08:16.123456Z"
    assert (parsed.hostname, parsed.app_name, parsed.procid, parsed.msgid) == (
        HOST,
        "bastion",
        "-",
        "credential.reveal",
    )


def test_timestamp_is_utc_with_microseconds_and_z() -> None:
    local = datetime(2024, 5, 6, 9, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    parsed = parse_rfc5424(format_rfc5424(make_record(time=local), hostname=HOST))
    assert parsed.timestamp == "2024-05-06T07:00:00.000000Z"


def test_naive_time_unknown_outcome_and_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_rfc5424(make_record(time=datetime(2024, 1, 1)), hostname=HOST)
    with pytest.raises(ValueError, match="outcome"):
        format_rfc5424(make_record(outcome="maybe"), hostname=HOST)
    with pytest.raises(ValueError, match="facility"):
        format_rfc5424(make_record(), hostname=HOST, facility=24)
    with pytest.raises(ValueError, match="enterprise"):
        format_rfc5424(make_record(), hostname=HOST, enterprise_id="acme")


def test_structured_data_holds_the_indexed_fields() -> None:
    record = make_record(3)
    parsed = parse_rfc5424(format_rfc5424(record, hostname=HOST))
    assert parsed.sd == {
        "audit@32473": {
            name: str(record[name])
            for name in (
                *("seq", "actor", "action", "target", "outcome"),
                *("client_ip", "request_id", "hash", "prev_hash"),
            )
        }
    }
    other = parse_rfc5424(format_rfc5424(record, hostname=HOST, enterprise_id="1.2.3"))
    assert other.sd is not None and list(other.sd) == ["audit@1.2.3"]


def test_sd_values_escape_quote_backslash_and_bracket() -> None:
    message = format_rfc5424(make_record(actor='a"b\\c]d'), hostname=HOST)
    assert b' actor="a\\"b\\\\c\\]d" ' in message
    parsed = parse_rfc5424(message)
    assert parsed.sd is not None and parsed.sd["audit@32473"]["actor"] == 'a"b\\c]d'


@given(st.text(), st.text())
def test_any_text_round_trips_through_sd_and_msg(actor: str, target: str) -> None:
    record = make_record(actor=actor, target=target)
    parsed = parse_rfc5424(format_rfc5424(record, hostname=HOST))
    assert parsed.sd is not None
    assert parsed.sd["audit@32473"]["actor"] == actor
    assert parsed.sd["audit@32473"]["target"] == target
    assert json.loads(parsed.msg) == expected_json(record)


def test_non_ascii_survives_as_utf8_in_sd_and_msg_without_bom() -> None:
    record = make_record(actor="José 🔑", details={"note": "ünïcödé"})
    message = format_rfc5424(record, hostname=HOST)
    assert "José 🔑".encode() in message and "ünïcödé".encode() in message
    parsed = parse_rfc5424(message)
    assert not parsed.msg.startswith("\ufeff")
    assert parsed.sd is not None and parsed.sd["audit@32473"]["actor"] == "José 🔑"
    assert json.loads(parsed.msg)["actor"] == "José 🔑"


def test_msg_is_the_whole_record_as_sorted_compact_json() -> None:
    record = make_record(5, details={"b": 1, "a": [1, "x"]})
    parsed = parse_rfc5424(format_rfc5424(record, hostname=HOST))
    expected = expected_json(record)
    assert expected["time"] == "2024-05-06T07:08:14.123456+00:00"
    assert parsed.msg == json.dumps(
        expected, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )


def test_header_fields_are_printable_ascii_within_rfc_limits() -> None:
    record = make_record(action="x" * 40)
    parsed = parse_rfc5424(format_rfc5424(record, hostname="h" * 300, app_name="a" * 60))
    assert (len(parsed.hostname), len(parsed.app_name), len(parsed.msgid)) == (255, 48, 32)
    odd = make_record(action="reveal\u00e9 now\n")
    parsed = parse_rfc5424(format_rfc5424(odd, hostname="my host\u00e9", app_name="b ast"))
    assert (parsed.hostname, parsed.app_name, parsed.msgid) == ("my_host_", "b_ast", "reveal__now_")
    assert parse_rfc5424(format_rfc5424(make_record(), hostname="")).hostname == "-"


# CEF formatting


def test_cef_line_has_the_header_and_extension_fields() -> None:
    record = make_record(9, outcome="denied", reason="not allowed")
    line = format_cef(record)
    assert line.startswith(
        "CEF:0|Bastion|Bastion|0.1|credential.reveal|credential.reveal denied|7|rt="
    )
    header, extension = parse_cef(line)
    assert header[-1] == "7"
    assert extension == {
        "rt": str(int((TIME + timedelta(seconds=9)).timestamp() * 1000)),
        "suser": "alice",
        "act": "credential.reveal",
        "outcome": "denied",
        "src": "192.0.2.10",
        "cs1Label": "seq",
        "cs1": "9",
        "cs2Label": "target",
        "cs2": "credential:db-prod",
        "cs3Label": "hash",
        "cs3": str(record["hash"]),
        "cs4Label": "request_id",
        "cs4": "req-9",
        "msg": "not allowed",
    }


def test_cef_severity_is_low_for_success_and_src_is_omitted_without_client_ip() -> None:
    header, extension = parse_cef(format_cef(make_record(client_ip="")))
    assert header[-1] == "3"
    assert "src" not in extension


def test_cef_header_escapes_pipe_and_backslash() -> None:
    line = format_cef(make_record(action="a|b\\c"), vendor="V|1", version="1\n2")
    assert line.startswith("CEF:0|V\\|1|Bastion|1 2|a\\|b\\\\c|a\\|b\\\\c success|3|")
    header, extension = parse_cef(line)
    assert header == ["V|1", "Bastion", "1 2", "a|b\\c", "a|b\\c success", "3"]
    assert extension["act"] == "a|b\\c"


def test_cef_extension_escapes_backslash_equals_and_newlines() -> None:
    line = format_cef(make_record(reason="a=b\\c\nd\re|f"))
    assert line.endswith(" msg=a\\=b\\\\c\\nd\\re|f")
    assert "\n" not in line and "\r" not in line
    assert parse_cef(line)[1]["msg"] == "a=b\\c\nd\re|f"


@given(st.text(), st.text(), st.text().filter(lambda s: "\n" not in s and "\r" not in s))
def test_any_text_round_trips_through_cef(reason: str, target: str, action: str) -> None:
    line = format_cef(make_record(reason=reason, target=target, action=action))
    assert "\n" not in line and "\r" not in line
    header, extension = parse_cef(line)
    assert (header[3], extension["act"]) == (action, action)
    assert (extension["msg"], extension["cs2"]) == (reason, target)


def test_cef_syslog_is_rfc5424_whose_msg_is_the_cef_line_without_sd() -> None:
    record = make_record(outcome="failure", actor="José")
    parsed = parse_rfc5424(format_cef_syslog(record, hostname=HOST))
    assert (parsed.pri, parsed.hostname, parsed.msgid, parsed.sd) == (
        108,
        HOST,
        "credential.reveal",
        None,
    )
    assert parsed.msg == format_cef(record)


# Sink construction


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://127.0.0.1:514", "scheme"),
        ("tcp://:514", "no host"),
        ("tcp://127.0.0.1", "no port"),
        ("tcp://127.0.0.1:0", "no port"),
        ("tcp://127.0.0.1:70000", "port"),
        ("tcp://127.0.0.1:syslog", "port"),
        ("tcp://user:hunter2@127.0.0.1:514", "credentials"),
        ("tcp://127.0.0.1:514/x", "path"),
        ("udp://127.0.0.1:514?x=1", "query"),
    ],
)
def test_sink_url_is_validated(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as error:
        sink_from_url(url)
    assert "hunter2" not in str(error.value)


def test_ca_file_only_applies_to_tls(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls"):
        sink_from_url("tcp://127.0.0.1:514", ca_file=tmp_path / "ca.pem")
    sink = sink_from_url("tls://[::1]:6514")
    assert (sink.scheme, sink.host, sink.port) == ("tls", "::1", 6514)


async def test_udp_refuses_messages_too_big_for_a_datagram() -> None:
    sink = sink_from_url(f"udp://127.0.0.1:{free_port()}")
    with pytest.raises(ValueError, match="65001-byte"):
        await sink.send([b"x", b"x" * (MAX_UDP_MESSAGE + 1)])
    await sink.aclose()


async def test_unreachable_tcp_receiver_raises_sink_unavailable() -> None:
    port = free_port()
    sink = sink_from_url(f"tcp://127.0.0.1:{port}")
    with pytest.raises(SinkUnavailable, match=f"tcp://127.0.0.1:{port}"):
        await sink.send([b"x"])
    await sink.aclose()


async def test_udp_receiver_refusing_datagrams_raises_sink_unavailable() -> None:
    # On loopback the ICMP "port unreachable" for the first datagram fails the second.
    sink = sink_from_url(f"udp://127.0.0.1:{free_port()}")
    with pytest.raises(SinkUnavailable, match="unreachable"):
        await sink.send([b"x", b"y"])
    await sink.aclose()


# A real rsyslogd


@pytest.fixture
def rsyslog() -> Iterator[RsyslogServer]:
    with run_rsyslog() as server:
        yield server


def make_sink(server: RsyslogServer, listener: str) -> SyslogSink:
    return sink_from_url(
        server.url(listener), ca_file=server.ca_file if listener == "tls" else None
    )


def assert_arrived_intact(received: list[dict[str, str]], sent: list[bytes]) -> None:
    """rsyslog got each message byte for byte and parsed it into the same RFC 5424 fields."""
    assert [line["raw"] for line in received] == [message.decode() for message in sent]
    for line, message in zip(received, sent, strict=True):
        ours = parse_rfc5424(message)
        assert (line["pri"], line["timestamp"]) == (str(ours.pri), ours.timestamp)
        assert (line["hostname"], line["app_name"], line["procid"], line["msgid"]) == (
            ours.hostname,
            ours.app_name,
            ours.procid,
            ours.msgid,
        )
        assert parse_sd(line["sd"]) == (ours.sd, "")
        assert line["msg"] == ours.msg


@pytest.mark.services
@pytest.mark.parametrize("listener", ["udp", "tcp", "tls"])
async def test_rfc5424_records_reach_rsyslog_intact_once_and_in_order(
    rsyslog: RsyslogServer, listener: str
) -> None:
    records = [tricky_record(seq) for seq in range(1, 21)]
    sent = [format_rfc5424(record, hostname=HOST) for record in records]
    sink = make_sink(rsyslog, listener)
    try:
        await sink.send(sent[:-1])
        await sink.send(sent[-1:])  # a second batch on the same connection
    finally:
        await sink.aclose()
    received = rsyslog.wait_received(listener, len(sent))
    if listener == "udp":  # datagrams may be reordered
        received.sort(key=lambda line: json.loads(line["msg"])["seq"])
    assert_arrived_intact(received, sent)
    assert [json.loads(line["msg"]) for line in received] == [expected_json(r) for r in records]


@pytest.mark.services
async def test_largest_udp_message_reaches_rsyslog_intact(rsyslog: RsyslogServer) -> None:
    record = make_record(details={"blob": ""})
    padding = MAX_UDP_MESSAGE - len(format_rfc5424(record, hostname=HOST))
    message = format_rfc5424(make_record(details={"blob": "x" * padding}), hostname=HOST)
    assert len(message) == MAX_UDP_MESSAGE
    sink = make_sink(rsyslog, "udp")
    try:
        await sink.send([message])
    finally:
        await sink.aclose()
    assert_arrived_intact(rsyslog.wait_received("udp", 1), [message])


@pytest.mark.services
@pytest.mark.parametrize("listener", ["tcp", "tls"])
async def test_cef_records_reach_rsyslog_intact_once_and_in_order(
    rsyslog: RsyslogServer, listener: str
) -> None:
    records = [tricky_record(seq) for seq in range(1, 21)]
    sent = [format_cef_syslog(record, hostname=HOST) for record in records]
    sink = make_sink(rsyslog, listener)
    try:
        await sink.send(sent)
    finally:
        await sink.aclose()
    received = rsyslog.wait_received(listener, len(sent))
    assert_arrived_intact(received, sent)
    for line, record in zip(received, records, strict=True):
        _, extension = parse_cef(line["msg"])
        assert (extension["suser"], extension["cs2"], extension["msg"]) == (
            record["actor"],
            record["target"],
            record["reason"],
        )


@pytest.mark.services
@pytest.mark.parametrize("trusted", ["another CA", "the system store"])
async def test_tls_refuses_a_server_certificate_from_an_untrusted_ca(
    rsyslog: RsyslogServer, tmp_path: Path, trusted: str
) -> None:
    ca_file = (
        make_ca("Someone else").write(tmp_path / "other.pem")
        if trusted != "the system store"
        else None
    )
    sink = sink_from_url(rsyslog.url("tls"), ca_file=ca_file)
    with pytest.raises(SinkUnavailable, match="certificate verify failed"):
        await sink.send([format_rfc5424(make_record(1), hostname=HOST)])
    await sink.aclose()
    await assert_only_this_arrives_on_tls(rsyslog)


@pytest.mark.services
async def test_tls_refuses_a_certificate_for_another_host(rsyslog: RsyslogServer) -> None:
    sink = SyslogSink(rsyslog.url("tls"), ca_file=rsyslog.ca_file, server_hostname="syslog.example")
    with pytest.raises(SinkUnavailable, match="certificate verify failed"):
        await sink.send([format_rfc5424(make_record(1), hostname=HOST)])
    await sink.aclose()
    await assert_only_this_arrives_on_tls(rsyslog)


async def assert_only_this_arrives_on_tls(rsyslog: RsyslogServer) -> None:
    # A trusted sink's marker is the first and only message rsyslog writes after a refusal.
    marker = format_rfc5424(make_record(99), hostname="marker")
    sink = make_sink(rsyslog, "tls")
    try:
        await sink.send([marker])
    finally:
        await sink.aclose()
    assert_arrived_intact(rsyslog.wait_received("tls", 1), [marker])


@pytest.mark.services
@pytest.mark.parametrize("listener", ["tcp", "tls"])
async def test_send_fails_while_rsyslog_is_down_and_a_retry_succeeds_after_restart(
    rsyslog: RsyslogServer, listener: str
) -> None:
    sent = [format_rfc5424(tricky_record(seq), hostname=HOST) for seq in range(1, 11)]
    sink = make_sink(rsyslog, listener)
    try:
        await sink.send(sent[:5])
        rsyslog.wait_received(listener, 5)
        rsyslog.stop()
        with pytest.raises(SinkUnavailable):
            await sink.send(sent[5:])
        with pytest.raises(SinkUnavailable):  # still down: reconnecting fails too
            await sink.send(sent[5:])
        rsyslog.start()  # same ports
        await sink.send(sent[5:])  # the caller's retry
    finally:
        await sink.aclose()
    assert_arrived_intact(rsyslog.wait_received(listener, 10), sent)
