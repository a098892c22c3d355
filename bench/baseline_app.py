"""The baseline for HTTP benchmarks: a bare Starlette app, served exactly like Bastion."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def accepted(request: Request) -> Response:
    await request.body()
    return JSONResponse({"run_id": "0"}, status_code=202)


app = Starlette(routes=[Route("/healthz", healthz), Route("/accept", accepted, methods=["POST"])])
