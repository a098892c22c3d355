from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest

from bastion.crypto.keyring import decode_key, key_id_of
from tests.test_cli import run

PASSWORD = "correct horse battery staple"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def key_id(encoded: str) -> str:
    return key_id_of(decode_key(encoded))


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], message: str) -> None:
    """One line on stderr naming the problem, a non-zero exit, nothing on stdout."""
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.splitlines() == [f"error: {message}"]
    assert result.stdout == ""


@pytest.fixture
def env(tmp_path: Path, master_key: str) -> dict[str, str]:
    env = {"BASTION_MASTER_KEY": master_key, "BASTION_DATA_DIR": str(tmp_path / "data")}
    ok(run(["workspaces", "add", "ops"], env, tmp_path))
    return env


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "password.txt"
    path.write_text(PASSWORD + "\n")  # as `echo … > file` writes it
    return path


def put_deploy(env: dict[str, str], tmp_path: Path, password_file: Path) -> None:
    stored = run(
        [
            "vault",
            "put",
            "deploy",
            "--workspace",
            "ops",
            "--field",
            f"password=@{password_file}",
            "--field",
            "username=-",
            "--description",
            "deploy account",
        ],
        env,
        tmp_path,
        "svc-deploy\n",
    )
    assert ok(stored).strip() == (
        "stored credential 'deploy' in 'ops' (secret; fields: password, username)"
    )


def reveal(env: dict[str, str], tmp_path: Path, name: str = "deploy") -> str:
    return ok(
        run(["vault", "reveal", name, "--workspace", "ops", "--reason", "cli test"], env, tmp_path)
    )


def test_put_from_a_file_and_stdin_then_list_and_reveal(
    env: dict[str, str], tmp_path: Path, password_file: Path
) -> None:
    put_deploy(env, tmp_path, password_file)
    listing = ok(run(["vault", "list", "--workspace", "ops"], env, tmp_path))
    assert "deploy" in listing and "password, username" in listing and "deploy account" in listing
    assert PASSWORD not in listing and "svc-deploy" not in listing
    assert reveal(env, tmp_path) == f"password: {PASSWORD}\nusername: svc-deploy\n"
    trail = ok(run(["audit", "tail", "-n", "1"], env, tmp_path))
    assert "credential.reveal" in trail and "actor=cli" in trail and "'cli test'" in trail


def test_oauth2_credentials_take_their_settings_as_options(
    env: dict[str, str], tmp_path: Path, password_file: Path
) -> None:
    args = ["vault", "put", "github", "--workspace", "ops", "--kind", "oauth2"]
    secret = ["--field", f"client_secret=@{password_file}"]
    refused(run([*args, *secret], env, tmp_path), "an oauth2 credential needs settings.token_url")
    oauth = ["--token-url", "https://idp.example/token", "--client-id", "bastion"]
    stored = run(
        [*args, *secret, *oauth, "--scope", "repo", "--rotation-days", "90"], env, tmp_path
    )
    assert "(oauth2; fields: client_secret)" in ok(stored)
    assert reveal(env, tmp_path, "github") == f"client_secret: {PASSWORD}\n"


@pytest.mark.parametrize(
    "spec",
    [f"password={PASSWORD}", "password=", "password", f"{PASSWORD}", "password=@"],
)
def test_a_secret_on_the_command_line_is_refused_and_never_repeated(
    env: dict[str, str], tmp_path: Path, spec: str
) -> None:
    result = run(["vault", "put", "leak", "--workspace", "ops", "--field", spec], env, tmp_path)
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith("error: --field")
    assert PASSWORD not in result.stdout + result.stderr
    assert "leak" not in ok(run(["vault", "list", "--workspace", "ops"], env, tmp_path))


