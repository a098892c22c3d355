"""`bastion workflows …`: import, export and list workflows, and run one from the shell.

Import and export use one JSON document, `{"name", "description", "version", "graph"}`,
so a workflow can live in version control and be applied with `import` (a bare graph is
accepted too). Every graph is validated before anything is written; importing a graph
equal to the current version writes nothing, so a deploy script can re-apply it safely.

`run` executes the run in this process and prints its steps as they finish; with
`--no-wait` it only commits the run as queued, and a running server picks it up. The CLI
acts as the actor "cli" with admin rights.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from bastion.audit.chain import Event
from bastion.cli_runs import (
    JsonOption,
    WorkspaceOption,
    moment,
    run_duration,
    step_line,
    workspace_id,
)
from bastion.cli_setup import fail, prepared_settings, run_with_database
from bastion.cli_vault import Services
from bastion.cli_vault import run as with_services
from bastion.config import Settings
from bastion.db import Database
from bastion.db.tables import Run, Workflow, WorkflowVersion
from bastion.errors import InvalidInput, NotFound
from bastion.execution.dispatcher import Dispatcher
from bastion.runs import history
from bastion.runs.ledger import Ledger
from bastion.runs.records import FINISHED, Status, Trigger
from bastion.runs.signals import RunSignals
from bastion.triggers.gate import Gate, Origin, RunRequest
from bastion.triggers.retry import RetryPlanner
from bastion.workflows import graph as graphs
from bastion.workflows.errors import InvalidGraph
from bastion.workflows.store import MAX_DESCRIPTION, Workflows, check_name

workflows_app = typer.Typer(help="Workflows: import, export, list and run.", no_args_is_help=True)
ACTOR = "cli"
_DOCUMENT_KEYS = frozenset({"name", "description", "version", "graph"})
# Files may be indented: the caps that matter (graph, run input) apply to compact JSON
# after parsing; this bound only stops an absurd file from being read into memory.
WHITESPACE_SLACK = 4
FOLLOW_SECONDS = 0.5  # how often a running run is looked at between step signals


# -- reading JSON documents ---------------------------------------------------------------


def read_json(source: str, limit: int) -> Any:
    """JSON from a file, or stdin when `source` is "-"; refused beyond `limit` bytes."""
    label = "stdin" if source == "-" else source
    try:
        if source == "-":
            raw = sys.stdin.buffer.read(limit + 1)
        else:
            with Path(source).open("rb") as handle:
                raw = handle.read(limit + 1)
    except OSError as exc:
        fail(f"cannot read {label}: {exc.strerror or exc}")
    if len(raw) > limit:
        fail(f"{label} is larger than {limit // 1024} KiB")
    return parse_json(raw, label)


def parse_json(raw: str | bytes, label: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        fail(f"{label} is not JSON: {exc}")
    except RecursionError:
        fail(f"{label} is nested too deeply")


def _text(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is not None and not isinstance(value, str):
        fail(f"the document's {key!r} must be a string")
    return value


def _unpack(document: Any) -> tuple[Any, str | None, str | None]:
    """(graph, name, description) of an export document, or of a bare graph."""
    if not isinstance(document, dict) or "graph" not in document:
        return document, None, None
    unknown = sorted(set(document) - _DOCUMENT_KEYS)
    if unknown:
        fail(f"unknown key(s) in the document: {', '.join(repr(k[:40]) for k in unknown[:5])}")
    return document["graph"], _text(document, "name"), _text(document, "description")


# -- import, export, list -----------------------------------------------------------------


@workflows_app.command("import")
def import_(
    file: Annotated[str, typer.Argument(metavar="FILE", help="JSON document, or - for stdin.")],
    workspace: WorkspaceOption,
    name: Annotated[str | None, typer.Option(help="Default: the document's name.")] = None,
    description: Annotated[
        str | None, typer.Option(help="Default: the document's description.")
    ] = None,
) -> None:
    """Create a workflow from a graph, or add a version to the workflow of that name.

    A document's "version" is informational: an import makes the next version, or none
    when the graph equals the current one.
    """
    graph_data, named, described = _unpack(
        read_json(file, graphs.MAX_GRAPH_BYTES * WHITESPACE_SLACK)
    )
    name = name if name is not None else named
    description = description if description is not None else described
    if name is None:
        fail("the document names no workflow: give --name")
    try:
        check_name(name)  # before reading the database: a bad name needs no connection
    except InvalidInput as exc:
        fail(str(exc))
    if description is not None and len(description) > MAX_DESCRIPTION:
        fail(f"the description is longer than {MAX_DESCRIPTION} characters")
    if not isinstance(graph_data, dict):
        fail("the graph must be a JSON object with 'nodes' and 'edges'")
    try:
        graph = graphs.parse(graph_data)
    except InvalidGraph as exc:
        fail(str(exc))

    async def work(s: Services) -> str:
        space = await workspace_id(s.db, workspace)
        workflows = Workflows(s.db)
        try:
            workflow = await workflows.named(space, name)
        except NotFound:
            created = await workflows.create(space, name, description or "", graph, ACTOR)
            await _audit(s, "workflow.create", created.id, {"name": name})
            return f"created workflow {name!r} (id {created.id}): version 1"
        current = await workflows.version(workflow.id)
        if current.graph == graph.canonical():
            return f"workflow {name!r}: version {current.version} unchanged"
        if description is not None and description != workflow.description:
            typer.echo(
                f"warning: the description is not changed by a new version ({name!r} keeps "
                "its own)",
                err=True,
            )
        added = await workflows.add_version(workflow.id, graph, ACTOR)
        await _audit(s, "workflow.version", workflow.id, {"version": added.version})
        return f"workflow {name!r}: version {added.version}"

    typer.echo(with_services(work))


async def _audit(s: Services, action: str, target: str, details: dict[str, Any]) -> None:
    await s.audit.record(Event(action=action, actor=ACTOR, target=target, details=details))


@workflows_app.command()
def export(
    name: str,
    workspace: WorkspaceOption,
    version: Annotated[int | None, typer.Option(min=1, help="Default: the current one.")] = None,
    output: Annotated[
        Path | None, typer.Option(metavar="FILE", help="Write here instead of stdout.")
    ] = None,
) -> None:
    """Print a workflow version as a document that `import` accepts."""

    async def work(db: Database) -> tuple[Workflow, WorkflowVersion]:
        workflows = Workflows(db)
        workflow = await workflows.named(await workspace_id(db, workspace), name)
        if version is not None and version > workflow.current_version:
            raise NotFound(f"workflow {name!r} has no version {version}")
        return workflow, await workflows.version(workflow.id, version)

    workflow, stored = run_with_database(prepared_settings(), work)
    document = {
        "name": workflow.name,
        "description": workflow.description,
        "version": stored.version,
        "graph": json.loads(stored.graph),
    }
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"cannot write {output}: {exc.strerror or exc}")
    typer.echo(f"exported workflow {name!r} version {stored.version} to {output}")


@workflows_app.command("list")
def list_(workspace: WorkspaceOption, as_json: JsonOption = False) -> None:
    """List a workspace's workflows."""

    async def work(db: Database) -> list[Workflow]:
        return list(await Workflows(db).in_workspace(await workspace_id(db, workspace)))

    found = run_with_database(prepared_settings(), work)
    if as_json:
        rows = [
            {
                "name": w.name,
                "id": w.id,
                "current_version": w.current_version,
                "description": w.description,
                "created_at": w.created_at.isoformat(),
                "created_by": w.created_by,
            }
            for w in found
        ]
        typer.echo(json.dumps(rows, indent=2, ensure_ascii=False))
        return
    if not found:
        typer.echo("no workflows")
        return
    table = Table("name", "id", "version", "created")
    for workflow in found:
        table.add_row(
            workflow.name, workflow.id, str(workflow.current_version), moment(workflow.created_at)
        )
    Console(width=160).print(table)


