"""The workflow graph: its JSON shape and the validation a version must pass.

A graph is nodes (`id`, `type`, `params`), static edges, and conditional edges, whose
expression over the run state picks the next node (with a default). A node with several
static successors fans out in parallel; a node marked `"join": "all"` waits for every
one of its static predecessors. The target `end` finishes the run.

Validation happens once, when a version is saved, and every message names the node or
edge at fault: an operator fixing a 200-node graph needs the place, not a stack trace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import jmespath
import jmespath.exceptions
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.workflows import templates
from bastion.workflows.errors import InvalidGraph
from bastion.workflows.nodes.catalog import NODE_TYPES

END = "end"
MAX_NODES = 200
MAX_EDGES = 400
MAX_GRAPH_BYTES = 256 * 1024
_NODE_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
# Names the run state and templates use at the top level; a node so named would shadow them.
_RESERVED = frozenset({END, "start", "input", "steps", "credentials", "params"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Node(_Strict):
    id: str
    type: str
    params: dict[str, Any] = Field(default_factory=dict)
    join: Literal["any", "all"] = "any"


class Edge(_Strict):
    source: str = Field(alias="from")
    target: str = Field(alias="to")

    @property
    def label(self) -> str:
        return f"edge {self.source!r} -> {self.target!r}"


class ConditionalEdge(_Strict):
    source: str = Field(alias="from")
    expression: str
    cases: dict[str, str] = Field(default_factory=dict)
    default: str

    @property
    def label(self) -> str:
        return f"conditional edge from {self.source!r}"

    def targets(self) -> Iterator[str]:
        yield from self.cases.values()
        yield self.default


class Graph(_Strict):
    nodes: list[Node]
    edges: list[Edge] = Field(default_factory=list)
    conditional_edges: list[ConditionalEdge] = Field(default_factory=list)
    start: str | None = None
    # JMESPath over the final state; default: the output of the last node to finish.
    output: str | None = None

    @property
    def entry(self) -> str:
        return self.start or self.nodes[0].id

    def node(self, node_id: str) -> Node:
        return next(node for node in self.nodes if node.id == node_id)

    def canonical(self) -> str:
        return json.dumps(self.model_dump(by_alias=True, exclude_none=True), sort_keys=True)


def parse(raw: Any) -> Graph:
    """A validated graph from its JSON form (a str/bytes document or already-decoded data)."""
    if isinstance(raw, str | bytes):
        if len(raw) > MAX_GRAPH_BYTES:
            raise InvalidGraph(f"graph exceeds {MAX_GRAPH_BYTES // 1024} KiB")
        try:
            raw = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidGraph(f"graph is not valid JSON: {exc}") from None
    elif len(json.dumps(raw, default=str)) > MAX_GRAPH_BYTES:
        raise InvalidGraph(f"graph exceeds {MAX_GRAPH_BYTES // 1024} KiB")
    if not isinstance(raw, Mapping):
        raise InvalidGraph("graph must be a JSON object with 'nodes' and 'edges'")
    try:
        graph = Graph.model_validate(raw)
    except ValidationError as exc:
        raise InvalidGraph(_describe(exc, raw)) from None
    _check(graph)
    return graph


def _describe(exc: ValidationError, raw: Mapping[str, Any]) -> str:
    problems = []
    for error in exc.errors()[:5]:
        where = list(error["loc"])
        # "nodes.3.type" says less than "node 'fetch': type"
        if len(where) >= 2 and where[0] == "nodes" and isinstance(where[1], int):
            nodes = raw.get("nodes")
            node = nodes[where[1]] if isinstance(nodes, list) else None
            name = node.get("id") if isinstance(node, Mapping) else None
            if isinstance(name, str):
                where = [f"node {name[:64]!r}", *where[2:]]
        problems.append(f"{'.'.join(str(part) for part in where)}: {error['msg']}")
    return "; ".join(problems)


def _check(graph: Graph) -> None:
    if not graph.nodes:
        raise InvalidGraph("graph has no nodes")
    if len(graph.nodes) > MAX_NODES:
        raise InvalidGraph(f"graph has {len(graph.nodes)} nodes; at most {MAX_NODES} allowed")
    if len(graph.edges) + len(graph.conditional_edges) > MAX_EDGES:
        raise InvalidGraph(f"graph has more than {MAX_EDGES} edges")
    ids: set[str] = set()
    for node in graph.nodes:
        _check_node(node, ids)
        ids.add(node.id)
    if graph.start is not None and graph.start not in ids:
        raise InvalidGraph(f"start names unknown node {graph.start!r}")
    _check_edges(graph, ids)
    _check_reachable(graph)
    _check_guarded_cycles(graph)
    _check_joins(graph)
    _check_references(graph, ids)
    if graph.output is not None:
        _compile_expression(graph.output, "graph output")


def _check_node(node: Node, seen: set[str]) -> None:
    if not _NODE_ID.fullmatch(node.id):
        raise InvalidGraph(
            f"node id {node.id[:64]!r} must be a letter or _ then letters, digits or _ (≤ 64)"
        )
    if node.id in _RESERVED:
        raise InvalidGraph(f"node id {node.id!r} is reserved")
    if node.id in seen:
        raise InvalidGraph(f"node id {node.id!r} is used twice")
    kind = NODE_TYPES.get(node.type)
    if kind is None:
        known = ", ".join(sorted(NODE_TYPES))
        raise InvalidGraph(f"node {node.id!r} has unknown type {node.type[:64]!r} (known: {known})")
    try:
        kind.params.model_validate(node.params)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'params'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise InvalidGraph(f"node {node.id!r} ({node.type}): {problems}") from None


def _check_edges(graph: Graph, ids: set[str]) -> None:
    branching: set[str] = set()
    for conditional in graph.conditional_edges:
        if conditional.source not in ids:
            raise InvalidGraph(f"{conditional.label}: unknown node {conditional.source!r}")
        if conditional.source in branching:
            raise InvalidGraph(f"node {conditional.source!r} has two conditional edges")
        branching.add(conditional.source)
        for target in conditional.targets():
            if target != END and target not in ids:
                raise InvalidGraph(f"{conditional.label}: unknown node {target!r}")
        _compile_expression(conditional.expression, conditional.label)
    seen: set[tuple[str, str]] = set()
    for edge in graph.edges:
        for end in (edge.source, edge.target):
            if end not in ids and not (end == END and end == edge.target):
                raise InvalidGraph(f"{edge.label}: unknown node {end!r}")
        if edge.source in branching:
            raise InvalidGraph(
                f"{edge.label}: node {edge.source!r} already chooses its successor "
                "with a conditional edge"
            )
        if (edge.source, edge.target) in seen:
            raise InvalidGraph(f"{edge.label} appears twice")
        seen.add((edge.source, edge.target))


def _successors(graph: Graph) -> dict[str, set[str]]:
    successors: dict[str, set[str]] = {node.id: set() for node in graph.nodes}
    for edge in graph.edges:
        if edge.target != END:
            successors[edge.source].add(edge.target)
    for conditional in graph.conditional_edges:
        successors[conditional.source].update(t for t in conditional.targets() if t != END)
    return successors


def _check_reachable(graph: Graph) -> None:
    successors = _successors(graph)
    reached = {graph.entry}
    frontier = [graph.entry]
    while frontier:
        for target in successors[frontier.pop()]:
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    for node in graph.nodes:
        if node.id not in reached:
            raise InvalidGraph(f"node {node.id!r} is unreachable from the start {graph.entry!r}")


def _check_guarded_cycles(graph: Graph) -> None:
    """A loop must pass through a conditional edge, the only place it can stop.

    Static edges alone would loop until the step limit: reject such a cycle up front.
    """
    successors: dict[str, list[str]] = {node.id: [] for node in graph.nodes}
    for edge in graph.edges:
        if edge.target != END:
            successors[edge.source].append(edge.target)
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(node_id: str) -> None:
        state[node_id] = 1
        for target in successors[node_id]:
            if state.get(target) == 1:
                raise InvalidGraph(
                    f"edge {node_id!r} -> {target!r} closes a cycle without a guard "
                    "(a loop needs a conditional edge to leave it)"
                )
            if target not in state:
                visit(target)
        state[node_id] = 2

    for node in graph.nodes:
        if node.id not in state:
            visit(node.id)


def _check_joins(graph: Graph) -> None:
    for node in graph.nodes:
        if node.join != "all":
            continue
        predecessors = [edge.source for edge in graph.edges if edge.target == node.id]
        if len(predecessors) < 2:
            raise InvalidGraph(
                f"node {node.id!r} joins 'all' but has fewer than two static edges in"
            )
        if any(node.id in conditional.targets() for conditional in graph.conditional_edges):
            raise InvalidGraph(
                f"node {node.id!r} joins 'all', so it cannot be the target of a conditional edge"
            )


def _check_references(graph: Graph, ids: set[str]) -> None:
    for node in graph.nodes:
        for reference in templates.references(node.params):
            if reference.root == "steps" and reference.name not in ids:
                raise InvalidGraph(
                    f"node {node.id!r}: {reference.text!r} references unknown step "
                    f"{reference.name!r}"
                )


def _compile_expression(expression: str, where: str) -> None:
    try:
        jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        raise InvalidGraph(f"{where}: invalid expression {expression[:100]!r}: {exc}") from None
