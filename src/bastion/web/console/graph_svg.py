"""A workflow graph laid out for an SVG diagram: columns by distance from the entry.

Each node goes in the column of its shortest distance (in edges) from the entry node, in
the order the graph lists it; `end` gets a column after the last. Static edges are solid,
conditional ones dashed and labelled with their case. Edges that go back to an earlier
column (loops) bend below the nodes. The template draws what this computes; every label
reaches the page through Jinja's escaping.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from bastion.workflows.graph import END, Graph

NODE_W, NODE_H = 150, 44
GAP_X, GAP_Y = 70, 26
PAD = 16
LABEL_LIMIT = 24


@dataclass(frozen=True)
class Box:
    id: str
    label: str
    kind: str  # the node type, or "end"
    x: int
    y: int
    entry: bool
    join_all: bool


@dataclass(frozen=True)
class Arrow:
    path: str  # an SVG path "d"
    label: str
    conditional: bool
    label_x: int
    label_y: int
    back: bool = False  # to an earlier column or the same one: drawn under the nodes


@dataclass(frozen=True)
class Diagram:
    width: int
    height: int
    boxes: list[Box]
    arrows: list[Arrow]
    node_w: int = NODE_W
    node_h: int = NODE_H


def _short(text: str) -> str:
    return text if len(text) <= LABEL_LIMIT else text[: LABEL_LIMIT - 1] + "…"


def _edges(graph: Graph) -> list[tuple[str, str, str, bool]]:
    found = [(edge.source, edge.target, "", False) for edge in graph.edges]
    for conditional in graph.conditional_edges:
        for case, target in conditional.cases.items():
            found.append((conditional.source, target, case, True))
        found.append((conditional.source, conditional.default, "default", True))
    return found


def layout(graph: Graph) -> Diagram:
    edges = _edges(graph)
    successors: dict[str, list[str]] = {}
    for source, target, _, _ in edges:
        successors.setdefault(source, []).append(target)
    depth = {graph.entry: 0}
    queue = deque([graph.entry])
    while queue:
        current = queue.popleft()
        for target in successors.get(current, []):
            if target != END and target not in depth:
                depth[target] = depth[current] + 1
                queue.append(target)
    last = max(depth.values(), default=0)
    for node in graph.nodes:  # unreachable nodes fail validation; be safe anyway
        depth.setdefault(node.id, last + 1)
    has_end = any(target == END for _, target, _, _ in edges)
    columns: dict[int, list[str]] = {}
    for node in graph.nodes:
        columns.setdefault(depth[node.id], []).append(node.id)
    if has_end:
        columns[max(columns) + 1] = [END]
    kinds = {node.id: node.type for node in graph.nodes}
    joins = {node.id for node in graph.nodes if node.join == "all"}
    place: dict[str, tuple[int, int]] = {}
    boxes = []
    for column, ids in sorted(columns.items()):
        for row, node_id in enumerate(ids):
            x, y = PAD + column * (NODE_W + GAP_X), PAD + row * (NODE_H + GAP_Y)
            place[node_id] = (x, y)
            boxes.append(
                Box(
                    node_id,
                    _short(node_id),
                    kinds.get(node_id, "end"),
                    x,
                    y,
                    node_id == graph.entry,
                    node_id in joins,
                )
            )
    rows = max(len(ids) for ids in columns.values())
    height = 2 * PAD + rows * NODE_H + (rows - 1) * GAP_Y
    arrows = [_arrow(place, s, t, label, cond, height) for s, t, label, cond in edges]
    width = 2 * PAD + len(columns) * NODE_W + (len(columns) - 1) * GAP_X
    loops = any(arrow.back for arrow in arrows)
    return Diagram(width, height + (PAD * 2 if loops else 0), boxes, arrows)


def _arrow(
    place: dict[str, tuple[int, int]],
    source: str,
    target: str,
    label: str,
    conditional: bool,
    height: int,
) -> Arrow:
    sx, sy = place[source]
    tx, ty = place[target]
    if tx > sx:  # forward: right edge to left edge
        x1, y1, x2, y2 = sx + NODE_W, sy + NODE_H // 2, tx, ty + NODE_H // 2
        mid = (x1 + x2) // 2
        path = f"M {x1} {y1} C {mid} {y1} {mid} {y2} {x2 - 2} {y2}"
        return Arrow(path, _short(label), conditional, mid, (y1 + y2) // 2 - 4)
    # Back or same column (a loop): out of the bottom, under the nodes, into the bottom.
    x1, y1 = sx + NODE_W // 2, sy + NODE_H
    x2, y2 = tx + NODE_W // 2 + 10, ty + NODE_H
    below = height + PAD
    path = f"M {x1} {y1} C {x1} {below} {x2} {below} {x2} {y2 + 2}"
    return Arrow(path, _short(label), conditional, (x1 + x2) // 2, below - 6, back=True)
