"""identity: patients, COI counter, collections, items, genealogy, custody,
bedside verifications, administrations

Revision ID: identity_0001
Revises: core_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = "identity_0001"
down_revision = "core_0002"
branch_labels = ("identity",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "coi_counter",
        sa.Column("prefix", sa.String(length=7), nullable=False),
        sa.Column("last_value", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("prefix", name=op.f("pk_coi_counter")),
    )
    op.create_table(
        "bedside_verification",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(length=40), nullable=True),
        sa.Column("patient_coi_id", sa.String(length=14), nullable=True),
        sa.Column("product_coi_id", sa.String(length=14), nullable=True),
        sa.Column("patient_payload", sa.Text(), nullable=False),
        sa.Column("product_payload", sa.Text(), nullable=False),
        sa.Column("match", sa.Boolean(), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("purpose", sa.String(length=20), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("site_code", sa.String(length=32), nullable=True),
        sa.Column("verified_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_bedside_verification_user_id_app_user")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bedside_verification")),
    )
    with op.batch_alter_table("bedside_verification", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_bedside_verification_item_id"), ["item_id"], unique=False
        )

    op.create_table(
        "patient",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("coi_id", sa.String(length=14), nullable=False),
        sa.Column("given_name", sa.String(length=100), nullable=False),
        sa.Column("family_name", sa.String(length=100), nullable=False),
        sa.Column("date_of_birth", sa.Date(), nullable=False),
        sa.Column("mrn", sa.String(length=40), nullable=False),
        sa.Column("treatment_site", sa.String(length=32), nullable=False),
        sa.Column("wristband_item_id", sa.String(length=12), nullable=True),
        sa.Column("enrolled_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("enrolled_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["enrolled_by"], ["app_user.id"], name=op.f("fk_patient_enrolled_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["treatment_site"], ["site.code"], name=op.f("fk_patient_treatment_site_site")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient")),
        sa.UniqueConstraint("coi_id", name=op.f("uq_patient_coi_id")),
        sa.UniqueConstraint("treatment_site", "mrn", name=op.f("uq_patient_treatment_site_mrn")),
    )
    op.create_table(
        "item",
        sa.Column("item_id", sa.String(length=12), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=24), nullable=False),
        sa.Column("coi_id", sa.String(length=14), nullable=False),
        sa.Column("batch_number", sa.String(length=40), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("location", sa.String(length=100), nullable=True),
        sa.Column("custodian", sa.Integer(), nullable=True),
        sa.Column("ship_to", sa.String(length=32), nullable=True),
        sa.Column("expires_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expiry_warnings", sa.String(length=200), nullable=True),
        sa.Column("post_thaw_window", sa.String(length=40), nullable=True),
        sa.Column("thawed_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('starting_material', 'intermediate', 'final_product', 'qc_sample', "
            "'retention_sample', 'wristband')",
            name=op.f("ck_item_kind"),
        ),
        sa.CheckConstraint(
            "status IN ('quarantine', 'released', 'conditionally_released', 'rejected', "
            "'shipped', 'received', 'thawed', 'administered', 'expired', 'destroyed', "
            "'blocked', 'in_process', 'consumed', 'available')",
            name=op.f("ck_item_status"),
        ),
        sa.ForeignKeyConstraint(
            ["coi_id"], ["patient.coi_id"], name=op.f("fk_item_coi_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["custodian"], ["app_user.id"], name=op.f("fk_item_custodian_app_user")
        ),
        sa.ForeignKeyConstraint(["site_code"], ["site.code"], name=op.f("fk_item_site_code_site")),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_item")),
    )
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_item_batch_number"), ["batch_number"], unique=False)
        batch_op.create_index(batch_op.f("ix_item_coi_id"), ["coi_id"], unique=False)
        batch_op.create_index("ix_item_status_expires_at", ["status", "expires_at"], unique=False)

    op.create_table(
        "administration",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(length=12), nullable=False),
        sa.Column("coi_id", sa.String(length=14), nullable=False),
        sa.Column("verification_id", sa.Integer(), nullable=False),
        sa.Column("signature_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("administered_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["coi_id"], ["patient.coi_id"], name=op.f("fk_administration_coi_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.item_id"], name=op.f("fk_administration_item_id_item")
        ),
        sa.ForeignKeyConstraint(
            ["signature_id"],
            ["signature.id"],
            name=op.f("fk_administration_signature_id_signature"),
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["app_user.id"], name=op.f("fk_administration_user_id_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["verification_id"],
            ["bedside_verification.id"],
            name=op.f("fk_administration_verification_id_bedside_verification"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_administration")),
        sa.UniqueConstraint("item_id", name=op.f("uq_administration_item_id")),
    )
    op.create_table(
        "collection",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("coi_id", sa.String(length=14), nullable=False),
        sa.Column("collected_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("entered_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("site_code", sa.String(length=32), nullable=False),
        sa.Column("volume_ml", sa.Numeric(precision=8, scale=1, asdecimal=False), nullable=False),
        sa.Column("din", sa.String(length=14), nullable=True),
        sa.Column("item_id", sa.String(length=12), nullable=False),
        sa.Column("recorded_by", sa.Integer(), nullable=True),
        sa.CheckConstraint("volume_ml > 0", name=op.f("ck_collection_volume_positive")),
        sa.ForeignKeyConstraint(
            ["coi_id"], ["patient.coi_id"], name=op.f("fk_collection_coi_id_patient")
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.item_id"], name=op.f("fk_collection_item_id_item")
        ),
        sa.ForeignKeyConstraint(
            ["recorded_by"], ["app_user.id"], name=op.f("fk_collection_recorded_by_app_user")
        ),
        sa.ForeignKeyConstraint(
            ["site_code"], ["site.code"], name=op.f("fk_collection_site_code_site")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_collection")),
        sa.UniqueConstraint("din", name=op.f("uq_collection_din")),
        sa.UniqueConstraint("item_id", name=op.f("uq_collection_item_id")),
    )
    with op.batch_alter_table("collection", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_collection_coi_id"), ["coi_id"], unique=False)

    op.create_table(
        "custody_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(length=12), nullable=False),
        sa.Column("action", sa.String(length=12), nullable=False),
        sa.Column("site_code", sa.String(length=32), nullable=True),
        sa.Column("location", sa.String(length=100), nullable=True),
        sa.Column("destination_site", sa.String(length=32), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("workstation", sa.String(length=100), nullable=True),
        sa.Column("occurred_at", gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("flagged", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "action IN ('create', 'handover', 'move', 'ship', 'receive', 'thaw', 'scan', "
            "'administer')",
            name=op.f("ck_custody_event_action"),
        ),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.item_id"], name=op.f("fk_custody_event_item_id_item")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_custody_event")),
    )
    with op.batch_alter_table("custody_event", schema=None) as batch_op:
        batch_op.create_index("ix_custody_event_item", ["item_id", "id"], unique=False)

    op.create_table(
        "item_parent",
        sa.Column("item_id", sa.String(length=12), nullable=False),
        sa.Column("parent_id", sa.String(length=12), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["item.item_id"], name=op.f("fk_item_parent_item_id_item")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["item.item_id"], name=op.f("fk_item_parent_parent_id_item")
        ),
        sa.PrimaryKeyConstraint("item_id", "parent_id", name=op.f("pk_item_parent")),
    )
    with op.batch_alter_table("item_parent", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_item_parent_parent_id"), ["parent_id"], unique=False)

    _guards()


APPEND_ONLY = ("custody_event", "bedside_verification", "administration", "item_parent")
NEVER_DELETE = ("patient", "item", "collection")


def _guards() -> None:
    """Annex 11 §9 / the autologous rule, enforced by the database itself."""
    for table in APPEND_ONLY:
        ddl.append_only(table)
    for table in NEVER_DELETE:
        ddl.never_delete(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE OR REPLACE FUNCTION identity_item_parent_same_coi() RETURNS trigger AS $$
            BEGIN
                IF (SELECT coi_id FROM item WHERE item_id = NEW.parent_id)
                   IS DISTINCT FROM (SELECT coi_id FROM item WHERE item_id = NEW.item_id) THEN
                    RAISE EXCEPTION 'coi_mismatch: item % cannot have parent % of another COI',
                        NEW.item_id, NEW.parent_id USING ERRCODE = 'check_violation';
                END IF;
                RETURN NEW;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER item_parent_same_coi BEFORE INSERT ON item_parent "
            "FOR EACH ROW EXECUTE FUNCTION identity_item_parent_same_coi()"
        )
        op.execute(
            """
            CREATE OR REPLACE FUNCTION identity_item_coi_fixed() RETURNS trigger AS $$
            BEGIN
                IF NEW.coi_id IS DISTINCT FROM OLD.coi_id THEN
                    RAISE EXCEPTION 'coi_mismatch: the COI of item % never changes',
                        OLD.item_id USING ERRCODE = 'check_violation';
                END IF;
                RETURN NEW;
            END;
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER item_coi_fixed BEFORE UPDATE ON item "
            "FOR EACH ROW EXECUTE FUNCTION identity_item_coi_fixed()"
        )
        return
    op.execute(
        "CREATE TRIGGER item_parent_same_coi BEFORE INSERT ON item_parent "
        "WHEN (SELECT coi_id FROM item WHERE item_id = NEW.parent_id) "
        "IS NOT (SELECT coi_id FROM item WHERE item_id = NEW.item_id) "
        "BEGIN SELECT RAISE(ABORT, 'coi_mismatch: an item cannot have a parent of another COI'); "
        "END"
    )
    op.execute(
        "CREATE TRIGGER item_coi_fixed BEFORE UPDATE OF coi_id ON item "
        "WHEN NEW.coi_id IS NOT OLD.coi_id "
        "BEGIN SELECT RAISE(ABORT, 'coi_mismatch: the COI of an item never changes'); END"
    )


