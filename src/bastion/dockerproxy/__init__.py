"""The docker proxy: the one process with the Docker socket, in front of it a Bearer token,
optional mutual TLS and an allowlist of methods, paths and container names."""
