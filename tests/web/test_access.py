from __future__ import annotations

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.routing import BaseRoute, Mount, Route

from bastion.web.access import declared
from bastion.web.api.principals import Requires
from bastion.web.app import create_app
from tests.web.conftest import make_settings


def _all_dependencies(route: APIRoute) -> list[Dependant]:
    found, pending = [], list(route.dependant.dependencies)
    while pending:
        dependency = pending.pop()
        found.append(dependency)
        pending.extend(dependency.dependencies)
    return found


def undeclared(routes: list[BaseRoute], prefix: str = "") -> list[str]:
    missing: list[str] = []
    for route in routes:
        if isinstance(route, APIRoute):
            guarded = any(isinstance(dep.call, Requires) for dep in _all_dependencies(route))
            if not guarded and declared(route.endpoint) is None:
                missing.append(prefix + route.path)
        elif isinstance(route, Route):
            if declared(route.endpoint) is None:
                missing.append(prefix + route.path)
        elif isinstance(route, Mount):
            if isinstance(route.app, FastAPI):
                missing += undeclared(route.app.routes, prefix + route.path)
            elif getattr(route.app, "bastion_access", None) is None:
                missing.append(prefix + route.path)
        elif hasattr(route, "original_router"):  # FastAPI keeps included routers whole
            context = route.include_context  # type: ignore[attr-defined]
            missing += undeclared(route.original_router.routes, prefix + context.prefix)
        else:
            missing.append(f"{prefix}{route!r} (unknown route kind)")
    return missing


def test_every_registered_route_declares_who_may_call_it(base_env: dict[str, str]) -> None:
    app = create_app(make_settings(base_env))
    assert len(app.routes) > 5
    assert undeclared(app.routes) == []


def test_the_walk_notices_an_undeclared_route(base_env: dict[str, str]) -> None:
    app = create_app(make_settings(base_env))

    async def forgotten(request: object) -> None:
        return None

    app.add_route("/forgotten", forgotten)
    assert undeclared(app.routes) == ["/forgotten"]
