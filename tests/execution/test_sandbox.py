"""The code-node sandbox, attacked for real: every test runs untrusted code in it, no mocks."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from bastion.execution.sandbox import Sandbox, SandboxFailed, SandboxLimits
from tests.services import missing_service

LIMITS = SandboxLimits(cpu_seconds=1, wall_seconds=2, memory_bytes=64 * 2**20, processes=4)
UID_BASE = 64000
MAX_CONCURRENT = 4
SANDBOX_UIDS = range(UID_BASE, UID_BASE + MAX_CONCURRENT)
HAPPY = "def main(data):\n    return {'total': sum(data['values']), 'count': len(data['values'])}\n"


@pytest.fixture
def as_root() -> None:
    """The uid drop and RLIMIT_NPROC need root; CI runs as root, so there this fails."""
    if os.geteuid() != 0:
        missing_service("root (the sandbox's uid drop and RLIMIT_NPROC)")


requires_root = pytest.mark.usefixtures("as_root")


@pytest.fixture
def sandbox() -> Sandbox:
    return Sandbox(LIMITS, max_concurrent=MAX_CONCURRENT, uid_base=UID_BASE)


def code(source: str) -> str:
    return textwrap.dedent(source).lstrip()


async def failure_of(sandbox: Sandbox, source: str, data: object = None) -> str:
    with pytest.raises(SandboxFailed) as caught:
        await sandbox.run(code(source), data)
    return str(caught.value)


async def assert_unharmed(sandbox: Sandbox) -> None:
    """The server process survived the attack and still runs code normally."""
    assert await sandbox.run(HAPPY, {"values": [1, 2, 3]}) == {"total": 6, "count": 3}
    assert not leftover_sandbox_processes()


def leftover_sandbox_processes() -> list[int]:
    """Live (non-zombie) processes running under a sandbox uid."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            status = (entry / "status").read_text() if entry.name.isdigit() else ""
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields and int(fields["Uid"].split()[0]) in SANDBOX_UIDS and "Z" not in fields["State"]:
            found.append(int(entry.name))
    return found


async def test_a_happy_path_returns_the_computed_result(sandbox: Sandbox) -> None:
    result = await sandbox.run(HAPPY, {"values": [4, 5, 6]})

    assert result == {"total": 15, "count": 3}


async def test_print_goes_to_diagnostics_and_does_not_corrupt_the_result(
    sandbox: Sandbox,
) -> None:
    source = "def main(data):\n    print('debugging', data)\n    return data * 2\n"

    assert await sandbox.run(source, 21) == 42


@requires_root
def test_isolation_reports_network_filesystem_and_user_when_running_as_root(
    sandbox: Sandbox,
) -> None:
    isolation = sandbox.isolation

    assert (isolation.network, isolation.filesystem, isolation.user) == (True, True, True)
    assert isolation.notes == ()
    assert sandbox.isolation is isolation  # probed once


@requires_root
async def test_concurrent_executions_get_their_own_uid_and_temp_dir(sandbox: Sandbox) -> None:
    source = """
        import os, time
        def main(data):
            time.sleep(0.3)  # both runs overlap
            here = os.stat(".")
            return {"uid": os.getuid(), "gid": os.getgid(), "cwd": os.getcwd(),
                    "owner": here.st_uid, "mode": here.st_mode & 0o777, "tmp": os.listdir("/tmp")}
    """

    first, second = await asyncio.gather(
        sandbox.run(code(source), None), sandbox.run(code(source), None)
    )

    assert first["uid"] != second["uid"]
    assert first["cwd"] != second["cwd"]
    for run in (first, second):
        assert run["uid"] in SANDBOX_UIDS and run["gid"] == run["uid"]
        assert (run["owner"], run["mode"]) == (run["uid"], 0o700)
        # Neither the host's /tmp nor the other tenant's temp dir is visible.
        assert run["tmp"] == [Path(run["cwd"]).name]
        assert not Path(run["cwd"]).exists()  # removed afterwards


