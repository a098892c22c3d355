from __future__ import annotations

import asyncio
import json

from bastion.runs import records
from bastion.runs.records import Status
from tests.execution.conftest import OTHER, Harness

THREE = {
    "nodes": [
        {"id": "seed", "type": "set", "params": {"values": {"n": "{{ input.n }}", "tag": "x"}}},
        {"id": "double", "type": "transform", "params": {"expression": "steps.seed.n"}},
        {"id": "big", "type": "condition", "params": {"expression": "steps.seed.n > `10`"}},
    ],
    "edges": [{"from": "seed", "to": "double"}, {"from": "double", "to": "big"}],
}


async def test_a_three_node_workflow_runs_to_success_with_its_steps(harness: Harness) -> None:
    run = await harness.run(THREE, {"n": 42})
    assert run.status == Status.SUCCEEDED, run.error
    assert run.output == '{"result":true}'
    steps = await harness.steps(run.id)
    assert [(s.node, s.status) for s in steps] == [
        ("seed", "succeeded"),
        ("double", "succeeded"),
        ("big", "succeeded"),
    ]
    assert steps[0].output == '{"n":42,"tag":"x"}'


async def test_a_conditional_edge_routes_on_the_state_with_a_default(harness: Harness) -> None:
    graph = {
        "nodes": [
            {"id": "check", "type": "condition", "params": {"expression": "input.n > `10`"}},
            {"id": "high", "type": "set", "params": {"values": {"went": "high"}}},
            {"id": "low", "type": "set", "params": {"values": {"went": "low"}}},
        ],
        "conditional_edges": [
            {
                "from": "check",
                "expression": "steps.check.result",
                "cases": {"true": "high"},
                "default": "low",
            }
        ],
    }
    workflow = await harness.workflow(graph)
    high = await harness.finished((await harness.start(workflow, {"n": 11})).id)
    low = await harness.finished((await harness.start(workflow, {"n": 1})).id)
    assert (high.output, low.output) == ('{"went":"high"}', '{"went":"low"}')


async def test_parallel_branches_meet_at_a_join_that_waits_for_all(harness: Harness) -> None:
    graph = {
        "nodes": [
            {"id": "fork", "type": "set", "params": {"values": {}}},
            {"id": "slow", "type": "delay", "params": {"seconds": 0.2}},
            {"id": "slower", "type": "delay", "params": {"seconds": 0.05}},
            {"id": "after", "type": "set", "params": {"values": {}}},
            {"id": "join", "type": "transform", "params": {"expression": "keys(steps)"}},
        ],
        "edges": [
            {"from": "fork", "to": "slow"},
            {"from": "fork", "to": "slower"},
            {"from": "slower", "to": "after"},
            {"from": "slow", "to": "join"},
            {"from": "after", "to": "join"},
        ],
        "output": "steps.join",
    }
    graph["nodes"][4]["join"] = "all"
    run = await harness.run(graph)
    assert run.status == Status.SUCCEEDED, run.error
    assert sorted(json.loads(run.output or "")) == ["after", "fork", "slow", "slower"]
    assert [s.node for s in await harness.steps(run.id)].count("join") == 1


async def test_a_fail_node_fails_the_run_naming_the_node(harness: Harness) -> None:
    graph = {
        "nodes": [
            {"id": "ok", "type": "set", "params": {"values": {"a": 1}}},
            {"id": "stop", "type": "fail", "params": {"message": "quota {{ input.q }} exceeded"}},
        ],
        "edges": [{"from": "ok", "to": "stop"}],
    }
    run = await harness.run(graph, {"q": 7})
    assert run.status == Status.FAILED
    assert run.error == "node 'stop' (fail): quota 7 exceeded"
    assert [(s.node, s.status) for s in await harness.steps(run.id)] == [
        ("ok", "succeeded"),
        ("stop", "failed"),
    ]


async def test_a_reference_to_a_step_that_did_not_run_fails_naming_it(harness: Harness) -> None:
    graph = {
        "nodes": [
            {"id": "gate", "type": "condition", "params": {"expression": "`false`"}},
            {"id": "skipped", "type": "set", "params": {"values": {"x": 1}}},
            {"id": "use", "type": "set", "params": {"values": {"x": "{{ steps.skipped.x }}"}}},
        ],
        "conditional_edges": [
            {
                "from": "gate",
                "expression": "steps.gate.result",
                "cases": {"true": "skipped"},
                "default": "use",
            }
        ],
        "edges": [{"from": "skipped", "to": "use"}],
    }
    run = await harness.run(graph)
    assert run.status == Status.FAILED
    assert "references step 'skipped', which has not run" in run.error


