"""Alembic environment: run with a connection handed over by ``gmp_mes.migrate``."""

from __future__ import annotations

from alembic import context

from gmp_mes.migrate import target_metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=target_metadata(),
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
