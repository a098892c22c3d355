from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import ConfigError
from bastion.dockerproxy.loading import load_proxy_settings
from tests.dockerproxy.pki import Pki

TOKEN = "t" * 40


def problems(env: dict[str, str]) -> set[str]:
    with pytest.raises(ConfigError) as raised:
        load_proxy_settings(env)
    return {str(problem) for problem in raised.value.problems}


@pytest.fixture
def socket_path(tmp_path: Path) -> str:
    path = tmp_path / "docker.sock"
    path.touch()
    return str(path)


@pytest.fixture
def env(socket_path: str) -> dict[str, str]:
    return {
        "BASTION_DOCKER_PROXY_TOKEN": TOKEN,
        "BASTION_DOCKER_PROXY_ALLOWED_CONTAINERS": "web1, web2,web1",
        "BASTION_DOCKER_PROXY_DOCKER_SOCKET": socket_path,
    }


def test_a_minimal_configuration_loads_with_safe_defaults(env: dict[str, str]) -> None:
    loaded = load_proxy_settings(env)
    settings = loaded.settings
    assert loaded.warnings == []
    assert settings.allowed_containers == ("web1", "web2")
    assert settings.containers == frozenset({"web1", "web2"})
    assert settings.listen_address == "http://127.0.0.1:2375"
    assert not settings.tls_enabled
    assert settings.token is not None
    assert settings.token.get_secret_value() == TOKEN
    assert TOKEN not in repr(settings)


def test_defaults_point_at_the_standard_docker_socket() -> None:
    env = {"BASTION_DOCKER_PROXY_TOKEN": TOKEN, "BASTION_DOCKER_PROXY_ALLOWED_CONTAINERS": "web1"}
    settings = load_proxy_settings(env).settings
    assert settings.docker_socket == Path("/var/run/docker.sock")


def test_every_problem_is_reported_at_once_and_secrets_are_never_echoed() -> None:
    env = {
        "BASTION_DOCKER_PROXY_TOKEN": "short secret",
        "BASTION_DOCKER_PROXY_ALLOWED_CONTAINERS": "web1,bad name,abc123,/web2,-x",
        "BASTION_DOCKER_PROXY_PORT": "70000",
        "BASTION_DOCKER_PROXY_DOCKER_SOCKET": "docker.sock",
        "BASTION_DOCKER_PROXY_ACKNOWLEDGE_PLAIN_TCP": "yes",
        "BASTION_DOCKER_PROXY_UPSTREAM_TIMEOUT_SECONDS": "0",
        "BASTION_DOCKER_PROXY_LOG_LEVEL": "chatty",
    }
    found = problems(env)
    assert found == {
        "BST-E101 BASTION_DOCKER_PROXY_TOKEN: must be visible ASCII characters without spaces",
        "BST-E102 BASTION_DOCKER_PROXY_ALLOWED_CONTAINERS: 'bad name' is not a Docker container "
        "name ([a-zA-Z0-9][a-zA-Z0-9_.-]+); 'abc123' has only hex digits, so Docker would also "
        "resolve it as the id prefix of another container; use a name with another character; "
        "'/web2' is not a Docker container name ([a-zA-Z0-9][a-zA-Z0-9_.-]+); '-x' is not a "
        "Docker container name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)",
        "BST-E006 BASTION_DOCKER_PROXY_PORT: must be at most 65535 (got '70000')",
        "BST-E106 BASTION_DOCKER_PROXY_DOCKER_SOCKET: must be an absolute path (got 'docker.sock')",
        "BST-E010 BASTION_DOCKER_PROXY_ACKNOWLEDGE_PLAIN_TCP: must be true or false (got 'yes')",
        "BST-E006 BASTION_DOCKER_PROXY_UPSTREAM_TIMEOUT_SECONDS: must be at least 1 (got '0')",
        "BST-E010 BASTION_DOCKER_PROXY_LOG_LEVEL: must be one of 'DEBUG', 'INFO', 'WARNING' or "
        "'ERROR' (got 'chatty')",
    }
    assert not any("short secret" in line for line in found)


