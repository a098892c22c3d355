"""Settings: read once from the environment (and `.env`), validated once, passed down.

Every problem is collected and reported together, one line each with a stable id, so an
operator fixes a broken deployment in one pass instead of one restart per mistake.
Secret settings also accept a `…_FILE` variant (the container-secret convention).
"""

from __future__ import annotations

import ipaddress
import os
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from dotenv import dotenv_values
from pydantic import BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from bastion.crypto.errors import MalformedKey
from bastion.crypto.keyring import Keyring, decode_key, parse_key_list
from bastion.errors import BastionError, InvalidInput
from bastion.rotation.pools import PoolConfig, PoolsFileError, load_pools
from bastion.workflows.egress import DEFAULT_DENY, EgressPolicy

ENV_PREFIX = "BASTION_"
MASTER_KEY_FILENAME = "master.key"
# Settings whose value is a secret: they accept BASTION_<NAME>_FILE, and their value is
# never echoed in a problem message.
SECRET_FIELDS = (
    "master_key",
    "master_keys",
    "admin_password",
    "database_url",
    "redis_url",
    "rotation_docker_token",
)
# Never echoed in a problem either: a URL refused for carrying a password would show it.
_QUIET = frozenset({*SECRET_FIELDS, "rotation_docker_url"})
# BASTION_* variables that are read by tooling, not by the server.
NOT_SETTINGS = frozenset({"BASTION_REQUIRE_SERVICES", "BASTION_PYTHON"})
# The docker proxy's own settings (bastion.dockerproxy), often in the same `.env`.
PROXY_PREFIX = "BASTION_DOCKER_PROXY_"


def _strict_bool(value: object) -> object:
    # "yes", "on", "t" and friends are typos waiting to happen in a security setting.
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1"):
            return True
        if lowered in ("false", "0"):
            return False
        raise ValueError("must be true or false")
    return value


StrictBool = Annotated[bool, BeforeValidator(_strict_bool)]


def decode_master_key(encoded: str) -> bytes:
    """Decode a base64 (standard or URL-safe) master key; it must be exactly 32 bytes."""
    try:
        return decode_key(encoded)
    except MalformedKey:
        raise ValueError(
            "must be 32 bytes encoded as base64 (`bastion init` generates one)"
        ) from None


class MergedSettings(BaseSettings):
    """Settings built only from values a loader has already merged (the environment,
    `.env` and the _FILE variants): the server's, and the docker proxy's."""

    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True, frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Reading os.environ again here would undo the loader's choices.
        return (init_settings,)

    @field_validator("log_level", mode="before", check_fields=False)
    @classmethod
    def _upper_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value


