"""logistics: shipments, their items, receipts, temperature logs and readings (SPEC §14)

Revision ID: logistics_0001
Revises: core_0005_decimal
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "logistics_0001"
down_revision = "core_0005_decimal"
branch_labels = ("logistics",)
# Shipment items name identity's items: identity's head first.
depends_on = ("identity_audit_trust",)

# EU GMP Part IV 6.5, EU GDP 9.2: what travelled, its readings, every receipt and the
# log are kept as recorded; a shipment and its item list change (receipt, disposition)
# but are never deleted.
APPEND_ONLY = ("temperature_reading", "temperature_log", "shipment_receipt")
NEVER_DELETE = ("shipment", "shipment_item")


def upgrade() -> None:
    op.create_table(
        "shipment_counter",
        sa.Column("name", sa.String(length=20), nullable=False),
        sa.Column("last_value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_shipment_counter")),
    )
    op.execute("INSERT INTO shipment_counter (name, last_value) VALUES ('shipment', 0)")
    op.create_table(
        "shipment",
        sa.Column("shipment_id", sa.String(length=16), nullable=False),
        sa.Column("from_site", sa.String(length=32), nullable=False),
        sa.Column("to_site", sa.String(length=32), nullable=False),
        sa.Column("min_c", sa.Float(), nullable=False),
        sa.Column("max_c", sa.Float(), nullable=False),
        sa.Column("shipper_id", sa.String(length=60), nullable=True),
        sa.Column("logger_id", sa.String(length=60), nullable=True),
        sa.Column("courier", sa.String(length=100), nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("shipped_by", sa.Integer(), nullable=False),
        sa.Column("shipped_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("hold", sa.String(length=24), nullable=True),
        sa.Column("held_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decision", sa.String(length=10), nullable=True),
        sa.Column("justification", sa.Text(), nullable=True),
        sa.Column("decided_by", sa.Integer(), nullable=True),
        sa.Column("decided_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("decision_signature_id", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "decision IS NULL OR decision <> 'accepted' OR justification IS NOT NULL",
            name=op.f("ck_shipment_accept_justified"),
        ),
        sa.CheckConstraint(
            "decision IS NULL OR decision IN ('accepted', 'rejected')",
            name=op.f("ck_shipment_decision"),
        ),
        sa.CheckConstraint(
            "hold IS NULL OR hold IN ('temperature_excursion', 'temperature_unknown')",
            name=op.f("ck_shipment_hold"),
        ),
        sa.CheckConstraint(
            "status IN ('in_transit', 'partially_received', 'received')",
            name=op.f("ck_shipment_status"),
        ),
        sa.CheckConstraint(
            "decision IS NULL OR hold IS NOT NULL", name=op.f("ck_shipment_decision_needs_hold")
        ),
        sa.CheckConstraint("from_site <> to_site", name=op.f("ck_shipment_other_site")),
        sa.CheckConstraint("min_c < max_c", name=op.f("ck_shipment_condition_range")),
        sa.ForeignKeyConstraint(
            ["decided_by"], ["app_user.id"], name=op.f("fk_shipment_decided_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["decision_signature_id"],
            ["signature.id"],
            name=op.f("fk_shipment_decision_signature_id_signature"),
        ),
        sa.ForeignKeyConstraint(
            ["from_site"], ["site.code"], name=op.f("fk_shipment_from_site_site")
        ),
        sa.ForeignKeyConstraint(
            ["shipped_by"], ["app_user.id"], name=op.f("fk_shipment_shipped_by_app_user")
        ),
        sa.ForeignKeyConstraint(["to_site"], ["site.code"], name=op.f("fk_shipment_to_site_site")),
        sa.PrimaryKeyConstraint("shipment_id", name=op.f("pk_shipment")),
    )
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.create_index("ix_shipment_open_hold", ["hold", "decision"], unique=False)
        batch_op.create_index(batch_op.f("ix_shipment_to_site"), ["to_site"], unique=False)

    op.create_table(
        "shipment_item",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shipment_id", sa.String(length=16), nullable=False),
        sa.Column("item_id", sa.String(length=12), nullable=False),
        sa.Column("received_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("receipt_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.item_id"], name=op.f("fk_shipment_item_item_id_item")
        ),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipment.shipment_id"],
            name=op.f("fk_shipment_item_shipment_id_shipment"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shipment_item")),
        sa.UniqueConstraint(
            "shipment_id", "item_id", name=op.f("uq_shipment_item_shipment_id_item_id")
        ),
    )
    with op.batch_alter_table("shipment_item", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_shipment_item_item_id"), ["item_id"], unique=False)

    op.create_table(
        "shipment_receipt",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("shipment_id", sa.String(length=16), nullable=False),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("received_by", sa.Integer(), nullable=False),
        sa.Column("received_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("received", sa.Text(), nullable=False),
        sa.Column("missing", sa.Text(), nullable=False),
        sa.Column("unexpected", sa.Text(), nullable=False),
        sa.Column("hold", sa.String(length=24), nullable=True),
        sa.ForeignKeyConstraint(
            ["received_by"], ["app_user.id"], name=op.f("fk_shipment_receipt_received_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipment.shipment_id"],
            name=op.f("fk_shipment_receipt_shipment_id_shipment"),
        ),
        sa.ForeignKeyConstraint(
            ["site_code"], ["site.code"], name=op.f("fk_shipment_receipt_site_code_site")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_shipment_receipt")),
    )
    with op.batch_alter_table("shipment_receipt", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_shipment_receipt_shipment_id"), ["shipment_id"], unique=False
        )

    op.create_table(
        "temperature_log",
        sa.Column("shipment_id", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=10), nullable=False),
        sa.Column("file_sha256", sa.String(length=64), nullable=False),
        sa.Column("readings", sa.Integer(), nullable=False),
        sa.Column("first_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("min_c", sa.Float(), nullable=False),
        sa.Column("max_c", sa.Float(), nullable=False),
        sa.Column("interval_s", sa.Float(), nullable=True),
        sa.Column("gap_after_s", sa.Float(), nullable=True),
        sa.Column("excursions", sa.Text(), nullable=False),
        sa.Column("gaps", sa.Text(), nullable=False),
        sa.Column("uploaded_by", sa.Integer(), nullable=False),
        sa.Column("uploaded_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("readings > 0", name=op.f("ck_temperature_log_readings_positive")),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipment.shipment_id"],
            name=op.f("fk_temperature_log_shipment_id_shipment"),
        ),
        sa.ForeignKeyConstraint(
            ["uploaded_by"], ["app_user.id"], name=op.f("fk_temperature_log_uploaded_by_app_user")
        ),
        sa.PrimaryKeyConstraint("shipment_id", name=op.f("pk_temperature_log")),
    )
    op.create_table(
        "temperature_reading",
        sa.Column("shipment_id", sa.String(length=16), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("c", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["shipment_id"],
            ["shipment.shipment_id"],
            name=op.f("fk_temperature_reading_shipment_id_shipment"),
        ),
        sa.PrimaryKeyConstraint("shipment_id", "seq", name=op.f("pk_temperature_reading")),
    )
    for table in APPEND_ONLY:
        ddl.append_only(table)
    for table in NEVER_DELETE:
        ddl.never_delete(table)


def downgrade() -> None:
    for table in APPEND_ONLY + NEVER_DELETE:
        ddl.drop_guards(table)
    op.drop_table("temperature_reading")
    op.drop_table("temperature_log")
    with op.batch_alter_table("shipment_receipt", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipment_receipt_shipment_id"))

    op.drop_table("shipment_receipt")
    with op.batch_alter_table("shipment_item", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipment_item_item_id"))

    op.drop_table("shipment_item")
    with op.batch_alter_table("shipment", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_shipment_to_site"))
        batch_op.drop_index("ix_shipment_open_hold")

    op.drop_table("shipment")
    op.drop_table("shipment_counter")
