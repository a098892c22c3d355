"""Liveness and readiness."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

log = logging.getLogger("bastion.health")

CHECK_TIMEOUT = 2.0

router = APIRouter()


_OK = b'{"status":"ok"}'


async def healthz(request: Request) -> Response:
    # A plain Starlette route: load balancers call this constantly, and it needs none of
    # FastAPI's validation or serialisation.
    return Response(_OK, media_type="application/json")


router.add_route("/healthz", healthz, methods=["GET"], include_in_schema=False)


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


@router.get("/readyz", include_in_schema=False)
async def readyz(request: Request) -> JSONResponse:
    services = request.app.state.services
    probes: dict[str, Callable[[], Awaitable[None]]] = {"database": services.db.ping}
    if services.stores.backend == "redis":
        probes["redis"] = services.stores.kv.ping
    results = await asyncio.gather(*(_check(name, probe) for name, probe in probes.items()))
    checks = dict(zip(probes, results, strict=True))
    ready = all(result["status"] == "ok" for result in checks.values())
    return JSONResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status_code=200 if ready else 503,
    )
