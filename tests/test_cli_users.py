from __future__ import annotations

from pathlib import Path

from tests.test_cli import run


def test_add_list_passwd_disable_enable(tmp_path: Path, master_key: str) -> None:
    env = {"BASTION_MASTER_KEY": master_key}
    added = run(
        ["users", "add", "ada", "--admin", "--password-stdin"], env, tmp_path, "a long passphrase\n"
    )
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == "created user 'ada' (admin)"

    duplicate = run(
        ["users", "add", "ADA", "--password-stdin"], env, tmp_path, "another passphrase\n"
    )
    assert duplicate.returncode == 1
    assert duplicate.stderr.strip() == "error: user 'ada' already exists"

    weak = run(["users", "add", "bob", "--password-stdin"], env, tmp_path, "short\n")
    assert weak.returncode == 1
    assert weak.stderr.strip() == "error: password must be at least 12 characters"

    changed = run(
        ["users", "passwd", "ada", "--password-stdin"], env, tmp_path, "a new long passphrase\n"
    )
    assert changed.returncode == 0, changed.stderr
    assert run(["users", "disable", "ada"], env, tmp_path).stdout.strip() == "disabled 'ada'"
    listing = run(["users", "list"], env, tmp_path)
    assert listing.returncode == 0
    row = next(line for line in listing.stdout.splitlines() if "ada" in line)
    assert row.count("yes") == 2  # admin and disabled
    assert "passphrase" not in listing.stdout
    assert run(["users", "enable", "ada"], env, tmp_path).returncode == 0

    missing = run(["users", "disable", "nobody"], env, tmp_path)
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: no user 'nobody'"
