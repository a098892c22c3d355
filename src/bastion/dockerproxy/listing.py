"""`GET /containers/json` through the proxy: Docker lists every container, the client sees
only the allowed ones."""

from __future__ import annotations

import json
from typing import Any

import httpx

from bastion.dockerproxy.allowlist import Allowlist
from bastion.dockerproxy.errors import DockerUnreachable

REASON_BAD_LIST = "Docker answered the container list with something unexpected"
MAX_LIST_BYTES = 16 * 1024 * 1024


async def filtered_list(response: httpx.Response, allowlist: Allowlist) -> bytes:
    """Docker's list cut down to the allowlist; anything it cannot vouch for is a 502."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_LIST_BYTES:
                raise DockerUnreachable(REASON_BAD_LIST)
            chunks.append(chunk)
        containers = json.loads(b"".join(chunks))
    except (httpx.HTTPError, ValueError):
        raise DockerUnreachable(REASON_BAD_LIST) from None
    # Fail closed: an answer of another shape cannot be filtered, so it is not passed on.
    if not isinstance(containers, list):
        raise DockerUnreachable(REASON_BAD_LIST)
    kept: list[dict[str, Any]] = []
    for entry in containers:
        names = entry.get("Names") if isinstance(entry, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise DockerUnreachable(REASON_BAD_LIST)
        # Other names (legacy links such as /other/alias) would reveal other containers.
        allowed = allowlist.keep(names)
        if allowed:
            kept.append({**entry, "Names": allowed})
    return json.dumps(kept, separators=(",", ":")).encode()
