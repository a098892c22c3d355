"""The rotation's docker client through the real `bastion docker-proxy` process: the
token, mutual TLS, the allowlist, and what each refusal becomes on our side."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bastion.rotation.client import DockerClient, DockerEndpoint
from bastion.rotation.errors import DockerRefused, DockerUnreachable
from tests.docker_engine import DockerEngine
from tests.dockerproxy.conftest import TOKEN, ProxyProcess, run_proxy
from tests.dockerproxy.pki import Pki, make_pki
from tests.rotation.conftest import Replicas

pytestmark = pytest.mark.services


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def names(replicas: Replicas) -> list[str]:
    return list(replicas(2))


@pytest.fixture
def tls_proxy(
    tmp_path: Path, docker_engine: DockerEngine, names: list[str], pki: Pki
) -> Iterator[ProxyProcess]:
    with run_proxy(
        tmp_path,
        docker_socket=str(docker_engine.socket),
        allowed_containers=names[0],
        tls_cert_file=str(pki.server.cert),
        tls_key_file=str(pki.server.key),
        tls_client_ca_file=str(pki.ca),
    ) as proxy:
        yield proxy


async def test_through_the_proxy_with_mutual_tls(
    tls_proxy: ProxyProcess, names: list[str], pki: Pki
) -> None:
    allowed, other = names
    client = DockerClient(
        DockerEndpoint(
            tls_proxy.url, TOKEN, ca_file=pki.ca, cert_file=pki.client.cert, key_file=pki.client.key
        )
    )
    try:
        await client.ping()
        await client.start(allowed)
        assert (await client.inspect(allowed, fresh=True)).running
        assert await client.list_containers() == {allowed: "running"}  # the other is hidden
        assert "cpu_stats" in await client.stats(allowed)
        await client.stop(allowed, 1)
        with pytest.raises(DockerRefused, match=r"refused POST /containers/.*/start"):
            await client.start(other)
    finally:
        await client.aclose()
    wrong_token = DockerClient(
        DockerEndpoint(
            tls_proxy.url,
            "x" * 40,
            ca_file=pki.ca,
            cert_file=pki.client.cert,
            key_file=pki.client.key,
        )
    )
    with pytest.raises(DockerRefused):
        await wrong_token.ping()
    await wrong_token.aclose()


@pytest.mark.parametrize("certificate", ["none", "another CA"])
async def test_without_a_certificate_of_the_ca_the_proxy_is_unreachable(
    tls_proxy: ProxyProcess, pki: Pki, certificate: str
) -> None:
    pair = pki.wrong_client if certificate == "another CA" else None
    client = DockerClient(
        DockerEndpoint(
            tls_proxy.url,
            TOKEN,
            ca_file=pki.ca,
            cert_file=pair.cert if pair else None,
            key_file=pair.key if pair else None,
        )
    )
    with pytest.raises(DockerUnreachable, match="cannot reach the docker proxy"):
        await client.ping()
    await client.aclose()
