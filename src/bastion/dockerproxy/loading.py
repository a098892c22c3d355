"""Loading the docker proxy's settings: the environment (and `.env`), the token file, and
the checks that span several settings. Every problem is reported in one pass."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from bastion.config import ConfigError, Problem, problems_of, read_environment
from bastion.dockerproxy.settings import (
    ENV_PREFIX,
    SECRET_FIELDS,
    TLS_FIELDS,
    DockerProxySettings,
)


@dataclass(frozen=True)
class LoadedProxySettings:
    settings: DockerProxySettings
    warnings: list[Problem]


def _env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


_CODES = {
    "token": "BST-E101",
    "allowed_containers": "BST-E102",
    "host": "BST-E103",
    "unix_socket": "BST-E103",
    "tls_cert_file": "BST-E104",
    "tls_key_file": "BST-E104",
    "tls_client_ca_file": "BST-E104",
    "docker_socket": "BST-E106",
}


def _read_token_file(env: Mapping[str, str], problems: list[Problem]) -> dict[str, str]:
    name = _env_name("token")
    file_name = name + "_FILE"
    path = env.get(file_name)
    if not path:
        return {}
    if env.get(name):
        problems.append(Problem("BST-E009", name, f"set either {name} or {file_name}, not both"))
        return {}
    try:
        return {"token": Path(path).read_text(encoding="utf-8").strip()}
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        problems.append(Problem("BST-E008", file_name, f"cannot read {path}: {reason}"))
        return {}


def _validate(
    values: Mapping[str, str],
) -> tuple[DockerProxySettings | None, list[Problem], set[str]]:
    try:
        return DockerProxySettings(**values), [], set()  # type: ignore[arg-type]
    except ValidationError as exc:
        problems, broken = problems_of(
            exc,
            values,
            prefix=ENV_PREFIX,
            code_for=_code_for,
            quiet=frozenset({*SECRET_FIELDS, "allowed_containers"}),
        )
        return None, problems, broken


def _code_for(field: str, error_type: str) -> str:
    if error_type.startswith(("int_", "greater_than", "less_than")):
        return "BST-E006"  # as in bastion.config: a number out of range
    return _CODES.get(field, "BST-E010")


def _check_tls(settings: DockerProxySettings) -> list[Problem]:
    given = {field: getattr(settings, field) for field in TLS_FIELDS}
    if not any(given.values()):
        return []
    missing = [_env_name(field) for field, path in given.items() if path is None]
    if missing:
        return [
            Problem(
                "BST-E104",
                _env_name("tls_client_ca_file")
                if len(missing) == 1
                else "BASTION_DOCKER_PROXY_TLS_*",
                "mutual TLS needs a server certificate, its key and the CA that signs client "
                f"certificates; missing: {', '.join(missing)}",
            )
        ]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_cert_chain(str(settings.tls_cert_file), str(settings.tls_key_file))
    except (OSError, ssl.SSLError) as exc:
        return [
            Problem(
                "BST-E104",
                "BASTION_DOCKER_PROXY_TLS_CERT_FILE / _KEY_FILE",
                f"cannot load the server certificate and key: {_ssl_reason(exc)}",
            )
        ]
    try:
        context.load_verify_locations(cafile=str(settings.tls_client_ca_file))
    except (OSError, ssl.SSLError) as exc:
        return [
            Problem(
                "BST-E104",
                _env_name("tls_client_ca_file"),
                f"cannot load the client CA from {settings.tls_client_ca_file}: {_ssl_reason(exc)}",
            )
        ]
    return []


def _ssl_reason(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if exc.strerror:
        return f"{exc.strerror} ({exc.filename})" if exc.filename else exc.strerror
    return str(exc)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _cross_checks(
    settings: DockerProxySettings, broken: set[str]
) -> tuple[list[Problem], list[Problem]]:
    problems: list[Problem] = []
    warnings: list[Problem] = []
    if settings.token is None and "token" not in broken:
        problems.append(
            Problem(
                "BST-E101",
                _env_name("token"),
                f"missing: set {_env_name('token')} or {_env_name('token')}_FILE "
                "(generate one with `openssl rand -hex 32`)",
            )
        )
    if not settings.allowed_containers and "allowed_containers" not in broken:
        problems.append(
            Problem(
                "BST-E102",
                _env_name("allowed_containers"),
                "missing: name the containers the proxy may reach, comma-separated",
            )
        )
    listener_set = {"host", "port"} & settings.model_fields_set
    if settings.unix_socket is not None and listener_set:
        problems.append(
            Problem(
                "BST-E103",
                _env_name("unix_socket"),
                "set either a unix socket or "
                f"{' and '.join(_env_name(f) for f in sorted(listener_set))}, not both",
            )
        )
    if not broken & set(TLS_FIELDS):
        problems.extend(_check_tls(settings))
    plain_remote = (
        settings.unix_socket is None
        and not settings.tls_enabled
        and not _is_loopback(settings.host)
    )
    if plain_remote and settings.acknowledge_plain_tcp:
        warnings.append(
            Problem(
                "BST-W101",
                _env_name("host"),
                "the token travels in clear over TCP (plain TCP acknowledged); "
                "only a private network or network ACLs protect it",
            )
        )
    elif plain_remote:
        problems.append(
            Problem(
                "BST-E105",
                _env_name("host"),
                f"{settings.host} is not loopback and TLS is off, so the token would travel in "
                "clear: configure mutual TLS, or set "
                f"{_env_name('acknowledge_plain_tcp')}=true when the network is private",
            )
        )
    if not settings.docker_socket.exists():
        warnings.append(
            Problem(
                "BST-W102",
                _env_name("docker_socket"),
                f"{settings.docker_socket} does not exist (yet); requests get 502 until it does",
            )
        )
    return problems, warnings


def load_proxy_settings(env: Mapping[str, str] | None = None) -> LoadedProxySettings:
    """Validate the proxy's configuration; raise ConfigError listing every problem."""
    if env is None:
        env = read_environment()
    problems: list[Problem] = []
    warnings: list[Problem] = []
    values: dict[str, str] = {}
    for key, value in env.items():
        if not key.startswith(ENV_PREFIX) or value == "":
            continue
        field = key[len(ENV_PREFIX) :].lower()
        if field in DockerProxySettings.model_fields:  # the TLS paths end in _FILE too
            values[field] = value
        elif field.removesuffix("_file") not in SECRET_FIELDS:
            warnings.append(Problem("BST-W002", key, "unknown setting, ignored (a typo?)"))
    values.update(_read_token_file(env, problems))
    settings, field_problems, broken = _validate(values)
    problems.extend(field_problems)
    if settings is None:
        # Defaults for the broken settings, so the checks across settings still run.
        settings, _, _ = _validate({k: v for k, v in values.items() if k not in broken})
    if settings is not None:
        cross_problems, cross_warnings = _cross_checks(settings, broken)
        problems.extend(cross_problems)
        warnings.extend(cross_warnings)
    if problems or settings is None:
        raise ConfigError(problems)
    return LoadedProxySettings(settings, warnings)
