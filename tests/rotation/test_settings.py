"""Rotation's settings: off without pools, every problem reported at once with its id."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import ConfigError, load_settings
from bastion.rotation.service import endpoint_of

POOLS = '[[pools]]\nname = "web"\nreplicas = ["web-a", "web-b"]\n'


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return [str(p) for p in caught.value.problems]


def pools_file(tmp_path: Path, text: str = POOLS) -> str:
    path = tmp_path / "pools.toml"
    path.write_text(text)
    return str(path)


def test_rotation_is_off_by_default(base_env: dict[str, str]) -> None:
    settings = load_settings(base_env).settings
    assert settings.rotation_pools_file is None
    assert settings.rotation_docker_url is None


def test_a_complete_configuration_loads_and_never_shows_the_token(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-proxy-token\n")
    env = {
        **base_env,
        "BASTION_ROTATION_POOLS_FILE": pools_file(tmp_path),
        "BASTION_ROTATION_DOCKER_URL": "unix:///run/bastion/docker-proxy.sock",
        "BASTION_ROTATION_DOCKER_TOKEN_FILE": str(token_file),
    }
    loaded = load_settings(env)
    assert loaded.warnings == []
    endpoint = endpoint_of(loaded.settings)
    assert endpoint.token == "s3cret-proxy-token"
    assert "s3cret" not in repr(endpoint)
    assert "s3cret" not in repr(loaded.settings)


def test_a_docker_url_carrying_a_password_is_refused_without_echoing_it(
    base_env: dict[str, str],
) -> None:
    env = {**base_env, "BASTION_ROTATION_DOCKER_URL": "https://ops:hunter2-secret@proxy:2376"}
    [problem] = problems_of(env)
    assert problem.startswith("BST-E021 BASTION_ROTATION_DOCKER_URL: must not carry a user")
    assert "hunter2-secret" not in problem


def test_every_rotation_problem_is_reported_at_once(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    bad_pools = '[[pools]]\nname = "web"\nreplicas = ["only-one"]\nstrategy = "yolo"\n'
    env = {
        **base_env,
        "BASTION_ROTATION_POOLS_FILE": pools_file(tmp_path, bad_pools),
        "BASTION_ROTATION_DOCKER_URL": "tcp://docker:2375",
    }
    problems = problems_of(env)
    assert problems[0].startswith("BST-E021 BASTION_ROTATION_DOCKER_URL: must be http://")
    assert [p.split(":")[0] for p in problems[1:]] == [
        "BST-E020 BASTION_ROTATION_POOLS_FILE",
        "BST-E020 BASTION_ROTATION_POOLS_FILE",
    ]
    assert "replicas" in problems[1]
    assert "strategy" in problems[2]


def test_pools_need_the_proxy_and_the_proxy_needs_its_token(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    assert problems_of({**base_env, "BASTION_ROTATION_POOLS_FILE": pools_file(tmp_path)}) == [
        "BST-E021 BASTION_ROTATION_DOCKER_URL: pools are configured: set the docker proxy's "
        "URL (`bastion docker-proxy`)"
    ]
    problems = problems_of({**base_env, "BASTION_ROTATION_DOCKER_URL": "http://127.0.0.1:2375"})
    assert problems == [
        "BST-E022 BASTION_ROTATION_DOCKER_TOKEN: missing: the docker proxy accepts no request "
        "without its token (set BASTION_ROTATION_DOCKER_TOKEN or "
        "BASTION_ROTATION_DOCKER_TOKEN_FILE)"
    ]


def test_tls_files_need_https_a_readable_file_and_come_in_pairs(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    cert = tmp_path / "client.pem"
    cert.write_text("not checked here")
    env = {
        **base_env,
        "BASTION_ROTATION_DOCKER_URL": "http://127.0.0.1:2375",
        "BASTION_ROTATION_DOCKER_TOKEN": "t",
        "BASTION_ROTATION_DOCKER_CERT_FILE": str(cert),
    }
    assert problems_of(env) == [
        "BST-E023 BASTION_ROTATION_DOCKER_CERT_FILE: only used with an https:// docker URL",
        "BST-E023 BASTION_ROTATION_DOCKER_CERT_FILE / _KEY_FILE: a client certificate needs "
        "its key, and a key its certificate",
    ]
    env["BASTION_ROTATION_DOCKER_URL"] = "https://proxy:2376"
    env["BASTION_ROTATION_DOCKER_KEY_FILE"] = str(tmp_path / "missing.key")
    assert problems_of(env) == [
        f"BST-E023 BASTION_ROTATION_DOCKER_KEY_FILE: cannot read {tmp_path / 'missing.key'}"
    ]
