"""`bastion docker-proxy`: the only process with the Docker socket (BASTION_DOCKER_PROXY_*)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from bastion.cli_setup import EXIT_CONFIG, fail
from bastion.config import ConfigError


def docker_proxy(
    check: Annotated[
        bool, typer.Option("--check", help="Validate the configuration and exit.")
    ] = False,
) -> None:
    """Serve the allowlisting, token-protected proxy in front of the Docker socket."""
    from bastion.dockerproxy.loading import load_proxy_settings
    from bastion.dockerproxy.server import ListenError, run

    os.umask(0o077)
    try:
        loaded = load_proxy_settings()
    except ConfigError as exc:
        for problem in exc.problems:
            typer.echo(str(problem), err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    for warning in loaded.warnings:
        typer.echo(f"warning: {warning}", err=True)
    settings = loaded.settings
    if check:
        typer.echo(
            f"docker proxy configuration OK (listen: {settings.listen_address}, "
            f"containers: {', '.join(settings.allowed_containers)})"
        )
        return
    try:
        run(settings)
    except ListenError as exc:
        fail(str(exc))
