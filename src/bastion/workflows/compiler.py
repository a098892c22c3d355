"""A validated graph compiled to a LangGraph state graph.

The state is `{"input", "steps", "last"}`: each node adds its output under its id, so
parallel branches write disjoint keys and merge without conflict. What a node *does*
(templates, credentials, step events, cancellation) is the executor's business: it comes
in as `run_node`, and each run's own context travels in LangGraph's run context, which
is never persisted, so one compiled graph serves every run of a version.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Annotated, Any, Generic, TypedDict, TypeVar

import jmespath
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph import END as LANGGRAPH_END
from langgraph.graph import START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime

from bastion.workflows.errors import NodeFailed
from bastion.workflows.graph import END, ConditionalEdge, Graph, Node
from bastion.workflows.templates import evaluate

C = TypeVar("C")


def _merge_steps(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    return {**old, **new}


def _latest(old: str, new: str) -> str:
    return new


class RunState(TypedDict):
    input: Any
    steps: Annotated[dict[str, Any], _merge_steps]
    last: Annotated[str, _latest]


NodeRunner = Callable[[Node, Mapping[str, Any], C], Awaitable[Any]]


def _target(name: str) -> str:
    return LANGGRAPH_END if name == END else name


def branch_key(value: Any) -> str:
    """How an expression's value names a case: JSON text, except that strings are bare."""
    if isinstance(value, str):
        return value
    if value is True or value is False or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    return str(value)


class Compiled(Generic[C]):
    def __init__(
        self,
        graph: Graph,
        run_node: NodeRunner[C],
        checkpointer: BaseCheckpointSaver[Any] | None,
    ) -> None:
        self.graph = graph
        self.output = jmespath.compile(graph.output) if graph.output else None
        self.langgraph: CompiledStateGraph[Any, Any, Any, Any] = _build(graph, run_node).compile(
            checkpointer=checkpointer
        )

    def result(self, state: Mapping[str, Any]) -> Any:
        if self.output is not None:
            return evaluate(self.output, state)
        return state["steps"].get(state.get("last", ""))


def _build(graph: Graph, run_node: NodeRunner[C]) -> StateGraph[Any, Any, Any, Any]:
    builder: StateGraph[Any, Any, Any, Any] = StateGraph(RunState, context_schema=object)
    for node in graph.nodes:
        builder.add_node(node.id, _step(node, run_node))
    builder.add_edge(START, graph.entry)
    joins = {node.id for node in graph.nodes if node.join == "all"}
    leaving = {edge.source for edge in graph.edges}
    for edge in graph.edges:
        if edge.target not in joins:
            builder.add_edge(edge.source, _target(edge.target))
    for join in joins:
        builder.add_edge([edge.source for edge in graph.edges if edge.target == join], join)
    for conditional in graph.conditional_edges:
        leaving.add(conditional.source)
        builder.add_conditional_edges(
            conditional.source,
            _router(conditional),
            {target: _target(target) for target in conditional.targets()},
        )
    for node in graph.nodes:
        if node.id not in leaving:
            builder.add_edge(node.id, LANGGRAPH_END)
    return builder


def _step(node: Node, run_node: NodeRunner[C]) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def step(state: RunState, runtime: Runtime[Any]) -> dict[str, Any]:
        output = await run_node(node, state, runtime.context)
        return {"steps": {node.id: output}, "last": node.id}

    return step


def _router(conditional: ConditionalEdge) -> Callable[[RunState], str]:
    expression = jmespath.compile(conditional.expression)

    def route(state: RunState) -> str:
        try:
            value = evaluate(expression, state)
        except NodeFailed as exc:
            raise NodeFailed(f"{conditional.label}: {exc}") from None
        return conditional.cases.get(branch_key(value), conditional.default)

    return route
