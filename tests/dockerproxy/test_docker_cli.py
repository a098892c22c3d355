"""The real docker CLI, through `bastion docker-proxy`, against a real private Docker engine.

The CLI carries the token the way an operator would configure it: `HttpHeaders` in the
config.json of its DOCKER_CONFIG directory.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.docker_engine import DockerEngine
from tests.dockerproxy.conftest import TOKEN, ProxyProcess, run_proxy
from tests.dockerproxy.pki import Pki
from tests.services import free_port, wait_until

WEB1, WEB2, SECRET = "dp-web1", "dp-web2", "dp-secret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Cli:
    engine: DockerEngine
    proxy: ProxyProcess
    configs: Path

    def config(self, name: str, headers: dict[str, str]) -> Path:
        directory = self.configs / name
        directory.mkdir(exist_ok=True)
        (directory / "config.json").write_text(json.dumps({"HttpHeaders": headers}))
        return directory

    def docker(
        self, *args: str, token: str | None = TOKEN, proxy: ProxyProcess | None = None
    ) -> subprocess.CompletedProcess[str]:
        """`docker -H tcp://proxy …` with the token in the CLI's config (None: no token)."""
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        directory = self.config(f"config-{abs(hash(token))}", headers)
        target = proxy or self.proxy
        return self.engine.docker(
            "-H", target.docker_host, *args,
            check=False,
            env={"DOCKER_CONFIG": str(directory), "DOCKER_HOST": target.docker_host},
        )  # fmt: skip

    def refused_count(self, reason: str = "not_allowlisted") -> float:
        text = httpx.get(f"{self.proxy.url}/metrics", headers=AUTH).text
        found = re.search(
            rf'^bastion_docker_proxy_refused_total\{{reason="{reason}"\}} (\S+)$', text, re.M
        )
        return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def cli(docker_engine: DockerEngine, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cli]:
    docker_engine.remove(WEB1, WEB2, SECRET)
    docker_engine.run_replica(WEB1, free_port())
    docker_engine.create_replica(WEB2, free_port())
    docker_engine.run_replica(SECRET, free_port())
    workdir = tmp_path_factory.mktemp("docker-cli")
    try:
        with run_proxy(
            workdir,
            docker_socket=str(docker_engine.socket),
            allowed_containers=f"{WEB1},{WEB2}",
        ) as proxy:
            yield Cli(docker_engine, proxy, workdir)
    finally:
        docker_engine.remove(WEB1, WEB2, SECRET)


