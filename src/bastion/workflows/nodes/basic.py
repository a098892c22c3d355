"""The nodes that only compute: set, transform, condition, delay, fail."""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field

from bastion.workflows.errors import NodeFailed
from bastion.workflows.nodes.base import NodeContext, NodeType, Params
from bastion.workflows.templates import evaluate


class SetParams(Params):
    values: dict[str, Any]


async def _set(params: SetParams, context: NodeContext) -> Any:
    return params.values


class ExpressionParams(Params):
    expression: str = Field(min_length=1, max_length=2000)


async def _transform(params: ExpressionParams, context: NodeContext) -> Any:
    return evaluate(params.expression, context.state)


async def _condition(params: ExpressionParams, context: NodeContext) -> Any:
    value = evaluate(params.expression, context.state)
    # JMESPath truthiness: false, null, "", [] and {} are false.
    return {"result": value not in (False, None, "", [], {})}


class DelayParams(Params):
    seconds: float = Field(ge=0)


async def _delay(params: DelayParams, context: NodeContext) -> Any:
    if params.seconds > context.runtime.max_delay_seconds:
        raise NodeFailed(
            f"delay of {params.seconds:g} s exceeds the limit of "
            f"{context.runtime.max_delay_seconds:g} s"
        )
    await asyncio.sleep(params.seconds)
    return {"slept": params.seconds}


class FailParams(Params):
    message: str = Field(default="failed by the workflow", max_length=1000)


async def _fail(params: FailParams, context: NodeContext) -> Any:
    raise NodeFailed(params.message)


SET = NodeType("set", SetParams, _set)
TRANSFORM = NodeType("transform", ExpressionParams, _transform, literal=frozenset({"expression"}))
CONDITION = NodeType("condition", ExpressionParams, _condition, literal=frozenset({"expression"}))
DELAY = NodeType("delay", DelayParams, _delay)
FAIL = NodeType("fail", FailParams, _fail)
