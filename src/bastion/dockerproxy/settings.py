"""Settings of `bastion docker-proxy`: `BASTION_DOCKER_PROXY_*` (loading.py reads them).

The same conventions as bastion.config: the token also accepts
`BASTION_DOCKER_PROXY_TOKEN_FILE`, booleans are strict, and a secret is never echoed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from bastion.config import MergedSettings, StrictBool
from bastion.containers import name_problem

ENV_PREFIX = "BASTION_DOCKER_PROXY_"
SECRET_FIELDS = ("token",)
MIN_TOKEN_LENGTH = 32
# Visible ASCII only: the token travels in a header, and whitespace in it is a copy error.
_TOKEN_SHAPE = re.compile(r"[!-~]+")
TLS_FIELDS = ("tls_cert_file", "tls_key_file", "tls_client_ca_file")


def _split_names(value: object) -> object:
    if isinstance(value, str):
        return tuple(dict.fromkeys(n.strip() for n in value.split(",") if n.strip()))
    return value


ContainerNames = Annotated[tuple[str, ...], BeforeValidator(_split_names)]


class DockerProxySettings(MergedSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX)

    token: SecretStr | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=2375, ge=1, le=65535)
    unix_socket: Path | None = None
    docker_socket: Path = Path("/var/run/docker.sock")
    allowed_containers: ContainerNames = ()
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    acknowledge_plain_tcp: StrictBool = False
    upstream_timeout_seconds: int = Field(default=300, ge=1, le=24 * 3600)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("token")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            token = value.get_secret_value()
            if not _TOKEN_SHAPE.fullmatch(token):
                raise ValueError("must be visible ASCII characters without spaces")
            if len(token) < MIN_TOKEN_LENGTH:
                raise ValueError(
                    f"must be at least {MIN_TOKEN_LENGTH} characters "
                    "(generate one with `openssl rand -hex 32`)"
                )
        return value

    @field_validator("allowed_containers")
    @classmethod
    def _docker_names(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        reasons = [problem for name in names if (problem := name_problem(name))]
        if reasons:
            raise ValueError("; ".join(reasons))
        return names

    @field_validator("docker_socket", "unix_socket")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError("must be an absolute path")
        return value

    @property
    def containers(self) -> frozenset[str]:
        return frozenset(self.allowed_containers)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def listen_address(self) -> str:
        if self.unix_socket is not None:
            return f"unix://{self.unix_socket}"
        scheme = "https" if self.tls_enabled else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}"
