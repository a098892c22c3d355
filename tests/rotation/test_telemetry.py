from __future__ import annotations

from datetime import UTC, datetime

from bastion.rotation.client import DockerClient, DockerEndpoint
from bastion.rotation.pools import PoolConfig
from bastion.rotation.telemetry import Telemetry, sample_of
from tests.docker_engine import DockerEngine
from tests.rotation.conftest import Replicas

AT = datetime(2026, 3, 1, tzinfo=UTC)
# The shape `GET /containers/{id}/stats?stream=false` answers (cgroup v1, bridge network).
STATS_V1 = {
    "cpu_stats": {
        "cpu_usage": {"total_usage": 300_000_000, "percpu_usage": [1, 2]},
        "system_cpu_usage": 12_002_000_000_000,
        "online_cpus": 2,
    },
    "precpu_stats": {
        "cpu_usage": {"total_usage": 200_000_000},
        "system_cpu_usage": 12_000_000_000_000,
    },
    "memory_stats": {
        "usage": 10_000_000,
        "limit": 1_000_000_000,
        "stats": {"total_inactive_file": 2_000_000},
    },
    "networks": {"eth0": {"rx_bytes": 100, "tx_bytes": 50}, "eth1": {"rx_bytes": 1, "tx_bytes": 2}},
}


def test_a_sample_is_computed_like_docker_stats() -> None:
    sample = sample_of(STATS_V1, AT)
    # 0.1 s of CPU over 2 s of two CPUs' system time: 10 % of one CPU.
    assert sample.cpu_percent == 10.0
    assert sample.memory_bytes == 8_000_000
    assert sample.memory_limit_bytes == 1_000_000_000
    assert (sample.rx_bytes, sample.tx_bytes) == (101, 52)


def test_cgroup_v2_host_network_and_a_first_sample_without_history() -> None:
    stats = {
        "cpu_stats": {"cpu_usage": {"total_usage": 5}, "system_cpu_usage": 10},
        "precpu_stats": {"cpu_usage": {}},
        "memory_stats": {"usage": 4096, "stats": {"inactive_file": 1024}},
    }
    sample = sample_of(stats, AT)
    assert sample.cpu_percent is None
    assert sample.memory_bytes == 3072
    assert (sample.rx_bytes, sample.tx_bytes) == (None, None)
    assert sample_of({}, AT).public() == {
        "at": AT.isoformat(),
        "cpu_percent": None,
        "memory_bytes": None,
        "memory_limit_bytes": None,
        "rx_bytes": None,
        "tx_bytes": None,
    }


async def test_running_replicas_are_sampled_through_the_engine(
    docker_engine: DockerEngine, replicas: Replicas
) -> None:
    names = list(replicas(2))
    docker_engine.docker("start", names[0])
    client = DockerClient(DockerEndpoint(docker_engine.host, "t"))
    telemetry = Telemetry([PoolConfig(name="p", replicas=tuple(names))], client)
    try:
        assert await telemetry.collect() == 1
        sample = telemetry.latest(names[0])
        assert sample is not None
        assert sample.memory_bytes is not None and sample.memory_bytes > 0
        assert sample.cpu_percent is not None
        assert telemetry.latest(names[1]) is None
        docker_engine.docker("stop", "-t", "1", names[0])
        assert await telemetry.collect() == 0
        assert telemetry.series(names[0]) == []  # a stopped replica's numbers go
    finally:
        await client.aclose()