class Settings(MergedSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)

    data_dir: Path = Path("bastion-data")
    database_url: SecretStr | None = None
    redis_url: SecretStr | None = None
    master_key: SecretStr | None = None
    # Retired master keys, readable until `bastion vault rekey` has moved everything off.
    master_keys: SecretStr | None = None

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    timezone: str = "UTC"
    proxy_trust_count: int = Field(default=0, ge=0, le=10)

    log_dir: Path | None = None
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_max_bytes: int = Field(default=10 * 1024 * 1024, ge=64 * 1024, le=1024**3)
    log_backup_count: int = Field(default=5, ge=0, le=100)

    session_cookie_secure: StrictBool = True
    acknowledge_plain_http: StrictBool = False
    session_idle_minutes: int = Field(default=30, ge=1, le=24 * 60)
    session_absolute_hours: int = Field(default=12, ge=1, le=30 * 24)
    login_csrf_ttl_seconds: int = Field(default=900, ge=30, le=24 * 3600)
    login_max_failures: int = Field(default=5, ge=1, le=100)

    admin_user: str = Field(default="admin", min_length=1, max_length=64)
    admin_password: SecretStr | None = None

    vault_rollback_days: int = Field(default=30, ge=0, le=3650)
    vault_max_secret_bytes: int = Field(default=64 * 1024, ge=1024, le=1024 * 1024)
    oauth_refresh_margin_seconds: int = Field(default=300, ge=0, le=24 * 3600)

    audit_fail_closed: StrictBool = False
    audit_jsonl_path: Path | None = None
    audit_jsonl_max_bytes: int = Field(default=50 * 1024 * 1024, ge=64 * 1024, le=1024**4)
    audit_syslog_url: str | None = None
    audit_syslog_format: Literal["rfc5424", "cef"] = "rfc5424"
    audit_syslog_ca_file: Path | None = None
    audit_http_url: str | None = None

    executor: Literal["inline", "celery"] = "inline"
    run_concurrency: int = Field(default=64, ge=1, le=10_000)  # inline: runs at once per server
    workspace_concurrency: int = Field(default=16, ge=1, le=10_000)
    run_lease_seconds: int = Field(default=30, ge=2, le=3600)
    run_max_input_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    run_max_output_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    run_event_output_bytes: int = Field(default=4096, ge=256, le=1024 * 1024)
    run_max_steps: int = Field(default=1000, ge=10, le=100_000)
    node_max_delay_seconds: int = Field(default=3600, ge=0, le=7 * 24 * 3600)
    egress_deny: str = ""  # CIDRs denied on top of the built-in list, comma-separated
    egress_allow: str = ""  # ip:port or CIDR exceptions, comma-separated
    sandbox_cpu_seconds: int = Field(default=5, ge=1, le=3600)
    sandbox_wall_seconds: int = Field(default=10, ge=1, le=3600)
    sandbox_memory_mib: int = Field(default=256, ge=32, le=64 * 1024)
    sandbox_concurrency: int = Field(default=4, ge=1, le=256)
    sandbox_uid_base: int = Field(default=64000, ge=1000, le=2**31 - 100_000)

    # Rotation: off until a pools file names pools. Docker is reached only through the
    # docker proxy (`bastion docker-proxy`), never through a local socket of its own.
    rotation_pools_file: Path | None = None
    rotation_docker_url: str | None = None  # http(s)://host:port or unix:///path
    rotation_docker_token: SecretStr | None = None
    rotation_docker_ca_file: Path | None = None
    rotation_docker_cert_file: Path | None = None  # client certificate, for mutual TLS
    rotation_docker_key_file: Path | None = None

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError("unknown timezone (use an IANA name such as Europe/Berlin)") from None
        return value

    @field_validator("master_key")
    @classmethod
    def _valid_master_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            decode_master_key(value.get_secret_value())
        return value

    @field_validator("master_keys")
    @classmethod
    def _valid_master_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            try:
                parse_key_list(value.get_secret_value())
            except MalformedKey as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("audit_syslog_url")
    @classmethod
    def _valid_syslog_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("udp", "tcp", "tls") or not parts.hostname or not parts.port:
                raise ValueError("must look like udp://host:514, tcp://host:514 or tls://host:6514")
        return value

    @field_validator("audit_http_url")
    @classmethod
    def _valid_http_sink(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("must be an http:// or https:// URL")
        return value

    @field_validator("rotation_docker_url")
    @classmethod
    def _valid_docker_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme == "unix":
                if not parts.path.startswith("/") or parts.netloc:
                    raise ValueError("a unix socket URL looks like unix:///run/docker-proxy.sock")
            elif parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("must be http://host:port, https://host:port or unix:///path")
            if parts.username is not None or parts.password is not None:
                # The URL is named in errors and status answers; the token has its own
                # (secret) setting, so nothing secret may ride in here.
                raise ValueError("must not carry a user or password: use the token setting")
        return value

    @field_validator("database_url")
    @classmethod
    def _valid_database_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            normalize_database_url(value.get_secret_value())
        return value

    @field_validator("redis_url")
    @classmethod
    def _valid_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            _check_redis_url(value.get_secret_value())
        return value

    @property
    def master_key_bytes(self) -> bytes:
        if self.master_key is None:
            raise RuntimeError("settings were loaded without a master key")
        return decode_master_key(self.master_key.get_secret_value())

    def keyring(self) -> Keyring:
        old = self.master_keys.get_secret_value() if self.master_keys else ""
        return Keyring(self.master_key_bytes, parse_key_list(old))

    @property
    def effective_database_url(self) -> str:
        if self.database_url is None:
            return f"sqlite+aiosqlite:///{(self.data_dir / 'bastion.db').resolve()}"
        return normalize_database_url(self.database_url.get_secret_value())

    @property
    def effective_log_dir(self) -> Path:
        return self.log_dir if self.log_dir is not None else self.data_dir / "logs"

    @property
    def default_master_key_path(self) -> Path:
        return self.data_dir / MASTER_KEY_FILENAME


_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
}


