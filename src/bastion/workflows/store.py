"""Workflows and their immutable versions in the database."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError

from bastion.db import Database
from bastion.db.tables import Workflow, WorkflowVersion
from bastion.errors import Conflict, InvalidInput, NotFound
from bastion.workflows.graph import Graph

# Names appear in URLs, logs and sub-workflow references.
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}"
MAX_DESCRIPTION = 500


def check_name(name: str) -> None:
    if not re.fullmatch(NAME_PATTERN, name):
        raise InvalidInput(
            f"workflow name {name[:100]!r}: a letter or digit, then letters, digits, "
            "'_', '.' or '-' (at most 100)"
        )


class Workflows:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create(
        self, workspace_id: int, name: str, description: str, graph: Graph, actor: str
    ) -> Workflow:
        check_name(name)
        if len(description) > MAX_DESCRIPTION:
            raise InvalidInput(f"the description is longer than {MAX_DESCRIPTION} characters")
        workflow = Workflow(
            id=secrets.token_hex(16),
            workspace_id=workspace_id,
            name=name,
            description=description,
            current_version=1,
            created_by=actor,
        )
        try:
            async with self.db.transaction() as session:
                session.add(workflow)
                await session.flush()
                session.add(
                    WorkflowVersion(
                        workflow_id=workflow.id,
                        version=1,
                        graph=graph.canonical(),
                        created_by=actor,
                    )
                )
        except IntegrityError:
            raise Conflict(f"a workflow named {name!r} exists in this workspace") from None
        return workflow

    async def add_version(self, workflow_id: str, graph: Graph, actor: str) -> WorkflowVersion:
        async with self.db.transaction() as session:
            workflow = await session.get(Workflow, workflow_id, with_for_update=True)
            if workflow is None:
                raise NotFound(f"no workflow {workflow_id[:40]!r}")
            workflow.current_version += 1
            version = WorkflowVersion(
                workflow_id=workflow_id,
                version=workflow.current_version,
                graph=graph.canonical(),
                created_by=actor,
            )
            session.add(version)
        return version

    async def get(self, workflow_id: str) -> Workflow:
        async with self.db.session() as session:
            workflow = await session.get(Workflow, workflow_id)
        if workflow is None:
            raise NotFound(f"no workflow {workflow_id[:40]!r}")
        return workflow

    async def named(self, workspace_id: int, name: str) -> Workflow:
        async with self.db.session() as session:
            workflow = await session.scalar(
                select(Workflow).where(Workflow.workspace_id == workspace_id, Workflow.name == name)
            )
        if workflow is None:
            raise NotFound(f"no workflow named {name[:100]!r} in this workspace")
        return workflow

    async def in_workspace(self, workspace_id: int) -> Sequence[Workflow]:
        async with self.db.session() as session:
            found = await session.scalars(
                select(Workflow)
                .where(Workflow.workspace_id == workspace_id)
                .order_by(Workflow.name)
            )
            return found.all()

    async def version(self, workflow_id: str, version: int | None = None) -> WorkflowVersion:
        """A version of a workflow; its current one when `version` is None."""
        async with self.db.session() as session:
            if version is None:
                workflow = await session.get(Workflow, workflow_id)
                if workflow is None:
                    raise NotFound(f"no workflow {workflow_id[:40]!r}")
                version = workflow.current_version
            found = await session.get(WorkflowVersion, (workflow_id, version))
        if found is None:
            raise NotFound(f"workflow {workflow_id[:40]!r} has no version {version}")
        return found

    async def versions(self, workflow_id: str) -> Sequence[WorkflowVersion]:
        async with self.db.session() as session:
            found = await session.scalars(
                select(WorkflowVersion)
                .where(WorkflowVersion.workflow_id == workflow_id)
                .order_by(WorkflowVersion.version.desc())
            )
            return found.all()

    async def delete(self, workflow_id: str) -> None:
        async with self.db.transaction() as session:
            result = await session.execute(delete(Workflow).where(Workflow.id == workflow_id))
        if result.rowcount == 0:  # type: ignore[attr-defined]
            raise NotFound(f"no workflow {workflow_id[:40]!r}")
