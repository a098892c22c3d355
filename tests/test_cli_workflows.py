from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import run
from tests.test_cli_vault import ok, refused

THREE: dict[str, Any] = {
    "nodes": [
        {"id": "seed", "type": "set", "params": {"values": {"n": "{{ input.n }}", "tag": "x"}}},
        {"id": "double", "type": "transform", "params": {"expression": "steps.seed.n"}},
        {"id": "big", "type": "condition", "params": {"expression": "steps.seed.n > `10`"}},
    ],
    "edges": [{"from": "seed", "to": "double"}, {"from": "double", "to": "big"}],
}
FAILING: dict[str, Any] = {
    "nodes": [
        {"id": "first", "type": "set", "params": {"values": {"x": 1}}},
        {"id": "boom", "type": "fail", "params": {"message": "the disk is full"}},
    ],
    "edges": [{"from": "first", "to": "boom"}],
}


@pytest.fixture
def env(tmp_path: Path, base_env: dict[str, str]) -> dict[str, str]:
    ok(run(["workspaces", "add", "ops"], base_env, tmp_path))
    return base_env


class Cli:
    """`bastion …` in a subprocess, in the test's data directory."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.env = env
        self.cwd = cwd

    def __call__(
        self, *args: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return run(list(args), {**self.env, **(env or {})}, self.cwd, stdin)

    def file(self, name: str, content: Any) -> str:
        path = self.cwd / name
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return str(path)

    def import_(self, graph: Any, *args: str) -> str:
        return ok(self("workflows", "import", "-", "--workspace", "ops", *args, stdin=graph))

    def workflows(self) -> list[dict[str, Any]]:
        listed: list[dict[str, Any]] = json.loads(
            ok(self("workflows", "list", "--workspace", "ops", "--json"))
        )
        return listed

    def runs(self, *args: str) -> dict[str, Any]:
        page: dict[str, Any] = json.loads(
            ok(self("runs", "list", "--workspace", "ops", "--json", *args))
        )
        return page

    def queue(self, workflow: str, data: str = "{}") -> str:
        queued = self(
            "workflows", "run", workflow, "--workspace", "ops", "--input", data, "--no-wait"
        )
        return ok(queued).strip()


@pytest.fixture
def cli(env: dict[str, str], tmp_path: Path) -> Cli:
    return Cli(env, tmp_path)


def test_import_creates_the_workflow_then_adds_versions_and_skips_an_unchanged_graph(
    cli: Cli,
) -> None:
    created = cli.import_(json.dumps(THREE), "--name", "three", "--description", "demo")
    [workflow] = cli.workflows()
    assert created == f"created workflow 'three' (id {workflow['id']}): version 1\n"
    assert (workflow["name"], workflow["current_version"]) == ("three", 1)
    assert workflow["description"] == "demo"

    assert cli.import_(json.dumps(THREE), "--name", "three") == (
        "workflow 'three': version 1 unchanged\n"
    )
    changed = {**THREE, "output": "steps.big"}
    assert cli.import_(json.dumps(changed), "--name", "three") == "workflow 'three': version 2\n"
    assert [(w["name"], w["current_version"]) for w in cli.workflows()] == [("three", 2)]
    trail = ok(cli("audit", "export", "--since", "1"))
    assert '"action":"workflow.create"' in trail and '"action":"workflow.version"' in trail
    assert '"actor":"cli"' in trail


@pytest.mark.parametrize(
    ("graph", "message"),
    [
        (
            {"nodes": [{"id": "fetch", "type": "ftp", "params": {}}]},
            "node 'fetch' has unknown type 'ftp' (known: code, condition, delay, fail, "
            "http_request, set, sub_workflow, transform)",
        ),
        (
            {**THREE, "edges": [*THREE["edges"], {"from": "big", "to": "ghost"}]},
            "edge 'big' -> 'ghost': unknown node 'ghost'",
        ),
    ],
)
def test_an_invalid_graph_is_refused_naming_the_node_or_edge_and_writes_nothing(
    cli: Cli, graph: dict[str, Any], message: str
) -> None:
    bad = cli.file("bad.json", graph)
    refused(cli("workflows", "import", bad, "--workspace", "ops", "--name", "three"), message)
    assert cli.workflows() == []
    cli.import_(json.dumps(THREE), "--name", "three")
    refused(cli("workflows", "import", bad, "--workspace", "ops", "--name", "three"), message)
    assert [w["current_version"] for w in cli.workflows()] == [1]


def test_a_file_that_is_unreadable_not_json_or_too_big_is_refused_in_one_line(
    cli: Cli, tmp_path: Path
) -> None:
    def import_file(path: str, *args: str) -> subprocess.CompletedProcess[str]:
        return cli("workflows", "import", path, "--workspace", "ops", "--name", "x", *args)

    not_json = cli.file("graph.yaml", "nodes:\n  - id: a\n")
    refused(
        import_file(not_json), f"{not_json} is not JSON: Expecting value: line 1 column 1 (char 0)"
    )
    missing = str(tmp_path / "missing.json")
    refused(import_file(missing), f"cannot read {missing}: No such file or directory")
    huge_graph = {"nodes": [{"id": "a", "type": "set", "params": {"values": {"x": "y" * 300_000}}}]}
    refused(import_file(cli.file("big.json", huge_graph)), "graph exceeds 256 KiB")
    huge_file = cli.file("huge.json", " " * (1024 * 1024 + 1) + "{}")
    refused(import_file(huge_file), f"{huge_file} is larger than 1024 KiB")
    refused(
        cli("workflows", "import", "-", "--workspace", "ops", stdin=json.dumps(THREE)),
        "the document names no workflow: give --name",
    )
    named = cli("workflows", "import", "-", "--workspace", "ops", "--name", "no spaces", stdin="{}")
    refused(
        named,
        "workflow name 'no spaces': a letter or digit, then letters, digits, '_', '.' or '-' "
        "(at most 100)",
    )
    assert cli.workflows() == []


def test_export_then_import_round_trips_the_graph_name_and_description(cli: Cli) -> None:
    cli.import_(json.dumps({"name": "three", "description": "demo", "graph": THREE}))
    cli.import_(json.dumps({**THREE, "output": "steps.big"}), "--name", "three")
    first = json.loads(
        ok(cli("workflows", "export", "three", "--workspace", "ops", "--version", "1"))
    )
    assert first["version"] == 1 and first["description"] == "demo"

    ok(cli("workspaces", "add", "staging"))
    exported = str(cli.cwd / "three.json")
    assert (
        ok(
            cli(
                "workflows",
                "export",
                "three",
                "--workspace",
                "ops",
                "--version",
                "1",
                "--output",
                exported,
            )
        )
        == f"exported workflow 'three' version 1 to {exported}\n"
    )
    ok(cli("workflows", "import", exported, "--workspace", "staging"))
    again = json.loads(ok(cli("workflows", "export", "three", "--workspace", "staging")))
    assert again == first  # same name, description, version 1 and graph
    refused(
        cli("workflows", "export", "three", "--workspace", "ops", "--version", "3"),
        "workflow 'three' has no version 3",
    )


def test_run_executes_in_the_cli_printing_each_step_then_the_output(cli: Cli) -> None:
    cli.import_(json.dumps(THREE), "--name", "three")
    result = cli("workflows", "run", "three", "--workspace", "ops", "--input", '{"n": 42}')
    lines = ok(result).splitlines()
    run_id = lines[0].split()[1].rstrip(":")
    assert lines[0] == f"run {run_id}: three version 1"
    assert [line.split()[:3] for line in lines[1:4]] == [
        ["1", "seed", "succeeded"],
        ["2", "double", "succeeded"],
        ["3", "big", "succeeded"],
    ]
    assert lines[4].startswith(f"run {run_id} succeeded in ")
    assert json.loads("\n".join(lines[5:])) == {"result": True}
    [stored] = cli.runs()["runs"]
    assert (stored["id"], stored["status"], stored["trigger"], stored["actor"]) == (
        run_id,
        "succeeded",
        "manual",
        "cli",
    )


def test_a_failing_run_exits_1_and_prints_its_error(cli: Cli) -> None:
    cli.import_(json.dumps(FAILING), "--name", "failing")
    result = cli("workflows", "run", "failing", "--workspace", "ops")
    assert result.returncode == 1
    assert result.stderr == "error: node 'boom' (fail): the disk is full\n"
    lines = result.stdout.splitlines()
    assert [line.split()[:3] for line in lines[1:3]] == [
        ["1", "first", "succeeded"],
        ["2", "boom", "failed"],
    ]
    assert " failed in " in lines[3]


def test_no_wait_leaves_the_run_queued_for_a_server(cli: Cli) -> None:
    cli.import_(json.dumps(THREE), "--name", "three")
    run_id = cli.queue("three", '{"n": 7}')
    shown = json.loads(ok(cli("runs", "show", run_id, "--json")))
    assert (shown["status"], shown["input"], shown["steps"]) == ("queued", {"n": 7}, [])
    assert shown["started_at"] is None


def test_runs_list_is_newest_first_and_before_pages_to_older_runs(cli: Cli) -> None:
    cli.import_(json.dumps(THREE), "--name", "three")
    cli.import_(json.dumps(FAILING), "--name", "failing")
    queued = [cli.queue("three"), cli.queue("failing"), cli.queue("three")]
    first = cli.runs("--limit", "2")
    assert [r["id"] for r in first["runs"]] == [queued[2], queued[1]]
    assert first["next_before"] == queued[1]
    second = cli.runs("--limit", "2", "--before", first["next_before"])
    assert [r["id"] for r in second["runs"]] == [queued[0]]
    assert second["next_before"] is None
    only = cli.runs("--workflow", "three", "--status", "queued")
    assert [(r["id"], r["workflow"]) for r in only["runs"]] == [
        (queued[2], "three"),
        (queued[0], "three"),
    ]
    assert cli.runs("--status", "succeeded")["runs"] == []
    table = ok(cli("runs", "list", "--workspace", "ops", "--limit", "2"))
    assert table.index(queued[2]) < table.index(queued[1]) and queued[0] not in table
    assert table.endswith(f"older runs: --before {queued[1]}\n")


def test_runs_show_prints_the_record_and_its_steps(cli: Cli) -> None:
    cli.import_(json.dumps(FAILING), "--name", "failing")
    result = cli("workflows", "run", "failing", "--workspace", "ops", "--input", '{"k": "v"}')
    run_id = result.stdout.split()[1].rstrip(":")
    shown = ok(cli("runs", "show", run_id))
    assert f"run:      {run_id}\n" in shown
    assert "status:   failed\n" in shown and "trigger:  manual by cli, attempt 1\n" in shown
    assert 'input:    {"k":"v"}\n' in shown
    assert "error:    node 'boom' (fail): the disk is full\n" in shown
    assert '{"x":1}' in shown and "the disk is full │" in shown  # the steps table
    detail = json.loads(ok(cli("runs", "show", run_id, "--json")))
    assert [(s["seq"], s["node"], s["status"], s["output"]) for s in detail["steps"]] == [
        (1, "first", "succeeded", {"x": 1}),
        (2, "boom", "failed", None),
    ]


def test_unknown_workspace_workflow_run_and_status_each_fail_in_one_line(cli: Cli) -> None:
    cli.import_(json.dumps(THREE), "--name", "three")
    refused(cli("workflows", "list", "--workspace", "nope"), "no workspace 'nope'")
    refused(cli("runs", "list", "--workspace", "nope"), "no workspace 'nope'")
    refused(
        cli("workflows", "run", "ghost", "--workspace", "ops"),
        "no workflow named 'ghost' in this workspace",
    )
    refused(
        cli("workflows", "export", "ghost", "--workspace", "ops"),
        "no workflow named 'ghost' in this workspace",
    )
    refused(
        cli("runs", "list", "--workspace", "ops", "--workflow", "ghost"),
        "no workflow named 'ghost' in this workspace",
    )
    refused(cli("runs", "show", "0" * 32), f"no run '{'0' * 32}'")
    refused(
        cli("runs", "list", "--workspace", "ops", "--status", "done"),
        "unknown status 'done' "
        "(valid: scheduled, queued, running, succeeded, failed, cancelled, blocked)",
    )
    refused(
        cli("runs", "list", "--workspace", "ops", "--before", "yesterday"),
        "--before takes a run id (32 hexadecimal digits)",
    )


def test_run_input_must_be_json_within_the_cap_and_nothing_is_queued_otherwise(
    cli: Cli,
) -> None:
    cli.import_(json.dumps(THREE), "--name", "three")
    start = ["workflows", "run", "three", "--workspace", "ops"]
    refused(
        cli(*start, "--input", "{n: 1}"),
        "--input is not JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
    )
    both = cli.file("input.json", {"n": 1})
    refused(
        cli(*start, "--input", "{}", "--input-file", both), "give --input or --input-file, not both"
    )
    large = cli.file("large.json", {"n": "x" * 2000})
    small_cap = {"BASTION_RUN_MAX_INPUT_BYTES": "1024"}
    refused(cli(*start, "--input-file", large, env=small_cap), "run input exceeds 1024 bytes")
    refused(
        cli(
            *start,
            "--input-file",
            "-",
            "--no-wait",
            stdin=json.dumps({"n": "x" * 2000}),
            env=small_cap,
        ),
        "run input exceeds 1024 bytes",
    )
    assert cli.runs()["runs"] == []


def test_run_targets_a_version_of_this_workflow_and_records_the_reason(cli: Cli) -> None:
    cli.import_(json.dumps(THREE), "--name", "three")
    cli.import_(json.dumps(FAILING), "--name", "three")  # version 2
    queued = cli(
        "workflows", "run", "three", "--workspace", "ops", "--version", "1",
        "--reason", "backfill after the outage", "--no-wait",
    )  # fmt: skip
    shown = json.loads(ok(cli("runs", "show", ok(queued).strip(), "--json")))
    assert (shown["version"], shown["reason"], shown["actor"]) == (
        1,
        "backfill after the outage",
        "cli",
    )
    missing = cli("workflows", "run", "three", "--workspace", "ops", "--version", "3")
    assert missing.returncode == 1
    assert missing.stderr.startswith("error: ") and "version 3" in missing.stderr
    assert len(cli.runs()["runs"]) == 1
