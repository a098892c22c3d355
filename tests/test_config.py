from __future__ import annotations

import base64
from pathlib import Path

import pytest

from bastion.config import ConfigError, egress_policy, load_settings


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    return [str(p) for p in caught.value.problems]


def test_a_valid_environment_loads_with_the_embedded_defaults(base_env: dict[str, str]) -> None:
    settings = load_settings(base_env).settings
    assert settings.effective_database_url.startswith("sqlite+aiosqlite:///")
    assert settings.effective_database_url.endswith("/data/bastion.db")
    assert settings.redis_url is None
    assert settings.port == 8000
    assert settings.proxy_trust_count == 0
    assert settings.session_cookie_secure is True
    assert len(settings.master_key_bytes) == 32


def test_missing_master_key_is_reported_with_how_to_fix_it(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert problems_of({"BASTION_DATA_DIR": str(data)}) == [
        "BST-E001 BASTION_MASTER_KEY: missing: set BASTION_MASTER_KEY or "
        f"BASTION_MASTER_KEY_FILE, or run `bastion init` to create {data / 'master.key'}"
    ]


@pytest.mark.parametrize(
    "key",
    [
        "not base64 at all!",
        base64.b64encode(b"x" * 31).decode(),
        base64.b64encode(b"x" * 33).decode(),
        "",
    ],
    ids=["not-base64", "31-bytes", "33-bytes", "blank-file"],
)
def test_malformed_master_key_is_rejected_without_echoing_it(tmp_path: Path, key: str) -> None:
    env = {"BASTION_DATA_DIR": str(tmp_path)}
    if key:
        env["BASTION_MASTER_KEY"] = key
        expected = "BST-E002 BASTION_MASTER_KEY: must be 32 bytes encoded as base64 "
        expected += "(`bastion init` generates one)"
    else:
        (tmp_path / "key").write_text("\n")
        env["BASTION_MASTER_KEY_FILE"] = str(tmp_path / "key")
        expected = "BST-E002 BASTION_MASTER_KEY: must be 32 bytes encoded as base64 "
        expected += "(`bastion init` generates one)"
    problems = problems_of(env)
    assert problems == [expected]
    if key:
        assert all(key not in line for line in problems)


def test_url_safe_base64_master_key_is_accepted(tmp_path: Path) -> None:
    key = base64.urlsafe_b64encode(b"\xfb\xff" * 16).decode()
    assert "-" in key or "_" in key
    env = {"BASTION_DATA_DIR": str(tmp_path), "BASTION_MASTER_KEY": key}
    assert load_settings(env).settings.master_key_bytes == b"\xfb\xff" * 16


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/bastion", "unsupported database (use sqlite:///PATH or postgresql://…)"),
        ("not a url", "cannot parse the database URL (expected sqlite:///PATH or postgresql://…)"),
        ("sqlite://", "a SQLite URL needs a file path (sqlite:///PATH)"),
        ("postgresql:///bastion", "a PostgreSQL URL needs a host"),
    ],
)
def test_unusable_database_url_is_rejected(
    base_env: dict[str, str], url: str, message: str
) -> None:
    assert problems_of({**base_env, "BASTION_DATABASE_URL": url}) == [
        f"BST-E003 BASTION_DATABASE_URL: {message}"
    ]


def test_database_url_password_is_never_echoed(base_env: dict[str, str]) -> None:
    problems = problems_of({**base_env, "BASTION_DATABASE_URL": "mysql://u:hunter2secret@db/x"})
    assert not any("hunter2secret" in line for line in problems)


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("postgres://u:p@db:5432/bastion", "postgresql+psycopg://u:p@db:5432/bastion"),
        ("postgresql://u@db/bastion", "postgresql+psycopg://u@db/bastion"),
        ("sqlite:////srv/bastion.db", "sqlite+aiosqlite:////srv/bastion.db"),
    ],
)
def test_database_url_spellings_map_to_the_async_drivers(
    base_env: dict[str, str], url: str, normalized: str
) -> None:
    settings = load_settings({**base_env, "BASTION_DATABASE_URL": url}).settings
    assert settings.effective_database_url == normalized


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://cache:6379", "cannot parse the Redis URL (expected redis://HOST:PORT/DB)"),
        ("redis://cache:port/0", "cannot parse the Redis URL (expected redis://HOST:PORT/DB)"),
        ("redis://:6379/0", "a Redis URL needs a host"),
        ("redis://cache:6379/zero", "the Redis database must be a number"),
    ],
)
def test_unusable_redis_url_is_rejected(base_env: dict[str, str], url: str, message: str) -> None:
    assert problems_of({**base_env, "BASTION_REDIS_URL": url}) == [
        f"BST-E004 BASTION_REDIS_URL: {message}"
    ]


