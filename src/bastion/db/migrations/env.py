from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, text

from bastion.db.tables import Base

# Several `bastion serve` processes may start together against one PostgreSQL; the
# advisory lock makes them migrate one after the other instead of racing on DDL.
_MIGRATION_LOCK_ID = 0x62617374  # "bast"


def run_migrations_online() -> None:
    url = context.config.attributes["url"]
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            postgres = connection.dialect.name == "postgresql"
            if postgres:
                connection.execute(text(f"SELECT pg_advisory_lock({_MIGRATION_LOCK_ID})"))
                connection.commit()
            try:
                context.configure(
                    connection=connection,
                    target_metadata=Base.metadata,
                    render_as_batch=connection.dialect.name == "sqlite",
                )
                with context.begin_transaction():
                    context.run_migrations()
            finally:
                if postgres:
                    connection.execute(text(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK_ID})"))
                    connection.commit()
    finally:
        engine.dispose()


run_migrations_online()
