"""Credential resolution and audit appends.

1. Resolving a credential for a run, as a workflow step does: authorize (scope policy),
   load, unwrap the data key, decrypt the field, write the `credential.use` audit record
   in the same transaction. Baseline, same run, same bytes: a bare `cryptography`
   AES-256-GCM decrypt of the field's ciphertext. Embedded default (SQLite).
2. Audit appends/s on SQLite and on PostgreSQL (a real server started on loopback when
   its binaries are installed): each append its own transaction, from 16 concurrent
   writers, so the database's serialization of the chain is what is measured.

Targets: resolution p99 < 2 ms; >= 2,000 audit appends/s on SQLite.

    .venv/bin/python -m bench.vault [--resolves 3000] [--appends 4000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import uvloop
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from tests.services import PostgresServer, run_postgres

from bastion.audit.chain import Event
from bastion.audit.log import AuditLog
from bastion.crypto.keyring import Keyring
from bastion.db import Database
from bastion.db import migrate as migrations
from bastion.db.tables import Workspace
from bastion.vault.credentials import Vault
from bastion.vault.policy import AccessContext, ScopePolicy
from bastion.vault.secret import Secret
from bench.harness import emit

WRITERS = 16
OWNER = AccessContext("bench", 1, frozenset({"owner"}))
RUN = AccessContext("run:bench", 1, workflow_id="wf-bench")


def percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 4)

    return {"p50_ms": pick(0.5), "p99_ms": pick(0.99), "count": len(ordered)}


async def prepared(url: str) -> tuple[Database, Keyring]:
    await asyncio.to_thread(migrations.upgrade, url)
    db = Database(url)
    async with db.transaction() as session:
        session.add(Workspace(id=1, slug="bench", name="Bench"))
    return db, Keyring(os.urandom(32))


async def resolution(url: str, count: int) -> tuple[dict[str, float], dict[str, float]]:
    """Sequential resolves (one run step at a time); then the bare decrypt, same count."""
    db, keyring = await prepared(url)
    try:
        vault = Vault(db, keyring, AuditLog(db, keyring))
        credential = await vault.create(
            OWNER,
            name="api",
            kind="secret",
            fields={"token": Secret("t" * 40)},
            policy=ScopePolicy(workflows=("wf-bench",)),
        )
        ours = []
        for _ in range(count):
            started = time.perf_counter()
            fields = await vault.resolve(RUN, credential.id)
            ours.append(time.perf_counter() - started)
        assert fields["token"].reveal() == "t" * 40
        key, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
        sealed = AESGCM(key).encrypt(nonce, b"t" * 40, b"aad")
        theirs = []
        for _ in range(count):
            started = time.perf_counter()
            AESGCM(key).decrypt(nonce, sealed, b"aad")
            theirs.append(time.perf_counter() - started)
        return percentiles(ours), percentiles(theirs)
    finally:
        await db.dispose()


async def appends(url: str, count: int) -> dict[str, float]:
    db, keyring = await prepared(url)
    try:
        audit = AuditLog(db, keyring, fail_closed=True)  # a lost record fails the run
        per_writer = count // WRITERS

        async def writer(n: int) -> None:
            for i in range(per_writer):
                await audit.record(Event("bench.append", f"writer:{n}", target=str(i)))

        started = time.perf_counter()
        await asyncio.gather(*(writer(n) for n in range(WRITERS)))
        elapsed = time.perf_counter() - started
        head = await audit.head()
        assert head == per_writer * WRITERS, head
        return {"appends": head, "seconds": round(elapsed, 2), "per_second": round(head / elapsed)}
    finally:
        await db.dispose()


def postgres(stack: ExitStack) -> PostgresServer | None:
    try:
        return stack.enter_context(run_postgres())
    except BaseException as exc:  # no PostgreSQL here (skip/fail come as exceptions)
        print(f"PostgreSQL not measured: {exc}", file=sys.stderr)
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--resolves", type=int, default=3000)
    parser.add_argument("--appends", type=int, default=4000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bastion-bench-vault-") as tmp, ExitStack() as stack:
        sqlite = f"sqlite+aiosqlite:///{Path(tmp) / 'resolve.db'}"
        # uvloop, as `bastion serve` runs.
        resolve, decrypt = uvloop.run(resolution(sqlite, args.resolves))
        audit_sqlite = uvloop.run(
            appends(f"sqlite+aiosqlite:///{Path(tmp) / 'audit.db'}", args.appends)
        )
        server = postgres(stack)
        resolve_pg = audit_pg = None
        if server is not None:
            url = server.create_database("bench_resolve")
            resolve_pg = uvloop.run(resolution(url, args.resolves))[0]
            audit_pg = uvloop.run(appends(server.create_database("bench_audit"), args.appends))
    emit(
        "vault",
        {
            "resolve": resolve,
            "resolve_postgresql": resolve_pg,
            "audit_appends_sqlite": audit_sqlite,
            "audit_appends_postgresql": audit_pg,
        },
        baseline={"aesgcm_decrypt": decrypt},
        ratio=round(resolve["p99_ms"] / decrypt["p99_ms"], 1) if decrypt["p99_ms"] else None,
        target="resolve p99 < 2 ms; >= 2000 audit appends/s on SQLite",
        passed=resolve["p99_ms"] < 2 and audit_sqlite["per_second"] >= 2000,
        ratio_means="resolve p99 / bare AES-GCM decrypt p99",
        writers=WRITERS,
    )


if __name__ == "__main__":
    main()
