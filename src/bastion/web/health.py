"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bastion.execution.sandbox import Isolation
from bastion.web.access import declare

log = logging.getLogger("bastion.health")

CHECK_TIMEOUT = 2.0

_OK = b'{"status":"ok"}'


@declare("public")
async def healthz(request: Request) -> Response:
    return Response(_OK, media_type="application/json")


async def _check(name: str, probe: Callable[[], Awaitable[None]]) -> dict[str, str]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            await probe()
    except TimeoutError:
        log.warning("readiness: %s did not answer within %s s", name, CHECK_TIMEOUT)
        return {"status": "unavailable", "reason": "timeout"}
    except Exception as exc:
        # The detail (host names, driver text) goes to the log, not to this
        # unauthenticated endpoint.
        log.warning("readiness: %s failed: %s", name, exc)
        return {"status": "unavailable", "reason": "error"}
    return {"status": "ok"}


@declare("public")
async def readyz(request: Request) -> JSONResponse:
    services = request.state.services
    probes: dict[str, Callable[[], Awaitable[None]]] = {"database": services.db.ping}
    if services.stores.backend == "redis":
        probes["redis"] = services.stores.kv.ping
    if services.rotation is not None:  # rotation needs the docker proxy
        probes["docker_proxy"] = services.rotation.docker.ping
    results = await asyncio.gather(*(_check(name, probe) for name, probe in probes.items()))
    checks = dict(zip(probes, results, strict=True))
    ready = all(result["status"] == "ok" for result in checks.values())
    return JSONResponse(
        {
            "status": "ok" if ready else "unavailable",
            "checks": checks,
            "sandbox": _sandbox(services.sandbox.isolation),
        },
        status_code=200 if ready else 503,
    )


def _sandbox(isolation: Isolation) -> dict[str, object]:
    """What isolation code nodes get here. A missing layer degrades it without making the
    server unready (code still runs); the reasons are in the log, not on this public page."""
    layers = {
        "network": isolation.network,
        "filesystem": isolation.filesystem,
        "user": isolation.user,
    }
    return {"status": "ok" if all(layers.values()) else "degraded", **layers}


routes = [Route("/healthz", healthz, methods=["GET"]), Route("/readyz", readyz, methods=["GET"])]
