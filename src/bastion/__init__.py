"""Bastion: a self-hosted, security-hardened orchestrator."""