def downgrade() -> None:
    for table in APPEND_ONLY + NEVER_DELETE:
        ddl.drop_guards(table)
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS item_parent_same_coi ON item_parent")
        op.execute("DROP TRIGGER IF EXISTS item_coi_fixed ON item")
        op.execute("DROP FUNCTION IF EXISTS identity_item_parent_same_coi()")
        op.execute("DROP FUNCTION IF EXISTS identity_item_coi_fixed()")
    else:
        op.execute("DROP TRIGGER IF EXISTS item_parent_same_coi")
        op.execute("DROP TRIGGER IF EXISTS item_coi_fixed")

    with op.batch_alter_table("item_parent", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_item_parent_parent_id"))

    op.drop_table("item_parent")
    with op.batch_alter_table("custody_event", schema=None) as batch_op:
        batch_op.drop_index("ix_custody_event_item")

    op.drop_table("custody_event")
    with op.batch_alter_table("collection", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_collection_coi_id"))

    op.drop_table("collection")
    op.drop_table("administration")
    with op.batch_alter_table("item", schema=None) as batch_op:
        batch_op.drop_index("ix_item_status_expires_at")
        batch_op.drop_index(batch_op.f("ix_item_coi_id"))
        batch_op.drop_index(batch_op.f("ix_item_batch_number"))

    op.drop_table("item")
    op.drop_table("patient")
    with op.batch_alter_table("bedside_verification", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bedside_verification_item_id"))

    op.drop_table("bedside_verification")
    op.drop_table("coi_counter")