def normalize_database_url(url: str) -> str:
    """Map the accepted spellings onto the async drivers Bastion uses (aiosqlite, psycopg 3)."""
    try:
        parsed = make_url(url.strip())
    except (ArgumentError, ValueError):
        raise ValueError(
            "cannot parse the database URL (expected sqlite:///PATH or postgresql://…)"
        ) from None
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError("unsupported database (use sqlite:///PATH or postgresql://…)")
    if driver.startswith("sqlite") and not parsed.database:
        raise ValueError("a SQLite URL needs a file path (sqlite:///PATH)")
    if driver.startswith("postgresql") and not (parsed.host or parsed.query.get("host")):
        raise ValueError("a PostgreSQL URL needs a host")
    return str(parsed.set(drivername=driver).render_as_string(hide_password=False))


def _check_redis_url(url: str) -> None:
    parts = urlsplit(url.strip())
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme not in ("redis", "rediss", "unix") or port == -1:
        raise ValueError("cannot parse the Redis URL (expected redis://HOST:PORT/DB)")
    if parts.scheme != "unix" and not parts.hostname:
        raise ValueError("a Redis URL needs a host")
    if parts.scheme == "unix" and not parts.path:
        raise ValueError("a unix Redis URL needs a socket path")
    database = parts.path.lstrip("/")
    if parts.scheme != "unix" and database and not database.isdigit():
        raise ValueError("the Redis database must be a number")


@dataclass(frozen=True)
class Problem:
    code: str
    setting: str
    message: str

    def __str__(self) -> str:
        return f"{self.code} {self.setting}: {self.message}"


class ConfigError(BastionError):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


def _env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def _code_for(field: str, error_type: str) -> str:
    if field in ("master_key", "master_keys"):
        return "BST-E002"
    if field == "database_url":
        return "BST-E003"
    if field == "redis_url":
        return "BST-E004"
    if field == "timezone":
        return "BST-E005"
    if field == "rotation_pools_file":
        return "BST-E020"
    if field == "rotation_docker_url":
        return "BST-E021"
    if error_type.startswith(("int_", "greater_than", "less_than")):
        return "BST-E006"
    return "BST-E010"


