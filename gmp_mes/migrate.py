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

from gmp_mes import deadline
from gmp_mes.db import Base

CORE_MIGRATIONS = Path(__file__).parent / "migrations"


def target_metadata() -> MetaData:
    from gmp_mes.app import DOMAINS

    importlib.import_module("gmp_mes.models")
    importlib.import_module("gmp_mes.alerts")
    importlib.import_module("gmp_mes.checkpoints")
    importlib.import_module("gmp_mes.clockwatch")
    for name in DOMAINS:
        importlib.import_module(f"{name}.models")
    return Base.metadata


def alembic_config() -> Config:
    from gmp_mes.app import DOMAINS

    config = Config()
    config.set_main_option("script_location", str(CORE_MIGRATIONS))
    locations = [str(CORE_MIGRATIONS / "versions")]
    for name in DOMAINS:
        module = importlib.import_module(name)
        locations.append(str(Path(module.__file__).parent / "migrations"))  # type: ignore[arg-type]
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