# -- run ----------------------------------------------------------------------------------


class _LeftForRecovery:
    """Submits nothing: the run waits in the database, where the CLI executes it itself or
    a server's recovery picks it up (it submits runs queued for more than a few seconds)."""

    name = "cli"

    async def submit(self, run_id: str, workspace_id: int) -> None:
        return None

    def cancel(self, run_id: str) -> None:
        return None

    async def stop(self) -> None:
        return None


@workflows_app.command("run")
def run_(
    name: str,
    workspace: WorkspaceOption,
    input_: Annotated[
        str | None, typer.Option("--input", metavar="JSON", help="The run's input.")
    ] = None,
    input_file: Annotated[
        str | None,
        typer.Option(metavar="FILE", help="The run's input from a JSON file, or - for stdin."),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Execute here, or only queue the run.")
    ] = True,
    version: Annotated[int | None, typer.Option(min=1, help="Default: the current one.")] = None,
    reason: Annotated[
        str, typer.Option(help="Why: recorded with the run and in the audit trail.")
    ] = "",
) -> None:
    """Run a workflow: exit 0 when it succeeds, 1 when it fails, is blocked or cancelled."""
    if input_ is not None and input_file is not None:
        fail("give --input or --input-file, not both")
    settings = prepared_settings()
    if input_file is not None:
        data = read_json(input_file, settings.run_max_input_bytes * WHITESPACE_SLACK)
    else:
        data = {} if input_ is None else parse_json(input_, "--input")

    if len(reason) > 500:
        fail("--reason is longer than 500 characters")
    request = RunRequest(data, version, reason.strip())

    async def work(s: Services) -> Run:
        workflows = Workflows(s.db)
        workflow = await workflows.named(await workspace_id(s.db, workspace), name)
        if version is not None:
            await workflows.version(workflow.id, version)  # it must be this workflow's
        if not wait:
            return await _dispatch(settings, s, Ledger(s.db), workflow, request)
        return await _execute_here(settings, s, workflow, request)

    run = with_services(work, settings)
    if not wait:
        typer.echo(run.id)
        return
    typer.echo(f"run {run.id} {run.status} in {run_duration(run)}")
    if run.status != Status.SUCCEEDED:
        fail(run.error or run.status)
    typer.echo(json.dumps(json.loads(run.output or "null"), indent=2, ensure_ascii=False))


