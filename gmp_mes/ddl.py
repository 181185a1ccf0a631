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


# --- writes outside the application ---------------------------------------------------------
# Identity fields and status columns may be written only by gmp-mes, which audits every
# change in the same transaction (21 CFR 11.10(a), Annex 11 §12.4). The application marks
# its own connections (gmp_mes.db.mark_application_connections): on PostgreSQL a session
# setting, on SQLite an SQL function that exists only inside the application. A change made
# with psql or the sqlite3 shell fails; one made by someone who imitates the mark is still
# found by `gmp-mes audit verify`, which reconciles every record with its audit trail.
WRITER_SETTING = "gmp_mes.writer"
WRITER_FUNCTION = "gmp_mes_writer"


def _ensure_pg_outside_function() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION gmp_refuse_outside_app() RETURNS trigger AS $$
        BEGIN
            RAISE EXCEPTION '% of %(%) outside gmp-mes refused: only the application writes it',
                TG_OP, TG_TABLE_NAME, TG_ARGV[0] USING ERRCODE = 'insufficient_privilege';
        END;
        $$ LANGUAGE plpgsql
        """
    )


def application_writes_only(table: str, columns: tuple[str, ...], *, inserts: bool = True) -> None:
    """Refuse INSERT (with ``inserts``) and UPDATE of ``columns`` on ``table`` from any
    connection that is not the application's."""
    cols = ", ".join(columns)
    if _dialect() == "postgresql":
        _ensure_pg_outside_function()
        outside = f"current_setting('{WRITER_SETTING}', true) IS DISTINCT FROM 'on'"
        op.execute(
            f"CREATE TRIGGER {table}_outside_update BEFORE UPDATE OF {cols} ON {table} "
            f"FOR EACH ROW WHEN ({outside}) EXECUTE FUNCTION gmp_refuse_outside_app('{cols}')"
        )
        if inserts:
            op.execute(
                f"CREATE TRIGGER {table}_outside_insert BEFORE INSERT ON {table} "
                f"FOR EACH ROW WHEN ({outside}) EXECUTE FUNCTION gmp_refuse_outside_app('*')"
            )
        return
    message = f"outside gmp-mes refused: {table}({cols}) changes only through the application"
    op.execute(
        f"CREATE TRIGGER {table}_outside_update BEFORE UPDATE OF {cols} ON {table} "
        f"WHEN {WRITER_FUNCTION}() IS NOT 1 BEGIN SELECT RAISE(ABORT, 'UPDATE {message}'); END"
    )
    if inserts:
        op.execute(
            f"CREATE TRIGGER {table}_outside_insert BEFORE INSERT ON {table} "
            f"WHEN {WRITER_FUNCTION}() IS NOT 1 BEGIN SELECT RAISE(ABORT, 'INSERT {message}'); END"
        )


def drop_application_writes_only(table: str) -> None:
    suffix = f" ON {table}" if _dialect() == "postgresql" else ""
    for operation in ("update", "insert"):
        op.execute(f"DROP TRIGGER IF EXISTS {table}_outside_{operation}{suffix}")
