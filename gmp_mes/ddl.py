"""Database-level guards used by migrations: the database itself refuses to
overwrite or delete GMP records, whatever the application does (Annex 11 §9)."""

from __future__ import annotations

from alembic import op


def _dialect() -> str:
    return op.get_bind().dialect.name


def _ensure_pg_function() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION gmp_refuse_change() RETURNS trigger AS $$
        BEGIN
            RAISE EXCEPTION '% on % refused: GMP records are never overwritten or deleted',
                TG_OP, TG_TABLE_NAME USING ERRCODE = 'insufficient_privilege';
        END;
        $$ LANGUAGE plpgsql
        """
    )


def refuse(table: str, *operations: str) -> None:
    """Refuse UPDATE and/or DELETE (and TRUNCATE on PostgreSQL) on ``table``."""
    if _dialect() == "postgresql":
        _ensure_pg_function()
        events = " OR ".join(operations)
        op.execute(
            f"CREATE TRIGGER {table}_refuse_change BEFORE {events} ON {table} "
            "FOR EACH ROW EXECUTE FUNCTION gmp_refuse_change()"
        )
        if "DELETE" in operations:
            op.execute(
                f"CREATE TRIGGER {table}_refuse_truncate BEFORE TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION gmp_refuse_change()"
            )
        return
    for operation in operations:
        op.execute(
            f"CREATE TRIGGER {table}_refuse_{operation.lower()} BEFORE {operation} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{operation} on {table} refused: GMP records are "
            "never overwritten or deleted'); END"
        )


def append_only(table: str) -> None:
    refuse(table, "UPDATE", "DELETE")


def never_delete(table: str) -> None:
    refuse(table, "DELETE")


def drop_guards(table: str) -> None:
    if _dialect() == "postgresql":
        op.execute(f"DROP TRIGGER IF EXISTS {table}_refuse_change ON {table}")
        op.execute(f"DROP TRIGGER IF EXISTS {table}_refuse_truncate ON {table}")
        return
    for operation in ("update", "delete"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_refuse_{operation}")