async def test_a_fork_bomb_is_stopped_by_the_audit_hook_and_reported(sandbox: Sandbox) -> None:
    message = await failure_of(
        sandbox,
        """
        import os
        def main(data):
            while True:
                os.fork()
        """,
    )

    assert message == "code raised PermissionError: os.fork is not allowed in a code node (line 4)"
    await assert_unharmed(sandbox)


@requires_root
async def test_forks_past_the_audit_hook_hit_rlimit_nproc_and_die_with_the_run(
    sandbox: Sandbox,
) -> None:
    # _posixsubprocess forks in C without an audit event: only the kernel stops this one.
    message = await failure_of(
        sandbox,
        """
        import os, _posixsubprocess
        def main(data):
            errpipe_read, errpipe_write = os.pipe()
            started = 0
            try:
                while True:
                    _posixsubprocess.fork_exec(
                        [b"/bin/sleep", b"60"], [b"/bin/sleep"], True, (errpipe_write,),
                        None, None, -1, -1, -1, -1, -1, -1, errpipe_read, errpipe_write,
                        False, True, -1, None, None, None, -1, None, False)
                    started += 1
            except OSError as exc:
                raise RuntimeError(f"{started} started, then {exc.strerror}") from None
        """,
    )

    # The runner itself is one of the uid's `processes`; setsid did not save the sleepers.
    assert message.startswith(
        f"code raised RuntimeError: {LIMITS.processes - 1} started, "
        "then Resource temporarily unavailable"
    )
    await assert_unharmed(sandbox)


@pytest.mark.parametrize(
    "hog",
    [
        "def main(data):\n    return len(bytearray(1 << 30))\n",
        "def main(data):\n    hoard = []\n"
        "    while True:\n        hoard.append(bytearray(1 << 20))\n",
    ],
    ids=["one-big-allocation", "growing-list"],
)
async def test_a_memory_hog_is_stopped_and_reported(sandbox: Sandbox, hog: str) -> None:
    message = await failure_of(sandbox, hog)

    assert message == "code node exceeded its memory limit (64 MiB)"
    await assert_unharmed(sandbox)


async def test_an_infinite_loop_is_stopped_at_the_cpu_limit(sandbox: Sandbox) -> None:
    message = await failure_of(
        sandbox,
        """
        import signal
        def main(data):
            signal.signal(signal.SIGXCPU, signal.SIG_IGN)  # no way around the hard limit
            while True:
                pass
        """,
    )

    assert message == "code node exceeded its CPU limit (1 s)"
    await assert_unharmed(sandbox)


async def test_a_sleeping_loop_is_stopped_at_the_wall_clock_timeout(sandbox: Sandbox) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()

    message = await failure_of(
        sandbox,
        """
        import time
        def main(data):
            while True:
                time.sleep(0.1)
        """,
    )

    assert message == "code node timed out after 2 s"
    assert loop.time() - started < LIMITS.wall_seconds + 1
    await assert_unharmed(sandbox)


