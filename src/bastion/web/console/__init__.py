"""The operator console: server-rendered pages under `/`, scripts from `/app/…`."""

from __future__ import annotations

from starlette.routing import Route

from bastion.web.console.audit import audit_page
from bastion.web.console.logs import logs_page
from bastion.web.console.overview import overview
from bastion.web.console.rotation import rotation_page
from bastion.web.console.runs import run_detail, run_list
from bastion.web.console.settings import settings_page
from bastion.web.console.vault import vault_page
from bastion.web.console.workflows import workflow_detail, workflow_list

routes = [
    Route("/", overview, methods=["GET"]),
    Route("/rotation", rotation_page, methods=["GET"]),
    Route("/workflows", workflow_list, methods=["GET"]),
    Route("/workflows/{workflow_id}", workflow_detail, methods=["GET"]),
    Route("/runs", run_list, methods=["GET"]),
    Route("/runs/{run_id}", run_detail, methods=["GET"]),
    Route("/vault", vault_page, methods=["GET"]),
    Route("/audit", audit_page, methods=["GET"]),
    Route("/logs", logs_page, methods=["GET"]),
    Route("/settings", settings_page, methods=["GET"]),
]