def test_a_missing_token_and_an_empty_allowlist_are_problems() -> None:
    assert problems({"BASTION_DOCKER_PROXY_ALLOWED_CONTAINERS": " , "}) == {
        "BST-E101 BASTION_DOCKER_PROXY_TOKEN: missing: set BASTION_DOCKER_PROXY_TOKEN or "
        "BASTION_DOCKER_PROXY_TOKEN_FILE (generate one with `openssl rand -hex 32`)",
        "BST-E102 BASTION_DOCKER_PROXY_ALLOWED_CONTAINERS: missing: name the containers the "
        "proxy may reach, comma-separated",
    }


def test_a_short_token_is_refused_without_echoing_it(env: dict[str, str]) -> None:
    env["BASTION_DOCKER_PROXY_TOKEN"] = "abcdef0123456789"
    assert problems(env) == {
        "BST-E101 BASTION_DOCKER_PROXY_TOKEN: must be at least 32 characters "
        "(generate one with `openssl rand -hex 32`)"
    }


def test_the_token_can_come_from_a_file(env: dict[str, str], tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("f" * 64 + "\n")
    del env["BASTION_DOCKER_PROXY_TOKEN"]
    env["BASTION_DOCKER_PROXY_TOKEN_FILE"] = str(secret)
    settings = load_proxy_settings(env).settings
    assert settings.token is not None
    assert settings.token.get_secret_value() == "f" * 64


def test_token_and_token_file_together_or_an_unreadable_file_are_problems(
    env: dict[str, str], tmp_path: Path
) -> None:
    env["BASTION_DOCKER_PROXY_TOKEN_FILE"] = str(tmp_path / "token")
    assert problems(env) == {
        "BST-E009 BASTION_DOCKER_PROXY_TOKEN: set either BASTION_DOCKER_PROXY_TOKEN or "
        "BASTION_DOCKER_PROXY_TOKEN_FILE, not both",
    }
    del env["BASTION_DOCKER_PROXY_TOKEN"]
    assert (
        f"BST-E008 BASTION_DOCKER_PROXY_TOKEN_FILE: cannot read {tmp_path / 'token'}: "
        "No such file or directory"
    ) in problems(env)


def test_a_unix_socket_listener_excludes_host_and_port(env: dict[str, str]) -> None:
    env["BASTION_DOCKER_PROXY_UNIX_SOCKET"] = "/run/bastion/docker-proxy.sock"
    assert load_proxy_settings(env).settings.listen_address == (
        "unix:///run/bastion/docker-proxy.sock"
    )
    env["BASTION_DOCKER_PROXY_PORT"] = "2380"
    assert problems(env) == {
        "BST-E103 BASTION_DOCKER_PROXY_UNIX_SOCKET: set either a unix socket or "
        "BASTION_DOCKER_PROXY_PORT, not both"
    }
    env["BASTION_DOCKER_PROXY_UNIX_SOCKET"] = "proxy.sock"
    assert problems(env) == {
        "BST-E103 BASTION_DOCKER_PROXY_UNIX_SOCKET: must be an absolute path (got 'proxy.sock')"
    }


def test_plain_tcp_beyond_loopback_must_be_acknowledged(env: dict[str, str]) -> None:
    env["BASTION_DOCKER_PROXY_HOST"] = "0.0.0.0"
    assert problems(env) == {
        "BST-E105 BASTION_DOCKER_PROXY_HOST: 0.0.0.0 is not loopback and TLS is off, so the "
        "token would travel in clear: configure mutual TLS, or set "
        "BASTION_DOCKER_PROXY_ACKNOWLEDGE_PLAIN_TCP=true when the network is private"
    }
    env["BASTION_DOCKER_PROXY_ACKNOWLEDGE_PLAIN_TCP"] = "true"
    warnings = [str(w) for w in load_proxy_settings(env).warnings]
    assert warnings == [
        "BST-W101 BASTION_DOCKER_PROXY_HOST: the token travels in clear over TCP (plain TCP "
        "acknowledged); only a private network or network ACLs protect it"
    ]
    for loopback in ("127.0.0.2", "::1", "localhost"):
        env.pop("BASTION_DOCKER_PROXY_ACKNOWLEDGE_PLAIN_TCP")
        env["BASTION_DOCKER_PROXY_HOST"] = loopback
        assert load_proxy_settings(env).warnings == []
        env["BASTION_DOCKER_PROXY_ACKNOWLEDGE_PLAIN_TCP"] = "false"


def test_mutual_tls_needs_certificate_key_and_client_ca(env: dict[str, str], pki: Pki) -> None:
    env["BASTION_DOCKER_PROXY_HOST"] = "0.0.0.0"
    env["BASTION_DOCKER_PROXY_TLS_CERT_FILE"] = str(pki.server.cert)
    env["BASTION_DOCKER_PROXY_TLS_KEY_FILE"] = str(pki.server.key)
    assert problems(env) == {
        "BST-E104 BASTION_DOCKER_PROXY_TLS_CLIENT_CA_FILE: mutual TLS needs a server "
        "certificate, its key and the CA that signs client certificates; missing: "
        "BASTION_DOCKER_PROXY_TLS_CLIENT_CA_FILE"
    }
    env["BASTION_DOCKER_PROXY_TLS_CLIENT_CA_FILE"] = str(pki.ca)
    settings = load_proxy_settings(env).settings
    assert settings.tls_enabled
    assert settings.listen_address == "https://0.0.0.0:2375"


def test_unusable_tls_files_are_problems(env: dict[str, str], pki: Pki, tmp_path: Path) -> None:
    env["BASTION_DOCKER_PROXY_TLS_CERT_FILE"] = str(pki.server.cert)
    env["BASTION_DOCKER_PROXY_TLS_KEY_FILE"] = str(pki.client.key)  # not the server's key
    env["BASTION_DOCKER_PROXY_TLS_CLIENT_CA_FILE"] = str(pki.ca)
    [problem] = problems(env)
    assert problem.startswith(
        "BST-E104 BASTION_DOCKER_PROXY_TLS_CERT_FILE / _KEY_FILE: cannot load the server "
        "certificate and key: "
    )
    env["BASTION_DOCKER_PROXY_TLS_KEY_FILE"] = str(pki.server.key)
    env["BASTION_DOCKER_PROXY_TLS_CLIENT_CA_FILE"] = str(tmp_path / "missing-ca.pem")
    assert problems(env) == {
        "BST-E104 BASTION_DOCKER_PROXY_TLS_CLIENT_CA_FILE: cannot load the client CA from "
        f"{tmp_path / 'missing-ca.pem'}: No such file or directory"
    }


def test_unknown_variables_and_a_missing_docker_socket_are_warnings(tmp_path: Path) -> None:
    env = {
        "BASTION_DOCKER_PROXY_TOKEN": TOKEN,
        "BASTION_DOCKER_PROXY_ALLOWED_CONTAINERS": "web1",
        "BASTION_DOCKER_PROXY_ALLOWED_CONTAINER": "web2",
        "BASTION_DOCKER_PROXY_DOCKER_SOCKET": str(tmp_path / "absent.sock"),
        "BASTION_MASTER_KEY": "not ours to check",
    }
    assert {str(w) for w in load_proxy_settings(env).warnings} == {
        "BST-W002 BASTION_DOCKER_PROXY_ALLOWED_CONTAINER: unknown setting, ignored (a typo?)",
        f"BST-W102 BASTION_DOCKER_PROXY_DOCKER_SOCKET: {tmp_path / 'absent.sock'} does not "
        "exist (yet); requests get 502 until it does",
    }
