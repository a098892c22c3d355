"""The `code` node: Python that defines `main(data)`, always run in the sandbox.

`data` holds the run's input, the outputs of earlier steps and the node's `args`, where
templates may name credentials: the only credentials the code ever sees.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from bastion.workflows.nodes.base import NodeContext, NodeType, Params


class CodeParams(Params):
    code: str = Field(min_length=1, max_length=64 * 1024)
    args: dict[str, Any] = Field(default_factory=dict)


async def _code(params: CodeParams, context: NodeContext) -> Any:
    data = {"input": context.state["input"], "steps": context.state["steps"], "args": params.args}
    return await context.runtime.code.run(params.code, data)


# Resumable: the sandbox has no network and a throw-away disk, so a second run has no
# effect outside the run.
CODE = NodeType("code", CodeParams, _code, literal=frozenset({"code"}))
