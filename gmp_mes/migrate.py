"""Schema migrations (Alembic): the core chain plus one branch per domain.

``gmp-mes init`` upgrades every branch to its head; nothing in production
creates tables any other way.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, MetaData

from gmp_mes import deadline, registry
from gmp_mes.db import Base

CORE_MIGRATIONS = Path(__file__).parent / "migrations"
# The core's modules that declare tables (imported by name: models import the audit trail).
CORE_MODELS = ("gmp_mes.models", "gmp_mes.alerts", "gmp_mes.checkpoints", "gmp_mes.clockwatch")


def target_metadata() -> MetaData:
    """Every table: the core's and those of each installed domain that has migrations."""
    for module in CORE_MODELS:
        importlib.import_module(module)
    for domain in registry.installed_domains():
        if domain.migrations is not None:
            importlib.import_module(f"{domain.name}.models")
    return Base.metadata


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(CORE_MIGRATIONS))
    locations = [str(CORE_MIGRATIONS / "versions")]
    locations += [str(domain.migrations) for domain in registry.installed_domains()
                  if domain.migrations is not None]
    config.set_main_option("version_locations", " ".join(locations))
    config.set_main_option("path_separator", "space")
    return config


def upgrade(engine: Engine) -> None:
    config = alembic_config()
    # A migration may rewrite a large table: no statement deadline (lock_timeout stays,
    # so a migration waiting behind live traffic fails instead of stalling it).
    with deadline.unbounded(), engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql("SET LOCAL statement_timeout = 0")
        config.attributes["connection"] = connection
        command.upgrade(config, "heads")


def current_heads(engine: Engine) -> set[str]:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as connection:
        return set(MigrationContext.configure(connection).get_current_heads())
