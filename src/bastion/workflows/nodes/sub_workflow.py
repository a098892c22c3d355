"""The `sub_workflow` node: run another workflow of the same workspace, use its output."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bastion.workflows.nodes.base import NodeContext, NodeType, Params


class SubWorkflowParams(Params):
    workflow: str = Field(min_length=1, max_length=100, description="name, same workspace")
    input: Any = None


async def _sub_workflow(params: SubWorkflowParams, context: NodeContext) -> Any:
    return await context.runtime.sub_workflows.run(context, params.workflow, params.input)


# Not resumable: the child's nodes may include requests that must not repeat.
SUB_WORKFLOW = NodeType(
    "sub_workflow", SubWorkflowParams, _sub_workflow, resumable=lambda params: False
)
