"""Container names: Docker's rule, and the one name Bastion refuses on top of it.

The docker proxy's allowlist and the rotation pools name the same containers, so both
check names here: a pool naming a container no proxy could allow would only fail later.
"""

from __future__ import annotations

import re

# Docker's own rule for container names (RestrictedNamePattern in the daemon).
CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
# Docker resolves /containers/{x} by full id, then by name, then by id *prefix*: an allowed
# name made only of hex digits would also reach whichever container's id starts with it.
_HEX_ONLY = re.compile(r"[0-9a-f]+")


def name_problem(name: str) -> str | None:
    """Why `name` cannot be an allowed container name, or None."""
    if not CONTAINER_NAME.fullmatch(name):
        return f"{name[:40]!r} is not a Docker container name ([a-zA-Z0-9][a-zA-Z0-9_.-]+)"
    if _HEX_ONLY.fullmatch(name):
        return (
            f"{name!r} has only hex digits, so Docker would also resolve it as the id "
            "prefix of another container; use a name with another character"
        )
    return None