def test_docker_ps_shows_only_allowlisted_containers(cli: Cli) -> None:
    everything = cli.engine.docker("ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert SECRET in everything
    result = cli.docker("ps", "-a", "--format", "{{.Names}}")
    assert result.returncode == 0, result.stderr
    assert sorted(result.stdout.split()) == [WEB1, WEB2]
    running = cli.docker("ps", "--format", "{{.Names}}")
    assert running.stdout.split() == [WEB1]


def test_allowlisted_inspect_stop_and_start_work(cli: Cli) -> None:
    result = cli.docker("inspect", WEB1)
    assert result.returncode == 0, result.stderr
    [details] = json.loads(result.stdout)
    assert details["Name"] == f"/{WEB1}"

    stopped = cli.docker("stop", "-t", "1", WEB1)
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.strip() == WEB1
    assert cli.engine.state(WEB1) == "exited"

    started = cli.docker("start", WEB1)
    assert started.returncode == 0, started.stderr
    assert cli.engine.state(WEB1) == "running"
    assert cli.docker("inspect", "-f", "{{.State.Running}}", WEB1).stdout.strip() == "true"


@pytest.mark.parametrize(
    ("args", "request_line"),
    [
        (("run", "--rm", "IMAGE", "true"), "POST /v1.[0-9]+/containers/create"),
        (("exec", WEB1, "true"), f"POST /v1.[0-9]+/containers/{WEB1}/exec"),
        (
            ("create", "--privileged", "-v", "/:/host", "IMAGE", "true"),
            "POST /v1.[0-9]+/containers/create",
        ),
        (("volume", "ls"), "GET /v1.[0-9]+/volumes"),
        (("images",), "GET /v1.[0-9]+/images/json"),
        (("inspect", "--type", "container", SECRET), f"GET /v1.[0-9]+/containers/{SECRET}/json"),
        (("inspect", SECRET), f"GET /v1.[0-9]+/containers/{SECRET}/json"),
        (("stop", SECRET), f"POST /v1.[0-9]+/containers/{SECRET}/stop"),
        # The CLI inspects first (allowed), then asks for the logs by id (refused).
        (("logs", WEB1), "GET /v1.[0-9]+/containers/[0-9a-f]+/logs"),
        (("rm", "-f", WEB1), f"DELETE /v1.[0-9]+/containers/{WEB1}"),
        (("kill", "--signal", "KILL", SECRET), f"POST /v1.[0-9]+/containers/{SECRET}/kill"),
    ],
)
def test_everything_else_is_refused_logged_and_counted(
    cli: Cli, args: tuple[str, ...], request_line: str
) -> None:
    args = tuple(cli.engine.image if arg == "IMAGE" else arg for arg in args)
    before_containers = cli.engine.docker("ps", "-aq").stdout.split()
    before = cli.refused_count()

    result = cli.docker(*args)

    assert result.returncode != 0
    # The CLI got the proxy's 403 answer and printed its message.
    assert re.search(
        r"Error response from daemon: .*(not allowed (by|on)|not in the docker proxy's allowlist)",
        result.stderr,
    ), result.stderr
    assert cli.refused_count() > before
    refused = re.compile(
        rf"bastion\.security\.dockerproxy .*refused {request_line}\S* from .*: 403 "
    )
    wait_until(
        lambda: refused.search(cli.proxy.log_text()) is not None,
        timeout=5,
        what=f"the refusal of {request_line} in the proxy's log",
    )
    # Nothing happened behind the proxy.
    assert cli.engine.docker("ps", "-aq").stdout.split() == before_containers
    assert cli.engine.state(SECRET) == "running"


def test_stats_only_as_a_single_sample(cli: Cli) -> None:
    with httpx.Client(base_url=cli.proxy.url, headers=AUTH, timeout=30) as client:
        response = client.get(f"/containers/{WEB1}/stats", params={"stream": "false"})
        assert response.status_code == 200
        assert "memory_stats" in response.json()
        assert client.get(f"/containers/{WEB1}/stats").status_code == 403
        assert client.get(f"/containers/{WEB1}/stats?stream=true").status_code == 403


def test_a_missing_token_is_401(cli: Cli) -> None:
    before = cli.refused_count("missing_token")
    result = cli.docker("inspect", WEB1, token=None)
    assert result.returncode != 0
    assert "missing token (Authorization header, Bearer scheme)" in result.stderr
    assert httpx.get(f"{cli.proxy.url}/containers/{WEB1}/json").status_code == 401
    assert cli.refused_count("missing_token") > before


def test_a_wrong_token_is_403(cli: Cli) -> None:
    before = cli.refused_count("wrong_token")
    result = cli.docker("inspect", WEB1, token="not-the-token-" + "x" * 40)
    assert result.returncode != 0
    assert "wrong token" in result.stderr
    response = httpx.get(
        f"{cli.proxy.url}/containers/{WEB1}/json", headers={"Authorization": "Bearer nope"}
    )
    assert response.status_code == 403
    assert cli.refused_count("wrong_token") > before


def test_an_unreachable_docker_is_502(cli: Cli, tmp_path: Path) -> None:
    with run_proxy(
        tmp_path, docker_socket=str(tmp_path / "no-docker.sock"), allowed_containers=WEB1
    ) as proxy:
        result = cli.docker("inspect", WEB1, proxy=proxy)
        assert result.returncode != 0
        assert "the Docker engine is unreachable" in result.stderr
        response = httpx.get(f"{proxy.url}/containers/{WEB1}/json", headers=AUTH)
        assert response.status_code == 502
        assert response.json() == {"message": "the Docker engine is unreachable"}


def test_the_docker_cli_over_mutual_tls(cli: Cli, pki: Pki, tmp_path: Path) -> None:
    with run_proxy(
        tmp_path,
        docker_socket=str(cli.engine.socket),
        allowed_containers=WEB1,
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        tls_client_ca_file=str(pki.ca),
    ) as proxy:

        def docker_tls(client: tuple[Path, Path]) -> subprocess.CompletedProcess[str]:
            return cli.docker(
                "--tlsverify", "--tlscacert", str(pki.ca),
                "--tlscert", str(client[0]), "--tlskey", str(client[1]),
                "inspect", "-f", "{{.Name}}", WEB1,
                proxy=proxy,
            )  # fmt: skip

        good = docker_tls((pki.client.cert, pki.client.key))
        assert good.returncode == 0, good.stderr
        assert good.stdout.strip() == f"/{WEB1}"

        wrong = docker_tls((pki.wrong_client.cert, pki.wrong_client.key))
        assert wrong.returncode != 0
        assert f"/{WEB1}" not in wrong.stdout
        # The proxy ends the handshake: the CLI never gets an HTTP answer.
        assert "error during connect" in wrong.stderr, wrong.stderr
