"""What every node type is, and what a node may use while it runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
from pydantic import BaseModel, ConfigDict

from bastion.workflows.egress import EgressPolicy


class Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CodeRunner(Protocol):
    """Runs untrusted code in isolation (execution/sandbox.py)."""

    async def run(self, code: str, data: Any) -> Any: ...


class SubWorkflows(Protocol):
    """Runs another workflow of the same workspace to completion, inside this run."""

    async def run(self, context: NodeContext, workflow: str, data: Any) -> Any: ...


@dataclass(frozen=True)
class Runtime:
    """The services nodes use; one per executor, shared by its runs."""

    egress: EgressPolicy
    http: httpx.AsyncClient
    code: CodeRunner
    sub_workflows: SubWorkflows
    max_delay_seconds: float


@dataclass(frozen=True)
class NodeContext:
    run_id: str
    workspace_id: int
    workflow_id: str
    node_id: str
    state: Mapping[str, Any]  # {"input": …, "steps": {node id: output}}
    runtime: Runtime
    depth: int = 0  # sub-workflow nesting


@dataclass(frozen=True)
class NodeType:
    name: str
    params: type[Params]
    run: Callable[[Any, NodeContext], Awaitable[Any]]
    # Parameters taken literally, never templated: code and expressions, where
    # substituting run data would let that data rewrite the program.
    literal: frozenset[str] = frozenset()
    # May the node run again after a crash cut it short? Only if running it twice is
    # harmless: a second POST to a payment API is not.
    resumable: Callable[[Any], bool] = lambda params: True
