"""Serving the docker proxy under uvicorn: TCP or a unix socket, optionally mutual TLS."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import ssl
import stat
import sys
from pathlib import Path
from typing import Any

import uvicorn

from bastion.dockerproxy.app import DockerProxyApp
from bastion.dockerproxy.settings import DockerProxySettings
from bastion.errors import BastionError
from bastion.logs import SafeFormatter, redactor

# Owner and group: the server reaches the proxy by sharing the group, nobody else may.
UNIX_SOCKET_MODE = 0o660


class ListenError(BastionError):
    """The proxy cannot take its listening address."""


def uvicorn_options(settings: DockerProxySettings) -> dict[str, Any]:
    options: dict[str, Any] = {
        # The proxy trusts no forwarding header: the peer it logs is the socket's.
        "proxy_headers": False,
        "server_header": False,
        "date_header": False,
        "access_log": False,
        "log_config": None,
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,
    }
    if settings.unix_socket is None:
        options.update(host=settings.host, port=settings.port)
    if settings.tls_enabled:
        options.update(
            ssl_certfile=str(settings.tls_cert_file),
            ssl_keyfile=str(settings.tls_key_file),
            ssl_ca_certs=str(settings.tls_client_ca_file),
            # Mutual TLS: a client without a certificate from this CA fails the handshake,
            # before a single byte of HTTP (or a token guess) is read.
            ssl_cert_reqs=ssl.CERT_REQUIRED,
        )
    return options


def bind_unix_socket(path: Path) -> socket.socket:
    """Listen on `path` with mode 0660 (uvicorn's own binding makes it 0666)."""
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ListenError(f"{path} exists and is not a socket")
        if _in_use(path):
            raise ListenError(f"{path} is in use by another process")
        path.unlink()  # left over from a proxy that did not shut down cleanly
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o777 ^ UNIX_SOCKET_MODE)
    try:
        # The umask makes the socket 0660 from birth: no moment where others could connect.
        sock.bind(str(path))
    except OSError as exc:
        sock.close()
        raise ListenError(f"cannot listen on {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, UNIX_SOCKET_MODE)
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _in_use(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


def log_to_stderr(level: str) -> None:
    """One escaped, redacted line per record on stderr (the proxy keeps no log files)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(SafeFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("httpx").setLevel(logging.WARNING)


class _UnixSocketServer(uvicorn.Server):
    """Removes its socket file on shutdown (uvicorn then re-raises SIGTERM, so code after
    `run()` would never get to do it)."""

    def __init__(self, config: uvicorn.Config, path: Path) -> None:
        super().__init__(config)
        self.path = path

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().shutdown(sockets)
        finally:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def run(settings: DockerProxySettings) -> None:
    log_to_stderr(settings.log_level)
    if settings.token is not None:
        redactor.register(settings.token.get_secret_value())
    app = DockerProxyApp(settings)
    config = uvicorn.Config(app, **uvicorn_options(settings))
    logging.getLogger("bastion.dockerproxy").info(
        "docker proxy on %s for %s, containers: %s",
        settings.listen_address,
        settings.docker_socket,
        ", ".join(settings.allowed_containers),
    )
    if settings.unix_socket is None:
        uvicorn.Server(config).run()
        return
    sock = bind_unix_socket(settings.unix_socket)
    try:
        _UnixSocketServer(config, settings.unix_socket).run(sockets=[sock])
    finally:
        sock.close()
