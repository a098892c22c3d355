"""The sandbox for `code` workflow nodes: tenant Python runs in a short-lived, locked-down process.

Every execution gets its own process (`python -I -S sandbox_child.py`, empty environment,
cwd a fresh private temp dir) and talks JSON over size-capped pipes. Layers, each holding on
its own when the ones inside it are bypassed:

1. Namespaces. A fresh network namespace (only a downed loopback: no host, no internet).
   Private mount, PID and IPC namespaces: the whole tree is read-only; /tmp, /var/tmp,
   /dev/shm, /run (host sockets) and /sys are empty; the only writable place is the temp
   dir (itself a tmpfs of `file_size_bytes`); /proc shows only the execution's own
   processes, and the kernel kills every process it started when it ends.
2. A dedicated uid per concurrency slot (`uid_base + slot`) when the server runs as root:
   file modes apply, RLIMIT_NPROC counts only that execution's processes, and tenants
   cannot signal or read each other.
3. rlimits (CPU, address space, open files, processes, file size, no core dumps) and
   no_new_privs, set before the user's code is compiled.
4. An audit hook refusing sockets, subprocesses, exec, fork, ctypes and writes outside the
   temp dir. It gives clear errors for the obvious attempts; it is not a boundary.
5. In the server: a cap on the input, capped reads of stdout/stderr, and a wall-clock
   deadline after which the child's supervisor kills the code (its process group, should
   the supervisor not answer).

Which layers the host allows is probed once, by running trivial code with them. Without
root the namespaces come from a user namespace, and the code runs under the server's own
uid; without user namespaces either, only the rlimits and the audit hook remain. Either way
code still runs, `Sandbox.isolation` says what is missing and why, and a WARNING is logged
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.workflows.errors import Failure, NodeFailed

log = logging.getLogger("bastion.execution.sandbox")

_CHILD = str(Path(__file__).with_name("sandbox_child.py"))
_PROBE_REQUEST = b'{"code": "def main(data):\\n    return data\\n", "data": "ok"}'
_PROBE_TIMEOUT_SECONDS = 30
_ENVELOPE_BYTES = 64  # what `{"result": ...}` adds around the result itself
_MAX_MESSAGE = 2000
_CHUNK = 64 * 1024
_STOP_GRACE_SECONDS = 1.0


class SandboxFailed(NodeFailed):
    """A code node did not produce a result; the message names the cause."""


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_bytes: int = 256 * 2**20
    open_files: int = 64
    processes: int = 8  # RLIMIT_NPROC for the sandbox uid
    file_size_bytes: int = 8 * 2**20  # per file, and in all: the temp dir's size
    max_input_bytes: int = 1 * 2**20
    max_output_bytes: int = 1 * 2**20


@dataclass(frozen=True)
class Isolation:
    network: bool  # a fresh network namespace per execution
    filesystem: bool  # private mount namespace: read-only view except the private temp dir
    user: bool  # runs under a dedicated unprivileged uid
    notes: tuple[str, ...]  # human-readable reasons for anything False, for logs and /readyz


class Sandbox:
    """Runs `main(data)` of untrusted code, at most `max_concurrent` at a time."""

    def __init__(
        self,
        limits: SandboxLimits = SandboxLimits(),
        *,
        max_concurrent: int = 4,
        uid_base: int = 64000,
    ) -> None:
        self._limits = limits
        self._uid_base = uid_base
        self._semaphore = asyncio.Semaphore(max_concurrent)
        self._free_slots = list(range(max_concurrent))
        self._isolation: Isolation | None = None
        self._probe_lock = threading.Lock()

    @property
    def isolation(self) -> Isolation:
        with self._probe_lock:
            if self._isolation is None:
                self._isolation = self._probe()
                if self._isolation.notes:
                    log.warning(
                        "code nodes run with reduced isolation: %s",
                        "; ".join(self._isolation.notes),
                    )
            return self._isolation

    async def run(self, code: str, data: Any) -> Any:
        try:
            data_json = json.dumps(data, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise SandboxFailed(f"input is not JSON: {exc}") from None
        if len(data_json.encode()) > self._limits.max_input_bytes:
            raise SandboxFailed(f"input exceeds {_mib(self._limits.max_input_bytes)}")
        request = f'{{"code": {json.dumps(code)}, "data": {data_json}}}'.encode()
        isolation = self._isolation
        if isolation is None:  # the first run probes, off the event loop
            isolation = await asyncio.to_thread(lambda: self.isolation)
        async with self._semaphore:
            slot = self._free_slots.pop()
            try:
                uid = self._uid_base + slot if isolation.user else None
                config = self._config(isolation.network, isolation.filesystem, uid)
                with _private_dir(uid) as workdir:
                    returncode, stdout = await self._exchange(config, request, workdir)
            except OSError as exc:  # no temp dir, no process: the host, not the code
                raise SandboxFailed(f"code sandbox could not start: {exc}") from exc
            finally:
                self._free_slots.append(slot)
        return self._outcome(returncode, stdout)

    def _config(self, network: bool, filesystem: bool, uid: int | None) -> str:
        layers = {"network": network, "filesystem": filesystem, "uid": uid}
        return json.dumps({**dataclasses.asdict(self._limits), **layers})

    async def _exchange(self, config: str, request: bytes, workdir: str) -> tuple[int, bytes]:
        limits = self._limits
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-I",
            "-S",
            _CHILD,
            config,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={},  # nothing of the server's environment (secrets, URLs) reaches the code
            cwd=workdir,
            start_new_session=True,  # one process group to kill, not the server's
        )
        assert process.stdin and process.stdout and process.stderr
        try:
            async with asyncio.timeout(limits.wall_seconds):
                async with asyncio.TaskGroup() as group:
                    group.create_task(_feed(process.stdin, request))
                    out = group.create_task(
                        _read_capped(
                            process.stdout, limits.max_output_bytes + _ENVELOPE_BYTES, process
                        )
                    )
                    err = group.create_task(
                        _read_capped(process.stderr, limits.max_output_bytes, process)
                    )
                returncode = await process.wait()
        except TimeoutError:
            raise SandboxFailed(
                f"code node timed out after {limits.wall_seconds:g} s", Failure.TIMEOUT
            ) from None
        finally:
            await _stop(process)
        stdout, stderr = out.result(), err.result()
        if stdout is None:
            raise SandboxFailed(f"code node output exceeds {_mib(limits.max_output_bytes)}")
        if stderr is None:
            raise SandboxFailed(f"code node printed more than {_mib(limits.max_output_bytes)}")
        if returncode != 0:
            log.debug("code node exited with %s; stderr: %s", returncode, stderr[-500:])
        return returncode, stdout

    def _outcome(self, returncode: int, stdout: bytes) -> Any:
        limits = self._limits
        memory = f"code node exceeded its memory limit ({_mib(limits.memory_bytes)})"
        if returncode == 128 + signal.SIGXCPU:
            raise SandboxFailed(f"code node exceeded its CPU limit ({limits.cpu_seconds} s)")
        if returncode == 128 + signal.SIGKILL:
            raise SandboxFailed(memory)  # not us, not the CPU limit: the kernel's OOM killer
        if returncode > 128:
            raise SandboxFailed(f"code node crashed ({_signal_name(returncode - 128)})")
        if returncode < 0:
            raise SandboxFailed(f"code sandbox was killed ({_signal_name(-returncode)})")
        if returncode > 0:
            raise SandboxFailed(f"code node exited with status {returncode}")
        if not stdout:
            raise SandboxFailed("code node exited without a result")
        try:
            envelope = json.loads(stdout)
        except (ValueError, RecursionError) as exc:
            raise SandboxFailed(f"code node output is not JSON: {exc}") from None
        if isinstance(envelope, dict) and len(envelope) == 1:
            if "result" in envelope:
                return envelope["result"]
            if envelope.get("limit") == "memory":
                raise SandboxFailed(memory)
            if envelope.get("limit") == "output":
                raise SandboxFailed(f"code node output exceeds {_mib(limits.max_output_bytes)}")
            if isinstance(envelope.get("error"), str):
                raise SandboxFailed(envelope["error"][:_MAX_MESSAGE])
        raise SandboxFailed("code node output is not JSON: not a result")

    def _probe(self) -> Isolation:
        root = os.geteuid() == 0
        notes = [] if root else ["user: the server is not root, so code runs under its uid"]
        if self._attempt(network=True, filesystem=True, user=root) is None:
            return Isolation(network=True, filesystem=True, user=root, notes=tuple(notes))
        granted: dict[str, bool] = {}
        for layer in ("network", "filesystem", "user") if root else ("network", "filesystem"):
            failure = self._attempt(
                **{"network": False, "filesystem": False, "user": False, layer: True}
            )
            granted[layer] = failure is None
            if failure is not None:
                notes.append(f"{layer}: {failure}")
        return Isolation(
            network=granted["network"],
            filesystem=granted["filesystem"],
            user=granted.get("user", False),
            notes=tuple(notes),
        )

    def _attempt(self, *, network: bool, filesystem: bool, user: bool) -> str | None:
        """Runs trivial code with these layers; None when it worked, else why not."""
        uid = self._uid_base if user else None
        with _private_dir(uid) as workdir:
            try:
                done = subprocess.run(
                    [sys.executable, "-I", "-S", _CHILD, self._config(network, filesystem, uid)],
                    input=_PROBE_REQUEST,
                    capture_output=True,
                    env={},
                    cwd=workdir,
                    timeout=_PROBE_TIMEOUT_SECONDS,
                    start_new_session=True,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                return "the probe timed out"
        if done.returncode != 0:
            return f"the probe exited with {done.returncode}: {done.stderr[-300:]!r}"
        try:
            envelope = json.loads(done.stdout)
        except ValueError:
            return f"the probe answered {done.stdout[:300]!r}"
        if envelope == {"result": "ok"}:
            return None
        return str(envelope.get("error", envelope))


@contextlib.contextmanager
def _private_dir(uid: int | None) -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="bastion-code-")  # mode 0700
    try:
        if uid is not None:
            os.chown(path, uid, uid)
        yield path
    finally:
        try:
            shutil.rmtree(path)
        except OSError:
            log.exception("could not remove the code node temp dir %s", path)


async def _feed(stream: asyncio.StreamWriter, request: bytes) -> None:
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):
        stream.write(request)
        await stream.drain()
    stream.close()


async def _read_capped(
    stream: asyncio.StreamReader, cap: int, process: asyncio.subprocess.Process
) -> bytes | None:
    """The stream's bytes, or None once it passed `cap` (the process is then killed)."""
    data = bytearray()
    overflow = False
    while chunk := await stream.read(_CHUNK):
        if overflow:
            continue  # drain to EOF, which comes as soon as the killed group is gone
        data += chunk
        if len(data) > cap:
            overflow = True
            data.clear()
            _terminate(process)  # a child writing gigabytes is stopped, not buffered
    return None if overflow else bytes(data)


def _terminate(process: asyncio.subprocess.Process) -> None:
    """Asks the supervisor to kill and reap the runner (and with it its PID namespace)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)


async def _stop(process: asyncio.subprocess.Process) -> None:
    _terminate(process)
    try:
        await asyncio.wait_for(process.wait(), _STOP_GRACE_SECONDS)
    except TimeoutError:
        # Only when the supervisor itself is stuck, or (same uid, no namespaces) was killed.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()


def _mib(size: int) -> str:
    return f"{size / 2**20:g} MiB"


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
