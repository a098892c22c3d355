"""Bootstrap of one code-node execution: `python -I -S sandbox_child.py CONFIG_JSON`.

It imports only the standard library: it runs with `-I -S` (no site-packages, no environment
variables honoured) and `env={}`. The parent (sandbox.py) writes `{"code": ..., "data": ...}`
to stdin and reads exactly one JSON envelope from stdout: `{"result": ...}`,
`{"error": message}` or `{"limit": "memory" | "output"}`.

Two processes:
- the supervisor (this process; root when the server is) reads the request, enters the
  namespaces the config asks for, forks the runner and waits for it. Its exit status is the
  runner's (128 + signal when the runner was killed), so the parent can name the cause.
  SIGTERM (the server's deadline) or its own alarm makes it kill and reap the runner.
- the runner becomes PID 1 of a fresh PID namespace, so every process it starts dies with
  it; it builds the read-only filesystem view, sets the rlimits, drops to the sandbox uid,
  installs the audit hook and only then compiles the user's code.

Any failure to set up a layer the config asks for stops the execution (fail closed): the
parent only asks for layers its probe saw working.
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import resource
import signal
import stat
import sys
import traceback
from typing import Any, NoReturn

CLONE_NEWNS = 0x00020000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
SYS_MOUNT_SETATTR = 442  # the same number on every architecture
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
LINUX_CAPABILITY_VERSION_3 = 0x20080522

# The kernel's CPU accounting may land a hair under the limit it enforced.
CPU_SLACK_SECONDS = 0.1
MAX_MESSAGE = 2000
USER_FILENAME = "<code>"
MEMORY_ENVELOPE = b'{"limit":"memory"}'
BLOCKED_EVENTS = frozenset(
    {"os.exec", "os.fork", "os.forkpty", "os.posix_spawn", "os.system", "subprocess.Popen"}
)
BLOCKED_PREFIXES = ("socket.", "ctypes.")
# Hidden under empty tmpfs: host scratch files and other tenants' temp dirs; the host's
# sockets (a world-writable PostgreSQL socket in /run ignores read-only mounts); and /sys,
# which describes the host's devices and network interfaces.
HIDDEN_DIRS = ("/tmp", "/var/tmp", "/dev/shm", "/run", "/sys")  # noqa: S108
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

libc = ctypes.CDLL(None, use_errno=True)


class MountAttr(ctypes.Structure):
    _fields_ = [
        ("attr_set", ctypes.c_uint64),
        ("attr_clr", ctypes.c_uint64),
        ("propagation", ctypes.c_uint64),
        ("userns_fd", ctypes.c_uint64),
    ]


class CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


def main() -> NoReturn:
    config = json.loads(sys.argv[1])
    request = json.loads(sys.stdin.buffer.read())
    runner = 0

    def stop(signum: int, frame: object) -> None:
        # Kill and reap the runner rather than die before it: an orphan might never be
        # reaped (a server that is PID 1) and its zombie would count against RLIMIT_NPROC.
        if runner:
            os.kill(runner, signal.SIGKILL)
        else:
            os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)  # the server's deadline
    signal.signal(signal.SIGALRM, stop)  # ours, should the server have died
    signal.alarm(math.ceil(config["wall_seconds"]) + 2)
    try:
        enter_namespaces(config)
        runner = os.fork()
    except OSError as exc:
        finish({"error": f"code sandbox could not start: {exc}"})
    if runner == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        run(config, request)
    os._exit(supervise(runner, config["cpu_seconds"]))


def enter_namespaces(config: dict[str, Any]) -> None:
    flags = CLONE_NEWNET if config["network"] else 0
    if config["filesystem"]:
        # IPC too: SysV shared memory would otherwise outlive the run and leak between tenants.
        flags |= CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC
    if not flags:
        return
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        flags |= CLONE_NEWUSER  # without root, a user namespace is what grants the others
    check(libc.unshare(ctypes.c_int(flags)), "unshare")
    if uid != 0:
        write_file("/proc/self/setgroups", "deny")
        write_file("/proc/self/uid_map", f"0 {uid} 1")
        write_file("/proc/self/gid_map", f"0 {gid} 1")


def supervise(pid: int, cpu_seconds: int) -> int:
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    # The hard CPU limit is a SIGKILL; tell it apart from the kernel's OOM killer.
    if (
        code == -signal.SIGKILL
        and usage.ru_utime + usage.ru_stime >= cpu_seconds - CPU_SLACK_SECONDS
    ):
        code = -signal.SIGXCPU
    return 128 - code if code < 0 else code


def run(config: dict[str, Any], request: dict[str, Any]) -> NoReturn:
    try:
        lock_down(config)
    except (OSError, ValueError) as exc:
        finish({"error": f"code sandbox could not start: {exc}"})
    install_audit_hook(os.getcwd())
    execute(request["code"], request["data"], config["max_output_bytes"])


def lock_down(config: dict[str, Any]) -> None:
    uid: int | None = config["uid"]
    # Started with env={}, yet Python's C-locale coercion (PEP 538) has set LC_CTYPE.
    os.environ.clear()
    os.umask(0o022)
    if config["filesystem"]:
        private_filesystem(uid, config["file_size_bytes"])
    for limit, value in (
        (resource.RLIMIT_CPU, config["cpu_seconds"]),
        (resource.RLIMIT_AS, config["memory_bytes"]),
        (resource.RLIMIT_NOFILE, config["open_files"]),
        (resource.RLIMIT_NPROC, config["processes"]),
        (resource.RLIMIT_FSIZE, config["file_size_bytes"]),
        (resource.RLIMIT_CORE, 0),
    ):
        # soft == hard: the code cannot raise them, and CPU ends in a SIGKILL it cannot catch.
        resource.setrlimit(limit, (value, value))
    if uid is not None:
        # Root ignores RLIMIT_NPROC and file modes; a uid per slot also keeps tenants apart.
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    elif os.geteuid() == 0:
        drop_capabilities()  # uid 0 of our own user namespace could undo the mounts
    # Neither a setuid binary nor file capabilities can hand privileges back.
    check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl")
    # Set after the uid change, which clears it: the runner dies with the supervisor.
    check(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0), "prctl")
    os.umask(0o077)


def private_filesystem(uid: int | None, size: int) -> None:
    """A read-only view of the tree with a fresh /proc and one small writable temp dir."""
    workdir = os.getcwd()
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we mount may reach the host
    if uid is not None:
        expose_interpreter()
    for hidden in HIDDEN_DIRS:
        if os.path.isdir(hidden) and not os.path.islink(hidden):
            mount("tmpfs", hidden, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
    os.makedirs(workdir, exist_ok=True)
    # The host's /proc would show every process's command line, the server's included.
    mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    attr = MountAttr(attr_set=MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)
    check(
        libc.syscall(
            ctypes.c_long(SYS_MOUNT_SETATTR),
            ctypes.c_long(AT_FDCWD),
            b"/",
            ctypes.c_long(AT_RECURSIVE),
            ctypes.byref(attr),
            ctypes.c_long(ctypes.sizeof(attr)),
        ),
        "mount_setattr",
    )
    # A tmpfs rather than the host dir: its size caps everything the code writes to disk.
    owner = "" if uid is None else f",uid={uid},gid={uid}"
    mount("tmpfs", workdir, "tmpfs", MS_NOSUID | MS_NODEV, f"mode=700,size={size}{owner}")
    os.chdir(workdir)


def expose_interpreter() -> None:
    """Lets the sandbox uid import the standard library when it lives in a closed dir.

    An interpreter under /root (pyenv) is unreachable for any other uid. A tmpfs over the
    closed dir, holding binds of just the library dirs, opens them and hides the rest.
    """
    dirs = {os.path.realpath(path) for path in sys.path if os.path.isdir(path)}
    roots = [path for path in dirs if not any(path.startswith(other + "/") for other in dirs)]
    by_closed_dir: dict[str, list[str]] = {}
    for path in roots:
        closed = first_closed_dir(path)
        if closed is not None:
            by_closed_dir.setdefault(closed, []).append(path)
    for closed, paths in by_closed_dir.items():
        handles = [os.open(path, os.O_PATH | os.O_DIRECTORY) for path in paths]
        mount("tmpfs", closed, "tmpfs", MS_NOSUID | MS_NODEV, "mode=755,size=64k")
        for path, handle in zip(paths, handles, strict=True):
            os.makedirs(path, exist_ok=True)
            mount(f"/proc/self/fd/{handle}", path, None, MS_BIND | MS_REC)
            os.close(handle)


def first_closed_dir(path: str) -> str | None:
    current = "/"
    for part in path.strip("/").split("/"):
        if not os.stat(current).st_mode & stat.S_IXOTH:
            return current
        current = os.path.join(current, part)
    return None


def drop_capabilities() -> None:
    header = CapHeader(LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()  # effective, permitted, inheritable: twice 32 bits each
    check(libc.capset(ctypes.byref(header), data), "capset")


def install_audit_hook(workdir: str) -> None:
    """Refuses the obvious escapes early, with a clear message.

    Audit hooks are not a security boundary: C code (e.g. `_posixsubprocess`) acts without
    raising events. The boundaries are the namespaces, the uid and the rlimits; this hook
    only makes the common attempts fail fast and legibly.
    """

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if event in BLOCKED_EVENTS or event.startswith(BLOCKED_PREFIXES):
            raise PermissionError(f"{event} is not allowed in a code node")
        if event == "open" and opens_for_writing(args[1], args[2]) and not inside(args[0], workdir):
            raise PermissionError(f"writing outside the temp dir is not allowed: {args[0]!r}")

    sys.addaudithook(hook)


def opens_for_writing(mode: object, flags: object) -> bool:
    if isinstance(flags, int) and flags & WRITE_FLAGS:
        return True
    return isinstance(mode, str) and any(char in mode for char in "wax+")


def inside(path: object, workdir: str) -> bool:
    if isinstance(path, int):
        return True  # an already open descriptor: nothing new is reached
    if not isinstance(path, str | bytes):
        return False
    real = os.path.realpath(os.fsdecode(path))
    return real == workdir or real.startswith(workdir + "/")


def execute(code: str, data: Any, max_output_bytes: int) -> NoReturn:
    sys.stdout = sys.stderr  # print() must not corrupt the result envelope on fd 1
    try:
        namespace: dict[str, Any] = {"__name__": "__code__"}
        exec(compile(code, USER_FILENAME, "exec"), namespace)  # noqa: S102 - this is the job
        entry = namespace.get("main")
        if not callable(entry):
            finish({"error": "code does not define main(data)"})
        result = entry(data)
    except MemoryError:
        finish_out_of_memory()
    except BaseException as exc:
        finish({"error": describe(exc)})
    try:
        body = json.dumps(result, allow_nan=False).encode()
    except MemoryError:
        finish_out_of_memory()
    except BaseException as exc:
        finish({"error": f"code node output is not JSON: {text_of(exc)}"})
    if len(body) > max_output_bytes:
        finish({"limit": "output"})
    write_out(b'{"result":' + body + b"}")
    os._exit(0)


def describe(exc: BaseException) -> str:
    lines = [
        lineno
        for frame, lineno in traceback.walk_tb(exc.__traceback__)
        if frame.f_code.co_filename == USER_FILENAME
    ]
    text = text_of(exc)
    message = f"code raised {type(exc).__name__}" + (f": {text}" if text else "")
    return message + (f" (line {lines[-1]})" if lines else "")


def text_of(exc: BaseException) -> str:
    try:
        return str(exc)[:MAX_MESSAGE]
    except BaseException:  # the code's own __str__ may raise anything
        return "(unprintable)"


def finish(envelope: dict[str, str]) -> NoReturn:
    write_out(json.dumps(envelope).encode())
    # _exit: no atexit handlers or non-daemon threads of the user's get to run or block.
    os._exit(0)


def finish_out_of_memory() -> NoReturn:
    write_out(MEMORY_ENVELOPE)  # a constant: formatting anything could fail again
    os._exit(0)


def write_out(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


def write_file(path: str, text: str) -> None:
    with open(path, "w") as file:
        file.write(text)


def mount(
    source: str | None, target: str, fstype: str | None, flags: int, options: str = ""
) -> None:
    result = libc.mount(
        None if source is None else source.encode(),
        target.encode(),
        None if fstype is None else fstype.encode(),
        ctypes.c_ulong(flags),
        options.encode() or None,
    )
    check(result, f"mount {target}")


def check(result: int, what: str) -> None:
    if result == -1:
        error = ctypes.get_errno()
        raise OSError(error, f"{what}: {os.strerror(error)}")


if __name__ == "__main__":
    main()