def test_unknown_timezone_is_rejected(base_env: dict[str, str]) -> None:
    assert problems_of({**base_env, "BASTION_TIMEZONE": "Mars/Olympus_Mons"}) == [
        "BST-E005 BASTION_TIMEZONE: unknown timezone (use an IANA name such as Europe/Berlin) "
        "(got 'Mars/Olympus_Mons')"
    ]


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("BASTION_PORT", "http", "must be a whole number (got 'http')"),
        ("BASTION_PORT", "80.5", "must be a whole number (got '80.5')"),
        ("BASTION_PORT", "0", "must be at least 1 (got '0')"),
        ("BASTION_PORT", "70000", "must be at most 65535 (got '70000')"),
        ("BASTION_PROXY_TRUST_COUNT", "-1", "must be at least 0 (got '-1')"),
        ("BASTION_PROXY_TRUST_COUNT", "11", "must be at most 10 (got '11')"),
        ("BASTION_LOG_MAX_BYTES", "1k", "must be a whole number (got '1k')"),
        ("BASTION_LOG_BACKUP_COUNT", "1000", "must be at most 100 (got '1000')"),
    ],
)
def test_bad_numbers_are_rejected_with_their_range(
    base_env: dict[str, str], name: str, value: str, message: str
) -> None:
    assert problems_of({**base_env, name: value}) == [f"BST-E006 {name}: {message}"]


def test_booleans_accept_only_true_or_false(base_env: dict[str, str]) -> None:
    assert problems_of({**base_env, "BASTION_SESSION_COOKIE_SECURE": "yes"}) == [
        "BST-E010 BASTION_SESSION_COOKIE_SECURE: must be true or false (got 'yes')"
    ]


def test_insecure_cookie_without_acknowledgement_is_an_error(base_env: dict[str, str]) -> None:
    assert problems_of({**base_env, "BASTION_SESSION_COOKIE_SECURE": "false"}) == [
        "BST-E007 BASTION_SESSION_COOKIE_SECURE: false sends session cookies over plain HTTP; "
        "set BASTION_ACKNOWLEDGE_PLAIN_HTTP=true to confirm the deployment is HTTP-only"
    ]


def test_acknowledged_insecure_cookie_is_only_a_warning(base_env: dict[str, str]) -> None:
    loaded = load_settings(
        {
            **base_env,
            "BASTION_SESSION_COOKIE_SECURE": "false",
            "BASTION_ACKNOWLEDGE_PLAIN_HTTP": "true",
        }
    )
    assert loaded.settings.session_cookie_secure is False
    assert [w.code for w in loaded.warnings] == ["BST-W001"]


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    problems = problems_of(
        {
            "BASTION_DATA_DIR": str(tmp_path),
            "BASTION_PORT": "x",
            "BASTION_TIMEZONE": "Nowhere/Land",
            "BASTION_DATABASE_URL": "oracle://db",
            "BASTION_SESSION_COOKIE_SECURE": "false",
        }
    )
    assert sorted(line.split(" ", 2)[1] for line in problems) == [
        "BASTION_DATABASE_URL:",
        "BASTION_MASTER_KEY:",
        "BASTION_PORT:",
        "BASTION_SESSION_COOKIE_SECURE:",
        "BASTION_TIMEZONE:",
    ]


def test_secret_file_variant_is_read(tmp_path: Path, master_key: str) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(master_key + "\n")
    password_file = tmp_path / "password"
    password_file.write_text("correct horse battery staple\n")
    settings = load_settings(
        {
            "BASTION_DATA_DIR": str(tmp_path),
            "BASTION_MASTER_KEY_FILE": str(key_file),
            "BASTION_ADMIN_PASSWORD_FILE": str(password_file),
        }
    ).settings
    assert base64.b64encode(settings.master_key_bytes).decode() == master_key
    assert settings.admin_password is not None
    assert settings.admin_password.get_secret_value() == "correct horse battery staple"


