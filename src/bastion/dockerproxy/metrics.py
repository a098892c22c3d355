"""The proxy's Prometheus metrics, in a registry of its own (served at its `/metrics`)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest


class ProxyMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.refused = Counter(
            "bastion_docker_proxy_refused",
            "Requests the docker proxy refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.forwarded = Counter(
            "bastion_docker_proxy_forwarded",
            "Requests the docker proxy forwarded to Docker, by endpoint",
            ["endpoint"],
            registry=self.registry,
        )
        self.failed = Counter(
            "bastion_docker_proxy_failed",
            "Requests the docker proxy could not complete, by reason",
            ["reason"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
