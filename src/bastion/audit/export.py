"""Shipping the audit trail to SIEMs: JSON Lines files, syslog (RFC 5424 or CEF), HTTP.

Each exporter has a cursor in the database: the last seq it delivered. A batch is sent,
then the cursor moves, so a crash in between sends the batch again (at-least-once; the
seq tells a receiver what it has already seen) and nothing is skipped across restarts.
Each batch ends with a signed checkpoint of the head it reached: a copy of the chain's
head outside the database, which is what exposes a deleted tail.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import httpx
from prometheus_client import Gauge

from bastion.audit.chain import Checkpoint, sign_checkpoint, to_json
from bastion.audit.log import AuditLog
from bastion.audit.syslog import (
    SinkUnavailable,
    format_cef_syslog,
    format_rfc5424,
    sink_from_url,
)
from bastion.db.tables import AuditCursor, AuditEvent
from bastion.db.types import utcnow

logger = logging.getLogger("bastion.audit.export")
LAG = Gauge("bastion_audit_export_lag", "Audit records not yet delivered", ["exporter"])
BATCH = 500
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0


def as_record(row: AuditEvent) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "time": row.time,
        "actor": row.actor,
        "action": row.action,
        "target": row.target,
        "outcome": row.outcome,
        "reason": row.reason,
        "client_ip": row.client_ip,
        "request_id": row.request_id,
        "details": json.loads(row.details),
        "key_id": row.key_id,
        "prev_hash": row.prev_hash,
        "hash": row.hash,
    }


class Exporter(Protocol):
    name: str

    async def deliver(self, records: Sequence[dict[str, Any]], checkpoint: Checkpoint) -> None:
        """Deliver or raise SinkUnavailable; a partial delivery is retried whole."""

    async def aclose(self) -> None: ...


class JsonLinesExporter:
    """One JSON object per line; the file is rotated by size (path.1 … path.N)."""

    name = "jsonl"

    def __init__(self, path: Path, *, max_bytes: int, backups: int = 5) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups

    def _write(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size >= self.max_bytes:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "a", encoding="utf-8") as handle:
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())  # the cursor moves next: the lines must be on disk

    async def deliver(self, records: Sequence[dict[str, Any]], checkpoint: Checkpoint) -> None:
        lines = [to_json(r) for r in records] + [to_json(checkpoint.as_dict())]
        try:
            await asyncio.to_thread(self._write, lines)
        except OSError as exc:
            raise SinkUnavailable(f"cannot write {self.path}: {exc.strerror}") from None

    async def aclose(self) -> None:
        return None


class SyslogExporter:
    def __init__(self, url: str, *, fmt: str, ca_file: Path | None = None) -> None:
        self.name = f"syslog-{fmt}"
        self.fmt = fmt
        self.sink = sink_from_url(url, ca_file=ca_file)
        self.hostname = socket.gethostname()

    def _format(self, record: dict[str, Any]) -> bytes:
        if self.fmt == "cef":
            return format_cef_syslog(record, hostname=self.hostname)
        return format_rfc5424(record, hostname=self.hostname)

    async def deliver(self, records: Sequence[dict[str, Any]], checkpoint: Checkpoint) -> None:
        head = checkpoint.as_dict()
        marker = {
            **records[-1],
            "action": "audit.checkpoint",
            "details": head,
            "reason": "",
        }
        await self.sink.send([self._format(r) for r in records] + [self._format(marker)])

    async def aclose(self) -> None:
        await self.sink.aclose()


class HttpExporter:
    """POSTs {"records": [...], "checkpoint": {...}} batches; any 2xx is a delivery."""

    name = "http"

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self.http = httpx.AsyncClient(timeout=timeout, follow_redirects=False)

    async def deliver(self, records: Sequence[dict[str, Any]], checkpoint: Checkpoint) -> None:
        body = '{"records":[' + ",".join(to_json(r) for r in records) + "],"
        body += '"checkpoint":' + to_json(checkpoint.as_dict()) + "}"
        try:
            response = await self.http.post(
                self.url, content=body, headers={"content-type": "application/json"}
            )
        except httpx.HTTPError as exc:
            raise SinkUnavailable(f"HTTP sink unreachable ({type(exc).__name__})") from None
        if not response.is_success:
            raise SinkUnavailable(f"HTTP sink answered {response.status_code}")

    async def aclose(self) -> None:
        await self.http.aclose()


class Shipper:
    """Moves one exporter's cursor forward, batch by batch, backing off while it is down."""

    def __init__(self, audit: AuditLog, exporter: Exporter, *, poll_seconds: float = 1.0) -> None:
        self.audit = audit
        self.exporter = exporter
        self.poll_seconds = poll_seconds

    async def cursor(self) -> int:
        async with self.audit.db.session() as session:
            row = await session.get(AuditCursor, self.exporter.name)
            return row.seq if row else 0

    async def _advance(self, seq: int) -> None:
        async with self.audit.db.transaction() as session:
            row = await session.get(AuditCursor, self.exporter.name)
            if row is None:
                session.add(AuditCursor(exporter=self.exporter.name, seq=seq, updated_at=utcnow()))
            else:
                row.seq, row.updated_at = seq, utcnow()

    async def ship_once(self) -> int:
        """Deliver one batch; returns how many records went (0: nothing new)."""
        after = await self.cursor()
        rows = await self.audit.events(after=after, limit=BATCH)
        LAG.labels(self.exporter.name).set(max(0, await self.audit.head() - after))
        if not rows:
            return 0
        head = rows[-1]
        point = sign_checkpoint(self.audit.keyring, head.seq, head.hash, utcnow())
        await self.exporter.deliver([as_record(r) for r in rows], point)
        await self._advance(head.seq)
        LAG.labels(self.exporter.name).set(max(0, await self.audit.head() - head.seq))
        return len(rows)

    async def run(self) -> None:
        delay = BACKOFF_FIRST
        try:
            while True:
                try:
                    sent = await self.ship_once()
                    delay = BACKOFF_FIRST
                except SinkUnavailable as exc:
                    logger.warning(
                        "audit export %s: %s; retrying in %.0f s", self.exporter.name, exc, delay
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, BACKOFF_MAX)
                    continue
                if sent < BATCH:
                    await asyncio.sleep(self.poll_seconds)
        finally:
            await self.exporter.aclose()


async def latest_checkpoints(path: Path) -> list[dict[str, Any]]:
    """The checkpoint lines of a JSON Lines export (for `verify`)."""

    def read() -> list[dict[str, Any]]:
        found = []
        for file in sorted(path.parent.glob(path.name + "*")):
            for line in file.read_text(encoding="utf-8").splitlines():
                if '"type":"checkpoint"' in line:
                    found.append(json.loads(line))
        return found

    return await asyncio.to_thread(read)


def configured_exporters(
    *,
    jsonl_path: Path | None,
    jsonl_max_bytes: int,
    syslog_url: str | None,
    syslog_format: str,
    syslog_ca_file: Path | None,
    http_url: str | None,
) -> list[Exporter]:
    exporters: list[Exporter] = []
    if jsonl_path is not None:
        exporters.append(JsonLinesExporter(jsonl_path, max_bytes=jsonl_max_bytes))
    if syslog_url is not None:
        exporters.append(SyslogExporter(syslog_url, fmt=syslog_format, ca_file=syslog_ca_file))
    if http_url is not None:
        exporters.append(HttpExporter(http_url))
    return exporters
