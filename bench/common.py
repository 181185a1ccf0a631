"""Shared pieces of the benchmarks: the result record and temporary databases."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from gmp_mes import migrate
from gmp_mes.db import Database, throwaway_engine

POSTGRES_URL = os.environ.get(
    "GMP_MES_BENCH_POSTGRES_URL",
    os.environ.get(
        "GMP_MES_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
)


class BenchUnavailable(Exception):
    """A benchmark cannot run here (a missing tool); the others still run."""


@dataclass
class Result:
    name: str
    figure: float
    unit: str
    baseline: float
    baseline_name: str
    target: str
    met: bool
    notes: str = ""

    @property
    def ratio(self) -> float:
        return self.figure / self.baseline if self.baseline else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": round(self.ratio, 4)}


def postgres_available() -> bool:
    try:
        with throwaway_engine(POSTGRES_URL).connect() as c:
            c.execute(text("SELECT 1"))
        return True
    except Exception:  # any failure means "skip the PostgreSQL variant", reported by caller
        return False


@contextmanager
def scratch_database(backend: str) -> Iterator[Database]:
    """A freshly migrated database that disappears afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            db = Database(f"sqlite:///{folder}/bench.sqlite")
            migrate.upgrade(db.engine)
            try:
                yield db
            finally:
                db.dispose()
        return
    name = f"gmp_bench_{uuid.uuid4().hex[:8]}"
    admin = throwaway_engine(POSTGRES_URL).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    db = Database(url)
    try:
        migrate.upgrade(db.engine)
        yield db
    finally:
        db.dispose()
        with admin.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
