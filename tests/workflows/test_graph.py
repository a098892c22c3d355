from __future__ import annotations

import json
from typing import Any

import pytest

from bastion.workflows import graph as graphs
from bastion.workflows.errors import InvalidGraph


def node(node_id: str, kind: str = "set", **params: Any) -> dict[str, Any]:
    return {"id": node_id, "type": kind, "params": params or {"values": {}}}


def edge(source: str, target: str) -> dict[str, str]:
    return {"from": source, "to": target}


def refused(raw: Any) -> str:
    with pytest.raises(InvalidGraph) as caught:
        graphs.parse(raw)
    return str(caught.value)


def test_a_valid_graph_parses_and_round_trips_through_its_canonical_form() -> None:
    raw = {"nodes": [node("a"), node("b")], "edges": [edge("a", "b"), edge("b", "end")]}
    parsed = graphs.parse(raw)
    assert graphs.parse(parsed.canonical()) == parsed
    assert parsed.entry == "a"


def test_malformed_json_is_refused() -> None:
    assert refused("{nodes: [").startswith("graph is not valid JSON")


def test_a_graph_that_is_not_an_object_is_refused() -> None:
    assert "JSON object" in refused("[1, 2]")


def test_an_unknown_node_type_is_refused_naming_the_node() -> None:
    message = refused({"nodes": [node("a"), {"id": "b", "type": "shell", "params": {}}]})
    assert "node 'b' has unknown type 'shell'" in message


def test_bad_parameters_are_refused_naming_the_node_and_field() -> None:
    message = refused({"nodes": [{"id": "wait", "type": "delay", "params": {"seconds": -1}}]})
    assert message.startswith("node 'wait' (delay): seconds:")


def test_a_dangling_edge_is_refused_naming_the_edge() -> None:
    message = refused({"nodes": [node("a")], "edges": [edge("a", "ghost")]})
    assert message == "edge 'a' -> 'ghost': unknown node 'ghost'"


def test_an_unreachable_node_is_refused_naming_it() -> None:
    message = refused({"nodes": [node("a"), node("island")]})
    assert message == "node 'island' is unreachable from the start 'a'"


def test_a_cycle_of_static_edges_is_refused_as_unguarded() -> None:
    message = refused({"nodes": [node("a"), node("b")], "edges": [edge("a", "b"), edge("b", "a")]})
    assert "closes a cycle without a guard" in message


def test_a_loop_through_a_conditional_edge_is_accepted() -> None:
    graphs.parse(
        {
            "nodes": [node("work"), node("check", "condition", expression="steps.work")],
            "edges": [edge("work", "check")],
            "conditional_edges": [
                {
                    "from": "check",
                    "expression": "steps.check.result",
                    "cases": {"true": "work"},
                    "default": "end",
                }
            ],
        }
    )


def test_an_oversized_graph_is_refused() -> None:
    many = {"nodes": [node(f"n{i}") for i in range(graphs.MAX_NODES + 1)]}
    assert "at most 200 allowed" in refused(many)
    assert "exceeds 256 KiB" in refused(
        json.dumps({"nodes": [node("a", values={"x": "y" * 300_000})]})
    )


def test_a_template_naming_an_unknown_step_is_refused() -> None:
    message = refused({"nodes": [node("a", values={"x": "{{ steps.nope.body }}"})]})
    assert message == "node 'a': 'steps.nope.body' references unknown step 'nope'"


def test_a_template_with_an_unknown_root_is_refused() -> None:
    assert "must start with input., steps. or credentials." in refused(
        {"nodes": [node("a", values={"x": "{{ env.HOME }}"})]}
    )


def test_duplicate_and_reserved_node_ids_are_refused() -> None:
    assert "used twice" in refused({"nodes": [node("a"), node("a")]})
    assert "reserved" in refused({"nodes": [node("end")]})


def test_a_join_all_needs_static_predecessors() -> None:
    joined = node("j")
    joined["join"] = "all"
    assert "fewer than two static edges" in refused(
        {"nodes": [node("a"), joined], "edges": [edge("a", "j")]}
    )


def test_an_invalid_branch_expression_is_refused_naming_the_edge() -> None:
    message = refused(
        {
            "nodes": [node("a")],
            "conditional_edges": [{"from": "a", "expression": "steps.[", "default": "end"}],
        }
    )
    assert message.startswith("conditional edge from 'a': invalid expression")
