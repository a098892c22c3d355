"""A private Docker engine for tests: its own dockerd, data dir and unix socket.

No registry is reachable here, so the test image is a busybox rootfs brought in with
`docker import`. Replicas run with `--network host` on distinct loopback ports, serve
their own name over HTTP (busybox httpd) and carry a Docker healthcheck.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from tests.services import missing_service, wait_until

IMAGE = "bastion-test/replica:1"
_APPLETS = ("sh", "httpd", "wget", "echo", "mkdir", "cat", "sleep", "true", "false")
# Serves its own name on 127.0.0.1:$PORT; the healthcheck asks the same page.
_SERVE = (
    'mkdir -p /tmp/www && echo "$NAME" > /tmp/www/index.html'
    ' && exec httpd -f -p "127.0.0.1:$PORT" -h /tmp/www'
)


def _busybox() -> Path | None:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


@dataclass
class DockerEngine:
    root: Path
    image: str = IMAGE
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _log: BinaryIO | None = field(default=None, repr=False)

    @property
    def socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def docker(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The real docker CLI against this engine (or against `env`'s DOCKER_HOST)."""
        environment = {**os.environ, "DOCKER_HOST": self.host, **(env or {})}
        return subprocess.run(
            ["docker", *args],
            capture_output=True,
            text=True,
            check=check,
            env=environment,
            timeout=60,
        )

    def run_replica(
        self, name: str, port: int, *, healthy: bool = True, stop_timeout: int = 10
    ) -> None:
        """Start a replica serving its name on 127.0.0.1:`port`; an unhealthy one serves too,
        but its healthcheck never passes. busybox httpd ignores SIGTERM, so stopping it
        (and stopping the daemon) waits `stop_timeout` seconds."""
        self._replica("run", "-d", name=name, port=port, healthy=healthy, stop=stop_timeout)

    def create_replica(
        self, name: str, port: int, *, healthy: bool = True, stop_timeout: int = 10
    ) -> None:
        """Like run_replica, but created stopped (a pool's spare replica)."""
        self._replica("create", name=name, port=port, healthy=healthy, stop=stop_timeout)

    def _replica(self, *verb: str, name: str, port: int, healthy: bool, stop: int) -> None:
        check = f"wget -q -O /dev/null http://127.0.0.1:{port}/" if healthy else "false"
        self.docker(
            *verb, "--name", name, "--network", "host", "--stop-timeout", str(stop),
            "-e", f"NAME={name}", "-e", f"PORT={port}",
            "--health-cmd", check, "--health-interval", "200ms",
            "--health-timeout", "1s", "--health-retries", "1",
            self.image, "sh", "-c", _SERVE,
        )  # fmt: skip

    def state(self, name: str) -> str:
        return self.docker("inspect", "-f", "{{.State.Status}}", name).stdout.strip()

    def remove(self, *names: str) -> None:
        if names:
            self.docker("rm", "-f", *names, check=False)

    def remove_all(self) -> None:
        ids = self.docker("ps", "-aq").stdout.split()
        self.remove(*ids)

    def ping(self) -> bool:
        version = self.docker("version", "--format", "{{.Server.Version}}", check=False)
        return version.returncode == 0

    def start_daemon(self) -> None:
        self._log = log = (self.root / "dockerd.log").open("ab")
        self._process = subprocess.Popen(
            [
                "dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
                "--data-root", str(self.root / "data"),
                "--exec-root", str(self.root / "exec"),
                "--pidfile", str(self.root / "dockerd.pid"),
                "-H", self.host,
            ],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_until(self.ping, timeout=60, what="dockerd")

    def stop_daemon(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None


def _build_image(engine: DockerEngine, busybox: Path) -> None:
    rootfs = engine.root / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in _APPLETS:
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        tmp = tarfile.TarInfo("tmp")
        tmp.type = tarfile.DIRTYPE
        tmp.mode = 0o1777
        tar.addfile(tmp)
    engine.docker("import", "-c", 'CMD ["/bin/sh"]', str(rootfs), engine.image)


@contextlib.contextmanager
def run_docker_engine() -> Iterator[DockerEngine]:
    busybox = _busybox()
    if shutil.which("dockerd") is None or shutil.which("docker") is None:
        missing_service("Docker engine (dockerd + docker CLI; Debian package docker.io)")
    if busybox is None:
        missing_service("busybox (Debian package busybox-static) for the test image")
    if os.geteuid() != 0:
        missing_service("root, to run a private dockerd")
    assert busybox is not None
    # A short path: the socket path must fit in sun_path (108 bytes).
    root = Path(tempfile.mkdtemp(prefix="bst-docker-", dir="/tmp"))
    engine = DockerEngine(root)
    try:
        engine.start_daemon()
        _build_image(engine, busybox)
        yield engine
    finally:
        with contextlib.suppress(Exception):
            if engine._process is None:
                engine.start_daemon()
            engine.remove_all()
        engine.stop_daemon()
        # A daemon that died uncleanly can leave overlay mounts behind.
        subprocess.run(
            ["sh", "-c", f"grep -o ' {root}[^ ]*' /proc/mounts | xargs -r -n1 umount -l"],
            check=False,
        )
        shutil.rmtree(root, ignore_errors=True)