def test_unreadable_secret_file_is_reported(base_env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    assert problems_of({**base_env, "BASTION_REDIS_URL_FILE": str(missing)}) == [
        f"BST-E008 BASTION_REDIS_URL_FILE: cannot read {missing}: No such file or directory"
    ]


def test_a_secret_and_its_file_variant_together_are_ambiguous(
    base_env: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / "pw").write_text("x" * 20)
    env = {
        **base_env,
        "BASTION_ADMIN_PASSWORD": "y" * 20,
        "BASTION_ADMIN_PASSWORD_FILE": str(tmp_path / "pw"),
    }
    assert problems_of(env) == [
        "BST-E009 BASTION_ADMIN_PASSWORD: set either BASTION_ADMIN_PASSWORD or "
        "BASTION_ADMIN_PASSWORD_FILE, not both"
    ]


def test_generated_key_file_in_the_data_dir_is_used(tmp_path: Path, master_key: str) -> None:
    (tmp_path / "master.key").write_text(master_key + "\n")
    settings = load_settings({"BASTION_DATA_DIR": str(tmp_path)}).settings
    assert base64.b64encode(settings.master_key_bytes).decode() == master_key


def test_unknown_bastion_variable_is_a_warning(base_env: dict[str, str]) -> None:
    loaded = load_settings({**base_env, "BASTION_PROT": "9000"})
    assert [str(w) for w in loaded.warnings] == [
        "BST-W002 BASTION_PROT: unknown setting, ignored (a typo?)"
    ]


def test_the_docker_proxy_variables_in_a_shared_environment_are_not_unknown(
    base_env: dict[str, str],
) -> None:
    loaded = load_settings({**base_env, "BASTION_DOCKER_PROXY_TOKEN": "x" * 40})
    assert loaded.warnings == []


def test_secrets_are_masked_in_repr(base_env: dict[str, str], master_key: str) -> None:
    settings = load_settings(base_env).settings
    assert master_key not in repr(settings)
    assert master_key not in str(settings)


def test_dotenv_file_is_read_and_the_environment_wins(
    tmp_path: Path, master_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bastion.config import read_environment

    (tmp_path / ".env").write_text(f"BASTION_PORT=9001\nBASTION_MASTER_KEY={master_key}\n")
    monkeypatch.setenv("BASTION_PORT", "9002")
    env = read_environment(tmp_path / ".env")
    assert env["BASTION_PORT"] == "9002"
    assert env["BASTION_MASTER_KEY"] == master_key


def test_the_celery_executor_without_a_broker_is_an_error(base_env: dict[str, str]) -> None:
    assert problems_of({**base_env, "BASTION_EXECUTOR": "celery"}) == [
        "BST-E011 BASTION_EXECUTOR: celery needs a broker: set BASTION_REDIS_URL"
    ]


def test_a_bad_egress_entry_is_an_error_naming_it(base_env: dict[str, str]) -> None:
    problems = problems_of({**base_env, "BASTION_EGRESS_DENY": "10.0.0.0/8, 10.0.0.1/8"})
    assert len(problems) == 1
    assert problems[0].startswith("BST-E012 BASTION_EGRESS_DENY / _ALLOW: ")
    assert "'10.0.0.1/8'" in problems[0]


def test_bastions_own_listeners_are_always_outside_the_egress_policy(
    base_env: dict[str, str],
) -> None:
    env = {**base_env, "BASTION_REDIS_URL": "redis://127.0.0.1:6390/0", "BASTION_PORT": "8443"}
    policy = egress_policy(load_settings(env).settings)
    internal = {(str(e.network), e.port) for e in policy.internal}
    assert internal == {("127.0.0.1/32", 8443), ("127.0.0.1/32", 6390)}


def test_a_setting_that_is_a_path_may_end_in_file(base_env: dict[str, str]) -> None:
    # ..._FILE used to be skipped as a secret's file variant, which silently dropped
    # BASTION_AUDIT_SYSLOG_CA_FILE.
    env = {**base_env, "BASTION_AUDIT_SYSLOG_CA_FILE": "/etc/ssl/certs/ca.pem"}
    loaded = load_settings(env)
    assert loaded.settings.audit_syslog_ca_file == Path("/etc/ssl/certs/ca.pem")
    assert loaded.warnings == []
    typo = load_settings({**base_env, "BASTION_AUDIT_SYSLOG_CA_FIEL": "x"})
    assert [str(w).split(":")[0] for w in typo.warnings] == [
        "BST-W002 BASTION_AUDIT_SYSLOG_CA_FIEL"
    ]