async def _dispatch(
    settings: Settings, s: Services, ledger: Ledger, workflow: Workflow, request: RunRequest
) -> Run:
    """Through the same gate as every trigger: health guard, durable accept, audit."""
    dispatcher = Dispatcher(
        ledger.db, ledger, _LeftForRecovery(), max_input_bytes=settings.run_max_input_bytes
    )
    gate = Gate(dispatcher, s.audit)
    (run,) = await gate.start(workflow, [request], Origin(Trigger.MANUAL, ACTOR))
    return run


async def _execute_here(
    settings: Settings, s: Services, workflow: Workflow, request: RunRequest
) -> Run:
    """Dispatch and execute the run in this process, printing its steps as they finish."""
    # Imported here: LangGraph takes a second to load, which no other command needs.
    from bastion.execution.factory import open_engine

    signals = RunSignals()
    async with open_engine(
        settings, s.db, s.vault, signals=signals, retries=RetryPlanner(s.audit)
    ) as execution:
        run = await _dispatch(settings, s, execution.ledger, workflow, request)
        typer.echo(f"run {run.id}: {workflow.name} version {run.version}")
        # The engine is called directly, not through an InlineExecutor: that one logs and
        # swallows an engine error, and here the caller must learn of it.
        task = asyncio.create_task(execution.engine.execute(run.id))
        leases = asyncio.create_task(execution.engine.keep_leases())
        after = 0
        try:
            while True:
                await signals.wait(run.id, FOLLOW_SECONDS)  # a step, or the run's end
                if task.done():
                    task.result()  # an engine error ends the command here
                # Status first: steps commit before a run's end, so all of them show.
                run = await history.get_run(s.db, run.id)
                for step in await history.steps(s.db, run.id, after=after):
                    after = step.seq
                    typer.echo(step_line(step))
                if run.status in FINISHED:
                    await task
                    return run
        finally:
            # Interrupted, the run keeps its lease until it lapses, then a server resumes
            # it. Both tasks end before the engine's connections close under them.
            leases.cancel()
            task.cancel()
            await asyncio.gather(leases, task, return_exceptions=True)