def _message_for(error: Mapping[str, Any]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return "must be a whole number"
    if kind == "greater_than_equal":
        return f"must be at least {ctx['ge']}"
    if kind == "less_than_equal":
        return f"must be at most {ctx['le']}"
    if kind == "literal_error":
        return f"must be one of {ctx['expected']}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind in ("string_too_short", "string_too_long"):
        return str(error["msg"]).lower()
    return str(error["msg"])


def _read_secret_files(env: Mapping[str, str], problems: list[Problem]) -> dict[str, str]:
    values: dict[str, str] = {}
    for field in SECRET_FIELDS:
        name = _env_name(field)
        file_name = name + "_FILE"
        path = env.get(file_name)
        if path is None:
            continue
        if env.get(name) is not None:
            problems.append(
                Problem("BST-E009", name, f"set either {name} or {file_name}, not both")
            )
            continue
        try:
            values[field] = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
            problems.append(Problem("BST-E008", file_name, f"cannot read {path}: {reason}"))
    return values


def read_environment(env_file: Path | None = Path(".env")) -> dict[str, str]:
    """The process environment over the optional `.env` file (the environment wins)."""
    merged: dict[str, str] = {}
    if env_file is not None and env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return merged


def _validate(values: Mapping[str, str]) -> tuple[Settings | None, list[Problem], set[str]]:
    """Build Settings; on failure return one Problem per bad setting (secrets never echoed)."""
    try:
        return Settings(**values), [], set()  # type: ignore[arg-type]
    except ValidationError as exc:
        problems, broken = problems_of(
            exc, values, prefix=ENV_PREFIX, code_for=_code_for, quiet=_QUIET
        )
        return None, problems, broken


def problems_of(
    exc: ValidationError,
    values: Mapping[str, str],
    *,
    prefix: str,
    code_for: Callable[[str, str], str],
    quiet: frozenset[str],
) -> tuple[list[Problem], set[str]]:
    """One Problem per failed field, and the fields that failed; the values of `quiet`
    fields (secrets) are never echoed."""
    problems: list[Problem] = []
    broken: set[str] = set()
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        broken.add(field)
        message = _message_for(error)
        if field in values and field not in quiet:
            message += f" (got {values[field]!r})"
        problems.append(Problem(code_for(field, error["type"]), prefix + field.upper(), message))
    return problems, broken


def _cross_checks(settings: Settings) -> tuple[list[Problem], list[Problem]]:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if not settings.session_cookie_secure:
        if settings.acknowledge_plain_http:
            warnings.append(
                Problem(
                    "BST-W001",
                    "BASTION_SESSION_COOKIE_SECURE",
                    "session cookies travel without Secure (plain-HTTP deployment acknowledged); "
                    "terminate TLS in front of Bastion if any hop is untrusted",
                )
            )
        else:
            problems.append(
                Problem(
                    "BST-E007",
                    "BASTION_SESSION_COOKIE_SECURE",
                    "false sends session cookies over plain HTTP; set "
                    "BASTION_ACKNOWLEDGE_PLAIN_HTTP=true to confirm the deployment is HTTP-only",
                )
            )
    if settings.master_key is None and not settings.default_master_key_path.is_file():
        problems.append(
            Problem(
                "BST-E001",
                "BASTION_MASTER_KEY",
                "missing: set BASTION_MASTER_KEY or BASTION_MASTER_KEY_FILE, "
                f"or run `bastion init` to create {settings.default_master_key_path}",
            )
        )
    if settings.executor == "celery" and settings.redis_url is None:
        problems.append(
            Problem(
                "BST-E011",
                "BASTION_EXECUTOR",
                "celery needs a broker: set BASTION_REDIS_URL",
            )
        )
    try:
        egress_policy(settings)
    except InvalidInput as exc:
        problems.append(Problem("BST-E012", "BASTION_EGRESS_DENY / _ALLOW", str(exc)))
    problems += _rotation_problems(settings)
    return problems, warnings


def _rotation_problems(settings: Settings) -> list[Problem]:
    problems: list[Problem] = []
    pools: list[PoolConfig] = []
    if settings.rotation_pools_file is not None:
        try:
            pools = load_pools(settings.rotation_pools_file)
        except PoolsFileError as exc:
            problems += [
                Problem("BST-E020", "BASTION_ROTATION_POOLS_FILE", problem)
                for problem in exc.problems
            ]
    if pools and settings.rotation_docker_url is None:
        problems.append(
            Problem(
                "BST-E021",
                "BASTION_ROTATION_DOCKER_URL",
                "pools are configured: set the docker proxy's URL (`bastion docker-proxy`)",
            )
        )
    if settings.rotation_docker_url is not None and settings.rotation_docker_token is None:
        problems.append(
            Problem(
                "BST-E022",
                "BASTION_ROTATION_DOCKER_TOKEN",
                "missing: the docker proxy accepts no request without its token "
                "(set BASTION_ROTATION_DOCKER_TOKEN or BASTION_ROTATION_DOCKER_TOKEN_FILE)",
            )
        )
    return problems + _docker_tls_problems(settings)


def _docker_tls_problems(settings: Settings) -> list[Problem]:
    files = {
        "BASTION_ROTATION_DOCKER_CA_FILE": settings.rotation_docker_ca_file,
        "BASTION_ROTATION_DOCKER_CERT_FILE": settings.rotation_docker_cert_file,
        "BASTION_ROTATION_DOCKER_KEY_FILE": settings.rotation_docker_key_file,
    }
    problems = []
    url = settings.rotation_docker_url or ""
    for name, path in files.items():
        if path is None:
            continue
        if not url.startswith("https://"):
            problems.append(Problem("BST-E023", name, "only used with an https:// docker URL"))
        elif not path.is_file():
            problems.append(Problem("BST-E023", name, f"cannot read {path}"))
    cert, key = settings.rotation_docker_cert_file, settings.rotation_docker_key_file
    if (cert is None) != (key is None):
        problems.append(
            Problem(
                "BST-E023",
                "BASTION_ROTATION_DOCKER_CERT_FILE / _KEY_FILE",
                "a client certificate needs its key, and a key its certificate",
            )
        )
    return problems


_DEFAULT_PORTS = {"postgresql": 5432, "redis": 6379, "rediss": 6379}


def _entries(value: str) -> list[str]:
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def egress_policy(settings: Settings) -> EgressPolicy:
    """Where workflows may not send requests: the built-in list, the operator's additions,
    and Bastion's own listeners (always)."""
    internal = [_listener(settings.host, settings.port)]
    for url in (settings.database_url, settings.redis_url):
        if url is not None:
            parsed = urlsplit(url.get_secret_value())
            port = parsed.port or _DEFAULT_PORTS.get(parsed.scheme.split("+")[0])
            if parsed.hostname and port:
                internal.append(_listener(parsed.hostname, port))
    return EgressPolicy.parse(
        [*DEFAULT_DENY, *_entries(settings.egress_deny)],
        _entries(settings.egress_allow),
        [entry for entry in internal if entry],
    )


def _listener(host: str, port: int) -> str:
    """An `internal` entry for host:port; a wildcard bind covers that port everywhere."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return ""  # a name: the deny list covers loopback names, DNS is not consulted here
    if address.is_unspecified:
        return f"0.0.0.0/0:{port}"
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


@dataclass(frozen=True)
class LoadedSettings:
    settings: Settings
    warnings: list[Problem]


def load_settings(
    env: Mapping[str, str] | None = None, *, require_master_key: bool = True
) -> LoadedSettings:
    """Validate the whole configuration; raise ConfigError listing every problem."""
    if env is None:
        env = read_environment()
    problems: list[Problem] = []
    values: dict[str, str] = {}
    unknown: list[Problem] = []
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or value == "":
            continue
        field = key[len(ENV_PREFIX) :].lower()
        if field in Settings.model_fields:  # settings that are paths may end in _FILE too
            values[field] = value
        elif field.removesuffix("_file") in SECRET_FIELDS:
            continue  # a secret's _FILE variant: _read_secret_files reads it
        elif key not in NOT_SETTINGS and not key.startswith(PROXY_PREFIX):
            unknown.append(Problem("BST-W002", key, "unknown setting, ignored (a typo?)"))
    values.update(_read_secret_files(env, problems))
    settings, field_problems, broken = _validate(values)
    problems.extend(field_problems)
    if settings is None:
        # Re-validate with the broken settings left at their defaults so the checks that
        # span several settings still run: every problem is reported in one go.
        settings, _, _ = _validate({k: v for k, v in values.items() if k not in broken})
    warnings = unknown
    if settings is not None:
        cross_problems, cross_warnings = _cross_checks(settings)
        if "master_key" in broken:  # malformed, not missing: already reported
            cross_problems = [p for p in cross_problems if p.code != "BST-E001"]
        warnings = warnings + cross_warnings
        if not require_master_key:
            cross_problems = [p for p in cross_problems if p.code != "BST-E001"]
        problems.extend(cross_problems)
    if problems or settings is None:
        raise ConfigError(problems)
    if settings.master_key is None and settings.default_master_key_path.is_file():
        settings = _with_default_master_key(settings)
    return LoadedSettings(settings, warnings)


def _with_default_master_key(settings: Settings) -> Settings:
    path = settings.default_master_key_path
    try:
        text = path.read_text(encoding="utf-8").strip()
        decode_master_key(text)
    except (OSError, UnicodeDecodeError, ValueError):
        raise ConfigError(
            [Problem("BST-E002", str(path), "must hold 32 bytes encoded as base64")]
        ) from None
    return settings.model_copy(update={"master_key": SecretStr(text)})
