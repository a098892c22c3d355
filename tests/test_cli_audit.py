from __future__ import annotations

import json
import os
import queue
import signal
import sqlite3
import subprocess
import threading
from contextlib import closing
from pathlib import Path

import pytest

from bastion.audit.chain import Event, hash_value
from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring, decode_key
from bastion.db import Database
from tests.test_cli import BASTION, run

RECORD_KEYS = {
    "seq",
    "time",
    "actor",
    "action",
    "target",
    "outcome",
    "reason",
    "client_ip",
    "request_id",
    "details",
    "key_id",
    "prev_hash",
    "hash",
}


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.fixture
def env(tmp_path: Path, master_key: str) -> dict[str, str]:
    """A workspace and a credential that was created and revealed: records 1 and 2."""
    env = {"BASTION_MASTER_KEY": master_key, "BASTION_DATA_DIR": str(tmp_path / "data")}
    ok(run(["workspaces", "add", "ops"], env, tmp_path))
    put = ["vault", "put", "deploy", "--workspace", "ops", "--field", "token=-"]
    ok(run(put, env, tmp_path, "a token value\n"))
    reveal = ["vault", "reveal", "deploy", "--workspace", "ops", "--reason", "audit test"]
    ok(run(reveal, env, tmp_path))
    return env


def database_file(env: dict[str, str]) -> Path:
    return Path(env["BASTION_DATA_DIR"]) / "bastion.db"


async def append(env: dict[str, str], event: Event) -> int:
    db = Database(f"sqlite+aiosqlite:///{database_file(env)}")
    try:
        seq = await AuditLog(db, Keyring(decode_key(env["BASTION_MASTER_KEY"]))).record(event)
    finally:
        await db.dispose()
    assert seq is not None
    return seq


def export(env: dict[str, str], cwd: Path, *args: str) -> list[dict[str, object]]:
    out = ok(run(["audit", "export", *args], env, cwd))
    return [json.loads(line) for line in out.splitlines()]


def test_verify_is_ok_then_names_the_first_tampered_record(
    env: dict[str, str], tmp_path: Path
) -> None:
    assert ok(run(["audit", "verify"], env, tmp_path)).strip() == (
        "audit chain OK: 2 record(s) verified, head 2"
    )
    with closing(sqlite3.connect(database_file(env))) as conn, conn:
        conn.execute("UPDATE audit_events SET reason = 'nothing to see' WHERE seq = 2")
    broken = run(["audit", "verify"], env, tmp_path)
    assert broken.returncode == 1
    assert broken.stdout.strip() == (
        "audit chain BROKEN at record 2: its contents do not match its hash: modified "
        "(2 record(s) read, head 2)"
    )
    assert "Traceback" not in broken.stderr


def test_verify_notices_a_removed_record(env: dict[str, str], tmp_path: Path) -> None:
    ok(run(["vault", "test", "deploy", "--workspace", "ops"], env, tmp_path))  # record 3
    with closing(sqlite3.connect(database_file(env))) as conn, conn:
        conn.execute("DELETE FROM audit_events WHERE seq = 2")
    broken = run(["audit", "verify"], env, tmp_path)
    assert broken.returncode == 1
    assert broken.stdout.startswith("audit chain BROKEN at record 2: expected record 2, found 3")


async def test_hash_matches_the_value_stored_in_details(
    env: dict[str, str], tmp_path: Path
) -> None:
    keyring = Keyring(decode_key(env["BASTION_MASTER_KEY"]))
    seq = await append(
        env,
        Event(
            "auth.sign_in",
            actor="anonymous",
            outcome="failure",
            details={"username": hash_value(keyring, "mallory")},
        ),
    )
    stored = export(env, tmp_path, "--since", str(seq))[0]["details"]
    assert isinstance(stored, dict)
    assert ok(run(["audit", "hash", "mallory"], env, tmp_path)).strip() == stored["username"]
    from_stdin = ok(run(["audit", "hash", "-"], env, tmp_path, "mallory\n")).strip()
    assert from_stdin == stored["username"]
    assert from_stdin.startswith("hmac-sha256:") and len(from_stdin) == len("hmac-sha256:") + 64
    assert ok(run(["audit", "hash", "alice"], env, tmp_path)).strip() != stored["username"]


def test_export_prints_json_lines_between_bounds(env: dict[str, str], tmp_path: Path) -> None:
    ok(run(["vault", "test", "deploy", "--workspace", "ops"], env, tmp_path))  # record 3
    records = export(env, tmp_path, "--since", "1")
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert all(set(r) == RECORD_KEYS for r in records)
    assert [r["action"] for r in records] == [
        "credential.create",
        "credential.reveal",
        "credential.test",
    ]
    assert records[1]["reason"] == "audit test" and records[1]["actor"] == "cli"
    assert records[1]["details"] == {"name": "deploy", "workspace_id": 1}
    assert records[1]["prev_hash"] == records[0]["hash"]
    assert "a token value" not in json.dumps(records)

    assert [r["seq"] for r in export(env, tmp_path, "--since", "2", "--until", "2")] == [2]
    second = str(records[1]["time"])
    assert [r["seq"] for r in export(env, tmp_path, "--since", second)] == [2, 3]
    assert [r["seq"] for r in export(env, tmp_path, "--since", "1", "--until", second)] == [1, 2]
    assert export(env, tmp_path, "--since", "2999-01-01") == []
    naive = second.removesuffix("+00:00")  # no zone: UTC
    assert [r["seq"] for r in export(env, tmp_path, "--since", naive)] == [2, 3]

    bad = run(["audit", "export", "--since", "yesterday"], env, tmp_path)
    assert bad.returncode == 1
    assert bad.stderr.splitlines() == [
        "error: --since: expected a record number or an ISO 8601 date/time, got 'yesterday'"
    ]


def test_tail_prints_the_last_records(env: dict[str, str], tmp_path: Path) -> None:
    lines = ok(run(["audit", "tail", "-n", "1"], env, tmp_path)).splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("2  ") and "credential.reveal" in lines[0]
    assert "reason='audit test'" in lines[0] and "actor=cli" in lines[0]
    both = ok(run(["audit", "tail"], env, tmp_path)).splitlines()
    assert [line.split()[0] for line in both] == ["1", "2"]
    as_json = ok(run(["audit", "tail", "-n", "2", "--json"], env, tmp_path)).splitlines()
    assert [json.loads(line)["seq"] for line in as_json] == [1, 2]


async def test_tail_keeps_control_characters_off_the_terminal(
    env: dict[str, str], tmp_path: Path
) -> None:
    await append(env, Event("auth.sign_in", actor="anonymous", target="/x\x1b[2J\nforged"))
    line = ok(run(["audit", "tail", "-n", "1"], env, tmp_path))
    assert "\x1b" not in line and line.count("\n") == 1
    assert "target=/x\\u001b[2J\\u000aforged" in line


def test_tail_follow_prints_new_records_until_interrupted(
    env: dict[str, str], tmp_path: Path
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    proc = subprocess.Popen(
        [*BASTION, "audit", "tail", "-n", "1", "--follow"],
        env={**clean, **env},
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    assert proc.stdout is not None
    stdout = proc.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        assert lines.get(timeout=60).startswith("2  ")
        ok(run(["vault", "test", "deploy", "--workspace", "ops"], env, tmp_path))
        followed = lines.get(timeout=30)
        assert followed.startswith("3  ") and "credential.test" in followed
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