async def test_an_oversized_node_output_fails_the_run(harness: Harness) -> None:
    graph = {"nodes": [{"id": "big", "type": "set", "params": {"values": {"x": "{{ input.s }}"}}}]}
    run = await harness.run(graph, {"s": "y" * 60_000})
    assert run.status == Status.SUCCEEDED  # under the 64 KiB cap of the harness
    graph = {
        "nodes": [
            {
                "id": "big",
                "type": "set",
                "params": {"values": {"x": "{{ input.s }}", "y": "{{ input.s }}"}},
            }
        ]
    }
    run = await harness.run(graph, {"s": "y" * 60_000}, name="bigger")
    assert run.status == Status.FAILED
    assert "output of 'big' exceeds" in run.error


async def test_a_running_run_is_cancelled_at_its_next_step_boundary(harness: Harness) -> None:
    graph = {
        "nodes": [
            {"id": "first", "type": "set", "params": {"values": {}}},
            {"id": "wait", "type": "delay", "params": {"seconds": 0.5}},
            {"id": "never", "type": "set", "params": {"values": {}}},
        ],
        "edges": [{"from": "first", "to": "wait"}, {"from": "wait", "to": "never"}],
    }
    started = await harness.start(await harness.workflow(graph))
    async with asyncio.timeout(10):
        while True:  # until "first" is recorded: then "wait" is sleeping
            if await harness.steps(started.id):
                break
            await asyncio.sleep(0.01)
    await harness.dispatcher.cancel(started.id)
    run = await harness.finished(started.id)
    assert run.status == Status.CANCELLED
    assert [s.node for s in await harness.steps(run.id)] == ["first", "wait"]


async def test_a_queued_run_cancelled_before_it_starts_never_runs(harness: Harness) -> None:
    graph = {"nodes": [{"id": "a", "type": "set", "params": {"values": {}}}]}
    workflow = await harness.workflow(graph)
    run = await harness.dispatcher.ledger.write(
        lambda s: records.accept(s, harness.queued(workflow))
    )
    await harness.dispatcher.cancel(run.id)
    assert await harness.engine.execute(run.id) is None
    assert (await harness.finished(run.id)).status == Status.CANCELLED


async def test_a_sub_workflow_runs_inside_the_parent_and_returns_its_output(
    harness: Harness,
) -> None:
    child = {"nodes": [{"id": "inc", "type": "transform", "params": {"expression": "input.n"}}]}
    await harness.workflow(child, name="child")
    parent = {
        "nodes": [
            {
                "id": "call",
                "type": "sub_workflow",
                "params": {"workflow": "child", "input": {"n": "{{ input.v }}"}},
            }
        ]
    }
    run = await harness.run(parent, {"v": 5}, name="parent")
    assert run.status == Status.SUCCEEDED, run.error
    assert run.output == "5"


async def test_a_sub_workflow_of_another_workspace_cannot_be_called(harness: Harness) -> None:
    secret_flow = {"nodes": [{"id": "x", "type": "set", "params": {"values": {"private": 1}}}]}
    await harness.workflow(secret_flow, name="theirs", workspace=OTHER)
    parent = {"nodes": [{"id": "call", "type": "sub_workflow", "params": {"workflow": "theirs"}}]}
    run = await harness.run(parent, name="mine")
    assert run.status == Status.FAILED
    assert "no workflow named 'theirs' in this workspace" in run.error


async def test_an_expression_that_fails_on_the_data_fails_the_run_with_its_cause(
    harness: Harness,
) -> None:
    in_template = {
        "nodes": [{"id": "cmp", "type": "set", "params": {"values": {"x": "{{ input.s > `1` }}"}}}]
    }
    run = await harness.run(in_template, {"s": "text"})
    assert run.status == Status.FAILED
    assert run.error.startswith("node 'cmp' (set): expression failed: ")
    in_output = {
        "nodes": [{"id": "a", "type": "set", "params": {"values": {"n": "text"}}}],
        "output": "steps.a.n > `1`",
    }
    run = await harness.run(in_output, name="output")
    assert run.status == Status.FAILED
    assert run.error.startswith("expression failed: ")
