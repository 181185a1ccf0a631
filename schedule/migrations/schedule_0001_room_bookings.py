"""schedule: room bookings (issue 19, SPEC §13)

Revision ID: schedule_0001
Revises: rooms_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "schedule_0001"
# From rooms' revision rather than the core's: a branch whose parent is also the parent of a
# revision it depends on leaves Alembic's head bookkeeping without that parent (KeyError).
down_revision = "rooms_0001"
branch_labels = ("schedule",)
depends_on = ("identity_audit_trust", "batches_0005")

# Two booked windows of one room never overlap (half-open: one may end when the next
# starts). The service locks the room row and checks first; these refuse what slips by.
OVERLAP_MESSAGE = "room_booked: the manufacturing window of the room overlaps another booking"


def upgrade() -> None:
    op.create_table(
        "room_booking",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("coi_id", sa.String(length=14), nullable=False),
        sa.Column("process_code", sa.String(length=32), nullable=False),
        sa.Column("process_version", sa.Integer(), nullable=False),
        sa.Column("room_code", sa.String(length=40), nullable=False),
        sa.Column("apheresis_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("planned_infusion_at", gmp_mes.db.UTCDateTime(timezone=True),
                  nullable=False),
        sa.Column("manufacturing_start", gmp_mes.db.UTCDateTime(timezone=True),
                  nullable=False),
        sa.Column("manufacturing_end", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("release_expected", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("product_expires_at", gmp_mes.db.UTCDateTime(timezone=True),
                  nullable=False),
        sa.Column("thaw_from", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("warnings", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("batch_number", sa.String(length=32), nullable=True),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("booked_by", sa.Integer(), nullable=False),
        sa.Column("booked_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("cancelled_by", sa.Integer(), nullable=True),
        sa.Column("cancelled_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("(status = 'cancelled') = (cancelled_at IS NOT NULL)",
                           name=op.f("ck_room_booking_cancelled")),
        sa.CheckConstraint("manufacturing_end > manufacturing_start",
                           name=op.f("ck_room_booking_window")),
        sa.CheckConstraint("manufacturing_start >= apheresis_at",
                           name=op.f("ck_room_booking_start_after_apheresis")),
        sa.CheckConstraint("planned_infusion_at > apheresis_at",
                           name=op.f("ck_room_booking_infusion_after_apheresis")),
        sa.CheckConstraint("status IN ('booked', 'cancelled')",
                           name=op.f("ck_room_booking_status")),
        sa.ForeignKeyConstraint(["batch_number"], ["batch.batch_number"],
                                name=op.f("fk_room_booking_batch_number_batch")),
        sa.ForeignKeyConstraint(["booked_by"], ["app_user.id"],
                                name=op.f("fk_room_booking_booked_by_app_user")),
        sa.ForeignKeyConstraint(["cancelled_by"], ["app_user.id"],
                                name=op.f("fk_room_booking_cancelled_by_app_user")),
        sa.ForeignKeyConstraint(["coi_id"], ["patient.coi_id"],
                                name=op.f("fk_room_booking_coi_id_patient")),
        sa.ForeignKeyConstraint(["room_code"], ["room.code"],
                                name=op.f("fk_room_booking_room_code_room")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_room_booking")),
    )
    with op.batch_alter_table("room_booking", schema=None) as batch_op:
        batch_op.create_index("ix_room_booking_batch", ["batch_number"], unique=False)
        batch_op.create_index("ix_room_booking_coi", ["coi_id"], unique=False)
        batch_op.create_index("ix_room_booking_room_start",
                              ["room_code", "manufacturing_start"], unique=False)
    _refuse_overlaps()
    ddl.never_delete("room_booking")


def _refuse_overlaps() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # btree_gist: equality on the room code inside a GiST exclusion constraint (a
        # trusted extension: the database owner may create it).
        op.execute("CREATE EXTENSION IF NOT EXISTS btree_gist")
        op.execute(
            "ALTER TABLE room_booking ADD CONSTRAINT ex_room_booking_overlap EXCLUDE USING "
            "gist (room_code WITH =, tstzrange(manufacturing_start, manufacturing_end) "
            "WITH &&) WHERE (status = 'booked')")
        return
    for event, columns in (("INSERT", ""), ("UPDATE", " OF status, room_code, "
                                            "manufacturing_start, manufacturing_end")):
        op.execute(
            f"CREATE TRIGGER room_booking_overlap_{event.lower()} BEFORE {event}{columns} "
            "ON room_booking FOR EACH ROW WHEN NEW.status = 'booked' BEGIN "
            f"SELECT RAISE(ABORT, '{OVERLAP_MESSAGE}') WHERE EXISTS (SELECT 1 FROM "
            "room_booking b WHERE b.room_code = NEW.room_code AND b.status = 'booked' "
            "AND b.id IS NOT NEW.id AND b.manufacturing_start < NEW.manufacturing_end "
            "AND b.manufacturing_end > NEW.manufacturing_start); END")


def downgrade() -> None:
    ddl.drop_guards("room_booking")
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS room_booking_overlap_insert")
        op.execute("DROP TRIGGER IF EXISTS room_booking_overlap_update")
    op.drop_table("room_booking")
