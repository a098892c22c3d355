from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from bastion.audit.chain import Event, checkpoint_from
from bastion.audit.export import HttpExporter, JsonLinesExporter, Shipper, SyslogExporter
from bastion.audit.log import AuditLog, AuditUnavailable
from bastion.audit.syslog import SinkUnavailable
from bastion.audit.verify import verify
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from tests.rsyslog import RsyslogServer, run_rsyslog


async def fill(audit: AuditLog, start: int, count: int) -> None:
    for n in range(start, start + count):
        await audit.record(Event("test.export", f"user:u{n}", target=f"t{n}", details={"n": n}))


@pytest.fixture
def rsyslog() -> Iterator[RsyslogServer]:
    with run_rsyslog() as server:
        yield server


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize(("listener", "fmt"), [("tcp", "rfc5424"), ("tls", "cef")])
async def test_records_queue_while_the_sink_is_down_and_arrive_once_it_is_back(
    audit: AuditLog, rsyslog: RsyslogServer, listener: str, fmt: str
) -> None:
    ca_file = rsyslog.ca_file if listener == "tls" else None
    exporter = SyslogExporter(rsyslog.url(listener), fmt=fmt, ca_file=ca_file)
    shipper = Shipper(audit, exporter)
    try:
        await fill(audit, 1, 5)
        assert await shipper.ship_once() == 5
        rsyslog.wait_received(listener, 6)  # five records and a checkpoint
        rsyslog.stop()
        await fill(audit, 6, 5)
        with pytest.raises(SinkUnavailable):
            await shipper.ship_once()
        assert await shipper.cursor() == 5  # nothing counted as delivered
        rsyslog.start()
        assert await shipper.ship_once() == 5
        received = rsyslog.wait_received(listener, 12)
    finally:
        await exporter.aclose()
    raw = "\n".join(m["raw"] for m in received)
    for n in range(1, 11):
        assert f"user:u{n}" in raw
    assert len(received) == 12
    assert sum("audit.checkpoint" in m["raw"] for m in received) == 2


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_jsonl_export_carries_checkpoints_that_catch_a_deleted_tail(
    audit: AuditLog, db: Database, keyring: Keyring, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    shipper = Shipper(audit, JsonLinesExporter(path, max_bytes=10**6))
    await fill(audit, 1, 4)
    await shipper.ship_once()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["seq"] for line in lines[:4]] == [1, 2, 3, 4]
    point = checkpoint_from(keyring, lines[-1])
    assert point.seq == 4
    async with db.transaction() as session:
        await session.execute(text("DELETE FROM audit_events WHERE seq >= 3"))
        await session.execute(text("DELETE FROM audit_cursors"))
    verdict = await verify(db, keyring, [point])
    assert not verdict.ok and verdict.first_bad_seq == 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_the_jsonl_file_rotates_by_size_without_losing_records(
    audit: AuditLog, tmp_path: Path
) -> None:
    path = tmp_path / "audit.jsonl"
    shipper = Shipper(audit, JsonLinesExporter(path, max_bytes=64 * 1024, backups=3))
    for batch in range(4):
        await fill(audit, batch * 200 + 1, 200)
        await shipper.ship_once()
    files = sorted(tmp_path.glob("audit.jsonl*"))
    assert len(files) > 1
    seqs = sorted(
        json.loads(line)["seq"]
        for file in files
        for line in file.read_text().splitlines()
        if '"checkpoint"' not in line
    )
    assert seqs == list(range(1, 801))


class _Receiver(BaseHTTPRequestHandler):
    batches: list[dict[str, Any]] = []
    fail = False

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        if type(self).fail:
            self.send_response(503)
        else:
            type(self).batches.append(json.loads(body))
            self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_http_batches_are_retried_until_the_receiver_accepts_them(
    audit: AuditLog,
) -> None:
    _Receiver.batches, _Receiver.fail = [], True
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    exporter = HttpExporter(f"http://127.0.0.1:{server.server_address[1]}/ingest")
    try:
        shipper = Shipper(audit, exporter)
        await fill(audit, 1, 3)
        with pytest.raises(SinkUnavailable, match="503"):
            await shipper.ship_once()
        _Receiver.fail = False
        assert await shipper.ship_once() == 3
    finally:
        await exporter.aclose()
        server.shutdown()
        thread.join()
        server.server_close()
    [batch] = _Receiver.batches
    assert [r["seq"] for r in batch["records"]] == [1, 2, 3]
    assert batch["checkpoint"]["seq"] == 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_fail_closed_refuses_what_it_cannot_record(db: Database, keyring: Keyring) -> None:
    async with db.transaction() as session:
        await session.execute(text("DROP TABLE audit_events"))  # every append now fails
    with pytest.raises(AuditUnavailable):
        await AuditLog(db, keyring, fail_closed=True).record(Event("x.y", "cli"))
    assert await AuditLog(db, keyring).record(Event("x.y", "cli")) is None
