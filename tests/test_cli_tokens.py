from __future__ import annotations

from pathlib import Path

from bastion.web.app import create_app
from tests.test_cli import run
from tests.web.conftest import make_settings, serving


async def test_workspace_role_and_token_lifecycle_from_the_command_line(
    tmp_path: Path, master_key: str
) -> None:
    env = {"BASTION_MASTER_KEY": master_key, "BASTION_DATA_DIR": str(tmp_path / "data")}
    assert (
        run(
            ["users", "add", "ada", "--password-stdin"], env, tmp_path, "a long passphrase\n"
        ).returncode
        == 0
    )
    assert (
        run(["workspaces", "add", "ops"], env, tmp_path).stdout.strip()
        == "created workspace 'ops' (id 1)"
    )
    refused = run(
        [
            "tokens",
            "create",
            "--user",
            "ada",
            "--workspace",
            "ops",
            "--role",
            "operator",
            "--name",
            "ci",
        ],
        env,
        tmp_path,
    )
    assert refused.returncode == 1
    assert refused.stderr.strip() == "error: a token cannot have a role its user does not hold"
    granted = run(["workspaces", "grant", "ada", "ops", "operator"], env, tmp_path)
    assert granted.stdout.strip() == "'ada' is operator in 'ops'"
    created = run(
        [
            "tokens",
            "create",
            "--user",
            "ada",
            "--workspace",
            "ops",
            "--role",
            "operator",
            "--name",
            "ci",
        ],
        env,
        tmp_path,
    )
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[-1]
    assert token.startswith("bst_")
    listing = run(["tokens", "list"], env, tmp_path)
    assert "ci" in listing.stdout and token not in listing.stdout

    app = create_app(make_settings(env))
    async with serving(app) as http:
        accepted = await http.get("/api/v1/tokens", headers={"authorization": f"Bearer {token}"})
        assert accepted.status_code == 200
        assert run(["tokens", "revoke", "1"], env, tmp_path).stdout.strip() == "revoked token 1"
        revoked = await http.get("/api/v1/tokens", headers={"authorization": f"Bearer {token}"})
        assert revoked.status_code == 401
    unknown = run(["tokens", "revoke", "99"], env, tmp_path)
    assert unknown.returncode == 1
    assert unknown.stderr.strip() == "error: no token 99"