def test_bad_input_is_one_line_and_writes_nothing(
    env: dict[str, str], tmp_path: Path, password_file: Path
) -> None:
    put = ["vault", "put", "deploy", "--workspace"]
    field = ["--field", f"password=@{password_file}"]
    refused(run([*put, "nope", *field], env, tmp_path), "no workspace 'nope'")
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("pässword".encode("latin-1"))
    refused(
        run([*put, "ops", "--field", f"password=@{latin1}"], env, tmp_path),
        f"--field password: {latin1} is not UTF-8 text",
    )
    missing = tmp_path / "missing.txt"
    refused(
        run([*put, "ops", "--field", f"password=@{missing}"], env, tmp_path),
        f"--field password: cannot read {missing}: No such file or directory",
    )
    refused(
        run([*put, "ops", "--field", "a=-", "--field", "b=-"], env, tmp_path, "x\ny\n"),
        "only one --field can be read from stdin (-); use @FILE for the others",
    )
    refused(
        run([*put, "ops"], env, tmp_path), "give at least one --field NAME=@FILE or --field NAME=-"
    )
    refused(
        run([*put, "ops", "--field", "Bad Name=-"], env, tmp_path, "value\n"),
        "field name 'Bad Name': lower-case letters, digits and _, at most 64",
    )
    refused(
        run([*put, "ops", "--field", "password=-"], env, tmp_path, "\n"),
        "field 'password' is empty",
    )
    assert "deploy" not in ok(run(["vault", "list", "--workspace", "ops"], env, tmp_path))
    trail = ok(run(["audit", "export", "--since", "1"], env, tmp_path))
    assert "credential.create" not in trail

    put_deploy(env, tmp_path, password_file)
    refused(
        run([*put, "ops", *field], env, tmp_path),
        "a credential named 'deploy' exists in this workspace",
    )
    refused(
        run(
            ["vault", "reveal", "ghost", "--workspace", "ops", "--reason", "x-files"], env, tmp_path
        ),
        "no credential 'ghost' in workspace 'ops'",
    )
    refused(
        run(["vault", "reveal", "deploy", "--workspace", "ops", "--reason", "?"], env, tmp_path),
        "a reveal needs a reason (3 to 500 characters)",
    )


def test_rotate_replaces_the_fields_given_and_refuses_the_same_value(
    env: dict[str, str], tmp_path: Path, password_file: Path
) -> None:
    put_deploy(env, tmp_path, password_file)
    rotate = ["vault", "rotate", "deploy", "--workspace", "ops", "--field"]
    refused(
        run([*rotate, f"password=@{password_file}"], env, tmp_path),
        "the new material is the same as the current one",
    )
    rotated = run([*rotate, "password=-"], env, tmp_path, "a brand new password\n")
    assert ok(rotated).strip() == "rotated credential 'deploy' to version 2"
    assert reveal(env, tmp_path) == "password: a brand new password\nusername: svc-deploy\n"
    listing = ok(run(["vault", "list", "--workspace", "ops"], env, tmp_path))
    assert "│ 2 " in listing


def test_test_and_delete(env: dict[str, str], tmp_path: Path, password_file: Path) -> None:
    put_deploy(env, tmp_path, password_file)
    tested = run(["vault", "test", "deploy", "--workspace", "ops"], env, tmp_path)
    assert ok(tested).strip() == "credential 'deploy' is healthy"
    delete = ["vault", "delete", "deploy", "--workspace", "ops"]
    refused(
        run(delete, env, tmp_path),
        "deleting 'deploy' destroys its material for good; add --yes to confirm",
    )
    assert "deploy" in ok(run(["vault", "list", "--workspace", "ops"], env, tmp_path))
    assert (
        ok(run([*delete, "--yes"], env, tmp_path)).strip()
        == "deleted credential 'deploy' from 'ops'"
    )
    refused(run([*delete, "--yes"], env, tmp_path), "no credential 'deploy' in workspace 'ops'")


def test_rekey_moves_everything_to_the_new_key_so_the_old_one_can_go(
    env: dict[str, str], tmp_path: Path, password_file: Path, master_key: str
) -> None:
    put_deploy(env, tmp_path, password_file)
    new = new_key()
    both = {**env, "BASTION_MASTER_KEY": new, "BASTION_MASTER_KEYS": master_key}
    assert reveal(both, tmp_path).startswith(f"password: {PASSWORD}")

    result = run(["vault", "rekey", "--batch", "1"], both, tmp_path)
    lines = ok(result).splitlines()
    assert lines[0] == f"moved 2 field(s) from {key_id(master_key)} to {key_id(new)}"
    assert lines[1].startswith("no vault field remains on an old key")
    assert "re-wrapping" in result.stderr  # the progress bar

    only_new = {**env, "BASTION_MASTER_KEY": new}
    assert reveal(only_new, tmp_path) == f"password: {PASSWORD}\nusername: svc-deploy\n"
    again = ok(run(["vault", "rekey"], only_new, tmp_path)).splitlines()
    assert again[0] == f"moved 0 field(s) from no key to {key_id(new)}"
    assert '"moved":2' in ok(run(["audit", "export", "--since", "1"], both, tmp_path))

    # A ring without the key the fields are under: reported, exit 1, no traceback.
    stranger = new_key()
    lost = run(["vault", "rekey"], {**env, "BASTION_MASTER_KEY": stranger}, tmp_path)
    assert lost.returncode == 1 and "Traceback" not in lost.stderr
    assert lost.stdout.splitlines()[1:] == [
        f"remaining on {key_id(new)}: 2 field(s) (key not configured: add it to "
        "BASTION_MASTER_KEYS)",
        "unreadable: 2 field(s)",
    ]
