from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from bastion.db.migrate import head_revision
from tests.services import free_port, port_open, wait_until

BASTION = [sys.executable, "-m", "bastion"]


def run(
    args: list[str], env: dict[str, str], cwd: Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    return subprocess.run(
        [*BASTION, *args],
        env={**clean, **env},
        cwd=cwd,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


BAD_ENV = {
    "BASTION_MASTER_KEY": "too-short",
    "BASTION_DATABASE_URL": "mysql://db/x",
    "BASTION_REDIS_URL": "redis://cache:nope",
    "BASTION_TIMEZONE": "Atlantis/Capital",
    "BASTION_PORT": "99999",
    "BASTION_SESSION_COOKIE_SECURE": "false",
}
EXPECTED_LINES = {
    "BST-E002 BASTION_MASTER_KEY: must be 32 bytes encoded as base64 "
    "(`bastion init` generates one)",
    "BST-E003 BASTION_DATABASE_URL: unsupported database (use sqlite:///PATH or postgresql://…)",
    "BST-E004 BASTION_REDIS_URL: cannot parse the Redis URL (expected redis://HOST:PORT/DB)",
    "BST-E005 BASTION_TIMEZONE: unknown timezone (use an IANA name such as Europe/Berlin) "
    "(got 'Atlantis/Capital')",
    "BST-E006 BASTION_PORT: must be at most 65535 (got '99999')",
    "BST-E007 BASTION_SESSION_COOKIE_SECURE: false sends session cookies over plain HTTP; "
    "set BASTION_ACKNOWLEDGE_PLAIN_HTTP=true to confirm the deployment is HTTP-only",
}


def test_check_config_prints_every_problem_one_per_line_and_exits_non_zero(tmp_path: Path) -> None:
    result = run(["check-config"], BAD_ENV, tmp_path)
    assert result.returncode == 2
    assert set(result.stderr.splitlines()) == EXPECTED_LINES
    assert result.stdout == ""


def test_serve_refuses_to_start_with_the_same_lines_and_no_traceback(tmp_path: Path) -> None:
    check = run(["check-config"], BAD_ENV, tmp_path)
    serve = run(["serve"], BAD_ENV, tmp_path)
    assert serve.returncode == 2
    assert serve.stderr == check.stderr
    assert "Traceback" not in serve.stderr + serve.stdout
    assert not (tmp_path / "bastion-data").exists()


def test_check_config_accepts_a_valid_configuration(tmp_path: Path, master_key: str) -> None:
    result = run(["check-config"], {"BASTION_MASTER_KEY": master_key}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "configuration OK (database: sqlite+aiosqlite, stores: memory)"


def test_check_config_shows_an_acknowledged_plain_http_warning(
    tmp_path: Path, master_key: str
) -> None:
    env = {
        "BASTION_MASTER_KEY": master_key,
        "BASTION_SESSION_COOKIE_SECURE": "false",
        "BASTION_ACKNOWLEDGE_PLAIN_HTTP": "true",
    }
    result = run(["check-config"], env, tmp_path)
    assert result.returncode == 0
    assert result.stderr.startswith("warning: BST-W001 BASTION_SESSION_COOKIE_SECURE:")


def test_init_creates_a_private_key_database_and_prints_the_admin_password_once(
    tmp_path: Path,
) -> None:
    first = run(["init"], {}, tmp_path)
    assert first.returncode == 0, first.stderr
    data = tmp_path / "bastion-data"
    key = data / "master.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "bastion.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "logs").stat().st_mode) == 0o700
    password_lines = [line for line in first.stdout.splitlines() if "shown once" in line]
    assert len(password_lines) == 1
    password = password_lines[0].rsplit(" ", 1)[1]
    key_text = key.read_text()

    second = run(["init"], {}, tmp_path)
    assert second.returncode == 0, second.stderr
    assert "shown once" not in second.stdout
    assert key.read_text() == key_text  # never overwritten
    for path in data.rglob("*"):
        if path.is_file():
            assert password.encode() not in path.read_bytes(), path


def test_init_takes_the_admin_password_from_the_environment(tmp_path: Path) -> None:
    result = run(["init"], {"BASTION_ADMIN_PASSWORD": "an operator passphrase"}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "shown once" not in result.stdout
    assert "an operator passphrase" not in result.stdout + result.stderr


def test_migrate_reports_the_schema_revision(tmp_path: Path, master_key: str) -> None:
    result = run(["migrate"], {"BASTION_MASTER_KEY": master_key}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"database schema at revision {head_revision()}"


def test_serve_on_the_embedded_default_answers_healthz_and_stops_cleanly(tmp_path: Path) -> None:
    assert run(["init"], {}, tmp_path).returncode == 0
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    proc = subprocess.Popen(
        [*BASTION, "serve", "--port", str(port)],
        cwd=tmp_path,
        env=clean,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until(lambda: port_open(port), timeout=30, what="bastion serve")
        response = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert response.status_code == 200
        assert response.json() == {"status": "ok"}
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    # uvicorn re-raises the SIGTERM it caught once shutdown has completed.
    assert proc.returncode in (0, -signal.SIGTERM), err.decode()
    assert "Traceback" not in err.decode()
    log = (tmp_path / "bastion-data" / "logs" / "bastion.log").read_text()
    assert "bastion ready" in log and "bastion stopped" in log


@pytest.mark.parametrize("args", [["serve", "--port", "0"], ["serve", "--port", "x"], ["nope"]])
def test_bad_command_line_is_refused_with_a_message(tmp_path: Path, args: list[str]) -> None:
    result = run(args, {}, tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip()
    assert "Traceback" not in result.stderr


def test_the_readme_run_command_starts_bastion_on_the_embedded_default(tmp_path: Path) -> None:
    # scripts/serve as a user runs it, from a copy of the checkout (the venv is reused).
    root = Path(__file__).resolve().parent.parent
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("BASTION_")}
    proc = subprocess.Popen(
        [str(root / "scripts" / "serve"), "--port", str(port)],
        cwd=tmp_path,
        env={**clean, "BASTION_DATA_DIR": str(tmp_path / "bastion-data")},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_until(lambda: port_open(port), timeout=60, what="scripts/serve")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").json() == {"status": "ok"}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert b"password (shown once)" in out
    assert stat.S_IMODE((tmp_path / "bastion-data" / "master.key").stat().st_mode) == 0o600
