"""The baseline for HTTP benchmarks: a bare Starlette app, served exactly like Bastion."""

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route


async def healthz(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def accepted(request: Request) -> Response:
    await request.body()
    return JSONResponse({"run_id": "0"}, status_code=202)


# A static page of about the size of a console page (bench/pages.py's baseline).
PAGE = (
    "<!doctype html><html><head><title>baseline</title></head><body><table>"
    + "".join(f"<tr><td>{n}</td><td>row {n}</td><td>succeeded</td></tr>" for n in range(250))
    + "</table></body></html>"
)


async def page(request: Request) -> HTMLResponse:
    return HTMLResponse(PAGE)


app = Starlette(
    routes=[
        Route("/healthz", healthz),
        Route("/accept", accepted, methods=["POST"]),
        Route("/page", page),
    ]
)
