"""Audit records to syslog: RFC 5424 and ArcSight CEF formatting, UDP/TCP/TLS transport.

TCP and TLS frame each message by octet counting (RFC 6587 §3.4.1), so a message may hold
any byte; UDP carries one message per datagram (RFC 5426). Plain syslog has no
acknowledgement: a send that returned only means the kernel took the bytes, so a receiver
that dies right after may lose them. Callers retry on `SinkUnavailable` and the records'
`seq` lets a reader spot duplicates and gaps.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import select
import ssl
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from bastion.audit.chain import to_json

SEVERITY_WARNING = 4
SEVERITY_INFO = 6
MAX_UDP_MESSAGE = 65_000

# RFC 5424 §6 field limits.
_MAX_HOSTNAME = 255
_MAX_APP_NAME = 48
_MAX_MSGID = 32
_MAX_SD_NAME = 32

_SD_PARAMS = (
    "seq",
    "actor",
    "action",
    "target",
    "outcome",
    "client_ip",
    "request_id",
    "hash",
    "prev_hash",
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Record = Mapping[str, object]


class SinkUnavailable(Exception):
    """The syslog receiver could not be reached or a send failed; back off and retry."""


def _severity(record: Record) -> int:
    outcome = record["outcome"]
    if outcome == "success":
        return SEVERITY_INFO
    if outcome in ("failure", "denied"):
        return SEVERITY_WARNING
    raise ValueError(f"unknown audit outcome {outcome!r}")


def _utc_time(record: Record) -> datetime:
    moment = record["time"]
    if not isinstance(moment, datetime) or moment.tzinfo is None:
        raise ValueError("audit record 'time' must be a timezone-aware datetime")
    return moment.astimezone(UTC)


def _header_field(value: str, limit: int) -> str:
    # Header fields are PRINTUSASCII without spaces: anything else would shift the fields
    # a receiver parses, so a value could forge the ones after it.
    cleaned = "".join(ch if "!" <= ch <= "~" else "_" for ch in value)[:limit]
    return cleaned or "-"


def _sd_value(value: object) -> str:
    # RFC 5424 §6.3.3: only these three are escaped inside PARAM-VALUE.
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _record_json(record: Record) -> bytes:
    """The whole record as compact JSON with sorted keys, UTF-8 without a BOM."""
    return to_json(record).encode("utf-8")


def _rfc5424(
    record: Record,
    *,
    hostname: str,
    app_name: str,
    facility: int,
    structured_data: str,
    msg: bytes,
) -> bytes:
    if not 0 <= facility <= 23:
        raise ValueError(f"syslog facility must be 0..23, not {facility}")
    pri = facility * 8 + _severity(record)
    timestamp = _utc_time(record).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    header = " ".join(
        [
            f"<{pri}>1",
            timestamp,
            _header_field(hostname, _MAX_HOSTNAME),
            _header_field(app_name, _MAX_APP_NAME),
            "-",  # PROCID: one Bastion may run several processes; the hostname says which.
            _header_field(str(record["action"]), _MAX_MSGID),
        ]
    )
    return f"{header} {structured_data} ".encode() + msg


def format_rfc5424(
    record: Record,
    *,
    hostname: str,
    app_name: str = "bastion",
    facility: int = 13,
    enterprise_id: str = "32473",
) -> bytes:
    """An RFC 5424 message: the indexed fields as structured data, the record as JSON MSG."""
    sd_id = f"audit@{enterprise_id}"
    if not re.fullmatch(r"\d+(\.\d+)*", enterprise_id) or len(sd_id) > _MAX_SD_NAME:
        raise ValueError(f"invalid private enterprise number {enterprise_id!r}")
    params = " ".join(f'{name}="{_sd_value(record[name])}"' for name in _SD_PARAMS)
    return _rfc5424(
        record,
        hostname=hostname,
        app_name=app_name,
        facility=facility,
        structured_data=f"[{sd_id} {params}]",
        msg=_record_json(record),
    )


def _cef_header(value: object) -> str:
    # Encoded newlines are only allowed in extension values; the header is one line.
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return text.replace("\r", " ").replace("\n", " ")


def _cef_value(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r", "\\r").replace("\n", "\\n")


def format_cef(
    record: Record, *, vendor: str = "Bastion", product: str = "Bastion", version: str = "0.1"
) -> str:
    """An ArcSight CEF:0 line for the record."""
    action = str(record["action"])
    outcome = str(record["outcome"])
    severity = 3 if _severity(record) == SEVERITY_INFO else 7
    extension: dict[str, object] = {
        "rt": (_utc_time(record) - _EPOCH) // timedelta(milliseconds=1),
        "suser": record["actor"],
        "act": action,
        "outcome": outcome,
    }
    if record["client_ip"]:
        extension["src"] = record["client_ip"]
    extension |= {
        "cs1Label": "seq",
        "cs1": record["seq"],
        "cs2Label": "target",
        "cs2": record["target"],
        "cs3Label": "hash",
        "cs3": record["hash"],
        "cs4Label": "request_id",
        "cs4": record["request_id"],
        "msg": record["reason"],
    }
    header = "|".join(
        _cef_header(field)
        for field in (vendor, product, version, action, f"{action} {outcome}", severity)
    )
    values = " ".join(f"{key}={_cef_value(value)}" for key, value in extension.items())
    return f"CEF:0|{header}|{values}"


def format_cef_syslog(
    record: Record, *, hostname: str, app_name: str = "bastion", facility: int = 13
) -> bytes:
    """The CEF line as the MSG of an RFC 5424 message without structured data."""
    return _rfc5424(
        record,
        hostname=hostname,
        app_name=app_name,
        facility=facility,
        structured_data="-",
        msg=format_cef(record).encode("utf-8"),
    )


def _parse_url(url: str) -> tuple[str, str, int]:
    # Errors name the part, never echo the URL: it could carry credentials.
    parts = urlsplit(url)
    if parts.scheme not in ("udp", "tcp", "tls"):
        raise ValueError(f"syslog URL scheme must be udp, tcp or tls, not {parts.scheme!r}")
    if parts.username is not None or parts.password is not None:
        raise ValueError("syslog URL must not contain credentials")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("syslog URL must be scheme://host:port, without path or query")
    if not parts.hostname:
        raise ValueError("syslog URL has no host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("syslog URL port must be a number in 1..65535") from None
    if not port:
        raise ValueError("syslog URL has no port (1..65535)")
    return parts.scheme, parts.hostname, port


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.error: Exception | None = None

    def error_received(self, exc: Exception) -> None:
        # E.g. ICMP port unreachable for an earlier datagram: the receiver is down.
        self.error = exc


class SyslogSink:
    """Sends messages to one syslog receiver, connecting lazily and again after a failure."""

    def __init__(
        self,
        url: str,
        *,
        ca_file: Path | None = None,
        server_hostname: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        self.scheme, self.host, self.port = _parse_url(url)
        if self.scheme != "tls" and (ca_file is not None or server_hostname is not None):
            raise ValueError("ca_file and server_hostname only apply to tls:// syslog URLs")
        # create_default_context always verifies the certificate chain and the hostname.
        self._ssl = ssl.create_default_context(cafile=ca_file) if self.scheme == "tls" else None
        self._server_hostname = server_hostname
        self._timeout = timeout
        self._lock = asyncio.Lock()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._udp: asyncio.DatagramTransport | None = None
        self._udp_protocol = _UdpProtocol()

    async def send(self, messages: Sequence[bytes]) -> None:
        """Send `messages` in order; raises SinkUnavailable when they may not have been."""
        if self.scheme == "udp":
            for message in messages:
                if len(message) > MAX_UDP_MESSAGE:
                    raise ValueError(
                        f"a {len(message)}-byte message exceeds the {MAX_UDP_MESSAGE}-byte "
                        "UDP limit; use tcp:// or tls://"
                    )
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout):
                    if self.scheme == "udp":
                        await self._send_udp(messages)
                    else:
                        await self._send_stream(messages)
            except OSError as exc:  # includes ssl.SSLError and TimeoutError
                await self._disconnect()
                reason = str(exc) or type(exc).__name__
                raise SinkUnavailable(
                    f"syslog {self.scheme}://{self.host}:{self.port}: {reason}"
                ) from exc

    async def aclose(self) -> None:
        async with self._lock:
            await self._disconnect()

    async def _send_stream(self, messages: Sequence[bytes]) -> None:
        if self._writer is not None and self._peer_closed():
            await self._disconnect()
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(
                self.host,
                self.port,
                ssl=self._ssl,
                server_hostname=self._server_hostname if self._ssl else None,
            )
        self._writer.write(b"".join(b"%d %b" % (len(message), message) for message in messages))
        await self._writer.drain()

    def _peer_closed(self) -> bool:
        # A syslog receiver never sends data, so a readable socket means it closed the
        # connection, perhaps before the event loop noticed: writing would lose the
        # messages. (At worst an unread TLS session ticket costs a reconnect.)
        assert self._reader is not None and self._writer is not None
        if self._reader.at_eof() or self._writer.is_closing():
            return True
        poller = select.poll()
        poller.register(self._writer.get_extra_info("socket").fileno(), select.POLLIN)
        return bool(poller.poll(0))

    async def _send_udp(self, messages: Sequence[bytes]) -> None:
        if self._udp is None:
            self._udp_protocol = _UdpProtocol()
            self._udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(
                lambda: self._udp_protocol, remote_addr=(self.host, self.port)
            )
        for message in messages:
            self._raise_udp_error()
            self._udp.sendto(message)
        self._raise_udp_error()

    def _raise_udp_error(self) -> None:
        error = self._udp_protocol.error
        if error is not None:
            raise ConnectionError(f"receiver unreachable: {error}") from error

    async def _disconnect(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):  # the connection is already broken
                async with asyncio.timeout(self._timeout):
                    await writer.wait_closed()
        if self._udp is not None:
            self._udp.close()
            self._udp = None


def sink_from_url(url: str, *, ca_file: Path | None = None) -> SyslogSink:
    """A sink for `udp://host:port`, `tcp://host:port` or `tls://host:port`."""
    return SyslogSink(url, ca_file=ca_file)