async def test_the_code_sees_an_empty_environment_and_never_the_servers(
    sandbox: Sandbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    canary = f"canary-{uuid.uuid4()}"
    monkeypatch.setenv("BASTION_SANDBOX_CANARY", canary)

    environment = await sandbox.run(
        "import os\ndef main(data):\n    return dict(os.environ)\n", None
    )
    message = await failure_of(
        sandbox,
        """
        import os
        def main(server_pid):
            seen = [repr(dict(os.environ))]
            for pid in (server_pid, os.getppid(), 1):
                try:
                    with open(f"/proc/{pid}/environ", "rb") as file:
                        seen.append(file.read().decode(errors="replace"))
                except OSError as exc:
                    seen.append(repr(exc))
            raise RuntimeError(" | ".join(seen))
        """,
        os.getpid(),
    )

    assert environment == {}
    assert message.startswith("code raised RuntimeError: {}")
    assert canary not in message
    await assert_unharmed(sandbox)


async def test_a_socket_to_a_listening_local_port_is_refused_and_nothing_connects(
    sandbox: Sandbox,
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        port = listener.getsockname()[1]

        message = await failure_of(
            sandbox,
            """
            import socket
            def main(port):
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.settimeout(1)
                    sock.connect(("127.0.0.1", port))
            """,
            port,
        )

        with pytest.raises(BlockingIOError):
            listener.accept()
    assert message == (
        "code raised PermissionError: socket.__new__ is not allowed in a code node (line 3)"
    )
    await assert_unharmed(sandbox)


async def test_the_code_runs_in_an_empty_network_namespace(sandbox: Sandbox) -> None:
    # What holds even past the audit hook: there is no interface to reach anything through.
    interfaces = await sandbox.run(
        code(
            """
            def main(data):
                with open("/proc/net/dev") as file:
                    return [line.split(":")[0].strip() for line in file.readlines()[2:]]
            """
        ),
        None,
    )

    assert interfaces == ["lo"]


async def test_host_sockets_scratch_files_and_devices_are_hidden(sandbox: Sandbox) -> None:
    listing = await sandbox.run(
        code(
            """
            import os
            def main(paths):
                return {path: os.listdir(path) for path in paths}
            """
        ),
        ["/run", "/sys", "/var/tmp", "/dev/shm"],
    )

    # /run held, among others, the PostgreSQL socket, which read-only mounts do not stop.
    assert listing == {"/run": [], "/sys": [], "/var/tmp": [], "/dev/shm": []}


async def test_writing_outside_the_temp_dir_fails_and_leaves_no_file(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    name = f"bastion-escape-{uuid.uuid4()}"
    outside = [f"/var/tmp/{name}", f"/dev/shm/{name}", f"/etc/{name}", str(tmp_path / name)]

    message = await failure_of(
        sandbox, "def main(path):\n    open(path, 'w').write('pwned')\n", outside[0]
    )
    # os.mkdir raises no audit event: these reach the kernel, and the read-only mounts.
    errors = await sandbox.run(
        code(
            """
            import os
            def main(paths):
                errors = {}
                for path in paths:
                    try:
                        os.mkdir(path)
                    except OSError as exc:
                        errors[path] = exc.errno
                with open("inside.txt", "w") as file:  # the temp dir itself is writable
                    file.write("fine")
                with open("inside.txt") as file:
                    return {"errors": errors, "inside": file.read()}
            """
        ),
        outside,
    )

    assert message == (
        "code raised PermissionError: writing outside the temp dir is not allowed: "
        f"'{outside[0]}' (line 2)"
    )
    assert errors["inside"] == "fine"
    assert errors["errors"] == {
        outside[0]: errno.EROFS,
        outside[1]: errno.EROFS,
        outside[2]: errno.EROFS,
        outside[3]: errno.ENOENT,  # the host's /tmp is not even visible
    }
    assert not any(Path(path).exists() for path in outside)
    await assert_unharmed(sandbox)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (
            "def main(data):\n    return {1, 2}\n",
            "code node output is not JSON: Object of type set is not JSON serializable",
        ),
        (
            "def main(data):\n    return float('nan')\n",
            "code node output is not JSON: Out of range float values are not JSON compliant",
        ),
        (
            "import os\ndef main(data):\n    os.write(1, b'garbage')\n    return 1\n",
            "code node output is not JSON: Expecting value: line 1 column 1 (char 0)",
        ),
    ],
    ids=["a-set", "nan", "garbage-on-stdout"],
)
async def test_output_that_is_not_json_is_rejected(
    sandbox: Sandbox, source: str, expected: str
) -> None:
    assert await failure_of(sandbox, source) == expected
    await assert_unharmed(sandbox)


@pytest.mark.parametrize(
    "source",
    [
        "def main(data):\n    return 'x' * (2 << 20)\n",
        "import os\ndef main(data):\n    while True:\n        os.write(1, b'x' * 65536)\n",
        "import sys\ndef main(data):\n    while True:\n        sys.stderr.write('x' * 65536)\n",
    ],
    ids=["returned", "endless-stdout", "endless-stderr"],
)
async def test_oversized_output_is_stopped_and_rejected(sandbox: Sandbox, source: str) -> None:
    message = await failure_of(sandbox, source)

    assert message in ("code node output exceeds 1 MiB", "code node printed more than 1 MiB")
    await assert_unharmed(sandbox)


async def test_oversized_input_is_rejected_before_anything_runs(sandbox: Sandbox) -> None:
    message = await failure_of(sandbox, HAPPY, {"values": [], "blob": "x" * (1 << 20)})

    assert message == "input exceeds 1 MiB"


async def test_code_without_main_is_rejected(sandbox: Sandbox) -> None:
    assert await failure_of(sandbox, "def handler(data):\n    return data\n") == (
        "code does not define main(data)"
    )


async def test_an_exception_in_the_code_is_reported_with_its_type_message_and_line(
    sandbox: Sandbox,
) -> None:
    message = await failure_of(
        sandbox,
        """
        def check(value):
            raise ValueError(f"boom: {value}")

        def main(data):
            return check(data)
        """,
        7,
    )

    assert message == "code raised ValueError: boom: 7 (line 2)"
    await assert_unharmed(sandbox)


SYSTEM_PYTHON = next(
    (
        path
        for path in ("/usr/local/bin/python3.11", "/usr/bin/python3.11")
        if os.access(path, os.X_OK)
    ),
    None,
)
NOBODY = 65534


def _user_namespaces_for_nobody() -> bool:
    probe = ["unshare", "--user", "--map-root-user", "--net", "true"]
    return (
        subprocess.run(probe, user=NOBODY, group=NOBODY, extra_groups=[], check=False).returncode
        == 0
    )


@requires_root
def test_without_root_a_user_namespace_still_isolates_network_and_filesystem() -> None:
    if SYSTEM_PYTHON is None:
        missing_service("a Python 3.11 that the nobody user can run")
    if not _user_namespaces_for_nobody():
        missing_service("unprivileged user namespaces")
    script = code(
        """
        import asyncio, json, logging
        from bastion.execution.sandbox import Sandbox, SandboxLimits

        SOURCE = '''
        import os
        def main(data):
            try:
                os.mkdir("/var/tmp/bastion-escape-nonroot")
            except OSError as exc:
                escape = exc.errno
            with open("/proc/net/dev") as file:
                interfaces = [line.split(":")[0].strip() for line in file.readlines()[2:]]
            return {"escape": escape, "interfaces": interfaces, "environ": dict(os.environ)}
        '''

        async def main():
            logging.basicConfig(format="%(levelname)s %(name)s %(message)s")
            sandbox = Sandbox(SandboxLimits(cpu_seconds=1, wall_seconds=5))
            runs = [await sandbox.run(SOURCE, None) for _ in range(2)]
            isolation = sandbox.isolation
            print(json.dumps({"isolation": [isolation.network, isolation.filesystem,
                                            isolation.user, isolation.notes], "runs": runs}))

        asyncio.run(main())
        """
    )
    site_packages = next(p for p in sys.path if p.endswith("site-packages"))
    # Run as nobody, so the sandbox sees a server without root.
    done = subprocess.run(
        [SYSTEM_PYTHON, "-c", script],
        user=NOBODY,
        group=NOBODY,
        extra_groups=[],
        env={"PYTHONPATH": f"{Path(__file__).parents[2] / 'src'}:{site_packages}"},
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    report = json.loads(done.stdout)
    network, filesystem, user, notes = report["isolation"]
    assert (network, filesystem, user) == (True, True, False)
    assert notes == ["user: the server is not root, so code runs under its uid"]
    for run in report["runs"]:
        assert run == {"escape": errno.EROFS, "interfaces": ["lo"], "environ": {}}
    warnings = [line for line in done.stderr.splitlines() if line.startswith("WARNING")]
    assert warnings == [
        "WARNING bastion.execution.sandbox code nodes run with reduced isolation: "
        "user: the server is not root, so code runs under its uid"
    ]
