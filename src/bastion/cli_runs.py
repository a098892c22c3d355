"""`bastion runs …`: run history from the command line, and how runs and steps print.

Listing is newest first and pages by key: run ids sort by time, so `--before ID` is the
next page after a run, stable while new runs keep arriving. The formatting helpers here
also serve `bastion workflows run`, which prints the steps of the run it executes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from bastion.accounts.workspaces import get_workspace
from bastion.cli_setup import fail, prepared_settings, run_with_database
from bastion.db import Database
from bastion.db.tables import Run, RunStep
from bastion.runs import history
from bastion.runs.records import Status
from bastion.workflows.store import Workflows

runs_app = typer.Typer(help="Run history.", no_args_is_help=True)
WorkspaceOption = Annotated[str, typer.Option(help="Workspace slug.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
STATUSES = tuple(status.value for status in Status)
_RUN_ID = re.compile(r"[0-9a-f]{32}")
STEP_OUTPUT_CHARS = 80  # in a table; --json gives the stored (already capped) output


async def workspace_id(db: Database, slug: str) -> int:
    async with db.session() as session:
        return (await get_workspace(session, slug)).id


def moment(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}" if value else ""


def milliseconds(value: float) -> str:
    return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"


def run_duration(run: Run) -> str:
    if run.started_at is None or run.finished_at is None:
        return ""
    return milliseconds((run.finished_at - run.started_at).total_seconds() * 1000)


def step_line(step: RunStep) -> str:
    return f"  {step.seq:>3}  {step.node:<24} {step.status:<9} {milliseconds(step.duration_ms)}"


def _clipped(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def run_document(run: Run, workflow: str) -> dict[str, Any]:
    return {
        "id": run.id,
        "workflow": workflow,
        "workflow_id": run.workflow_id,
        "version": run.version,
        "trigger": run.trigger,
        "actor": run.actor,
        "status": run.status,
        "attempt": run.attempt,
        "parent_run_id": run.parent_run_id,
        "trigger_id": run.trigger_id,
        "reason": run.reason,
        "not_before": run.not_before.isoformat() if run.not_before else None,
        "failure": run.failure,
        "input": json.loads(run.input),
        "output": json.loads(run.output) if run.output is not None else None,
        "error": run.error,
        "queued_at": run.queued_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def _step_document(step: RunStep) -> dict[str, Any]:
    return {
        "seq": step.seq,
        "node": step.node,
        "status": step.status,
        "started_at": step.started_at.isoformat(),
        "finished_at": step.finished_at.isoformat(),
        "duration_ms": round(step.duration_ms, 3),
        "output": json.loads(step.output),
        "error": step.error,
    }


def _print_json(value: Any) -> None:
    typer.echo(json.dumps(value, indent=2, ensure_ascii=False))


@runs_app.command("list")
def list_(
    workspace: WorkspaceOption,
    workflow: Annotated[str | None, typer.Option(help="Only this workflow's runs.")] = None,
    status: Annotated[
        str | None, typer.Option(help=f"Only runs in this status: {', '.join(STATUSES)}.")
    ] = (None),
    limit: Annotated[int, typer.Option(min=1, max=500, help="Runs per page.")] = 20,
    before: Annotated[
        str | None, typer.Option(metavar="RUN_ID", help="The page after this run (older runs).")
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """List runs, newest first."""
    if status is not None and status not in STATUSES:
        fail(f"unknown status {status[:40]!r} (valid: {', '.join(STATUSES)})")
    if before is not None and not _RUN_ID.fullmatch(before):
        fail("--before takes a run id (32 hexadecimal digits)")

    async def work(db: Database) -> tuple[Sequence[Run], dict[str, str]]:
        space = await workspace_id(db, workspace)
        workflows = Workflows(db)
        names = {w.id: w.name for w in await workflows.in_workspace(space)}
        only = (await workflows.named(space, workflow)).id if workflow is not None else None
        query = history.RunFilter(space, only, status, None, before, limit)
        return await history.list_runs(db, query), names

    found, names = run_with_database(prepared_settings(), work)
    next_before = found[-1].id if len(found) == limit else None
    if as_json:
        runs = [run_document(run, names.get(run.workflow_id, "")) for run in found]
        _print_json({"runs": runs, "next_before": next_before})
        return
    if not found:
        typer.echo("no runs")
        return
    table = Table("id", "workflow", "version", "trigger", "status", "attempt", "queued", "duration")
    for run in found:
        table.add_row(
            run.id,
            names.get(run.workflow_id, run.workflow_id),
            str(run.version),
            run.trigger,
            run.status,
            str(run.attempt),
            moment(run.queued_at),
            run_duration(run),
        )
    Console(width=160).print(table)
    if next_before is not None:
        typer.echo(f"older runs: --before {next_before}")


@runs_app.command()
def show(run_id: str, as_json: JsonOption = False) -> None:
    """Show a run: its record and its steps."""

    async def work(db: Database) -> tuple[Run, str, Sequence[RunStep]]:
        run = await history.get_run(db, run_id)
        workflow = await Workflows(db).get(run.workflow_id)
        return run, workflow.name, await history.steps(db, run.id)

    run, workflow, steps = run_with_database(prepared_settings(), work)
    if as_json:
        _print_json({**run_document(run, workflow), "steps": [_step_document(s) for s in steps]})
        return
    fields = [
        ("run", run.id),
        ("workflow", f"{workflow} ({run.workflow_id}) version {run.version}"),
        ("status", run.status),
        ("trigger", f"{run.trigger} by {run.actor}, attempt {run.attempt}"),
        ("parent", run.parent_run_id or ""),
        ("reason", run.reason),
        ("not before", moment(run.not_before)),
        ("queued", moment(run.queued_at)),
        ("started", moment(run.started_at)),
        ("finished", moment(run.finished_at)),
        ("duration", run_duration(run)),
        ("input", run.input),
        ("output", run.output or ""),
        ("error", run.error),
    ]
    for label, value in fields:
        if value:
            typer.echo(f"{label + ':':<10}{value}")
    if not steps:
        typer.echo("no steps")
        return
    table = Table("seq", "node", "status", "duration", "output", "error")
    for step in steps:
        table.add_row(
            str(step.seq),
            step.node,
            step.status,
            milliseconds(step.duration_ms),
            # Text, not markup: node output is data, and "[bold]" in it must print as is.
            Text(_clipped(step.output, STEP_OUTPUT_CHARS)),
            Text(step.error),
        )
    Console(width=160).print(table)
