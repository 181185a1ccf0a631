"""batches: process versions and approvals, batches, step records, deviations

Revision ID: batches_0001
Revises: core_0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import gmp_mes.db
from gmp_mes import ddl

revision = 'batches_0001'
down_revision = 'core_0002'
branch_labels = ('batches',)
depends_on = ('identity_0001',)

GUARDED_APPEND_ONLY = ("process_version", "process_approval", "step_record")
GUARDED_NEVER_DELETE = ("batch", "deviation")


def upgrade() -> None:
    op.create_table('batch_counter',
    sa.Column('prefix', sa.String(length=40), nullable=False),
    sa.Column('last', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('prefix', name=op.f('pk_batch_counter'))
    )
    op.create_table('process_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('definition', sa.Text(), nullable=False),
    sa.Column('source', sa.String(length=500), nullable=False),
    sa.Column('loaded_at', gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_process_version')),
    sa.UniqueConstraint('code', 'version', name='uq_process_version_code')
    )
    op.create_table('batch',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_number', sa.String(length=32), nullable=False),
    sa.Column('coi_id', sa.String(length=20), nullable=False),
    sa.Column('process_version_id', sa.Integer(), nullable=False),
    sa.Column('process_code', sa.String(length=32), nullable=False),
    sa.Column('process_version', sa.Integer(), nullable=False),
    sa.Column('starting_item_id', sa.String(length=12), nullable=False),
    sa.Column('site_code', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=24), nullable=False),
    sa.Column('status_reason', sa.Text(), nullable=True),
    sa.Column('started_at', gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('started_by', sa.Integer(), nullable=False),
    sa.Column('completed_at', gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('in_process', 'on_hold', 'awaiting_release', 'released', 'conditionally_released', 'rejected')", name=op.f('ck_batch_status')),
    sa.ForeignKeyConstraint(['process_version_id'], ['process_version.id'], name=op.f('fk_batch_process_version_id_process_version')),
    sa.ForeignKeyConstraint(['started_by'], ['app_user.id'], name=op.f('fk_batch_started_by_app_user')),
    sa.ForeignKeyConstraint(['starting_item_id'], ['item.item_id'], name=op.f('fk_batch_starting_item_id_item')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch')),
    sa.UniqueConstraint('batch_number', name=op.f('uq_batch_batch_number'))
    )
    with op.batch_alter_table('batch', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_batch_coi_id'), ['coi_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_batch_starting_item_id'), ['starting_item_id'], unique=False)
        batch_op.create_index('uq_batch_active_starting_item', ['starting_item_id'], unique=True, sqlite_where=sa.text("status IN ('in_process', 'on_hold', 'awaiting_release')"), postgresql_where=sa.text("status IN ('in_process', 'on_hold', 'awaiting_release')"))

    op.create_table('process_approval',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('process_version_id', sa.Integer(), nullable=False),
    sa.Column('process_key', sa.String(length=50), nullable=False),
    sa.Column('approved_by', sa.Integer(), nullable=False),
    sa.Column('approved_at', gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('signature_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['approved_by'], ['app_user.id'], name=op.f('fk_process_approval_approved_by_app_user')),
    sa.ForeignKeyConstraint(['process_version_id'], ['process_version.id'], name=op.f('fk_process_approval_process_version_id_process_version')),
    sa.ForeignKeyConstraint(['signature_id'], ['signature.id'], name=op.f('fk_process_approval_signature_id_signature')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_process_approval')),
    sa.UniqueConstraint('process_version_id', name=op.f('uq_process_approval_process_version_id'))
    )
    op.create_table('step_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('batch_number', sa.String(length=32), nullable=False),
    sa.Column('step_code', sa.String(length=40), nullable=False),
    sa.Column('step_index', sa.Integer(), nullable=False),
    sa.Column('occurrence', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('supersedes_id', sa.Integer(), nullable=True),
    sa.Column('correction_reason', sa.Text(), nullable=True),
    sa.Column('values_json', sa.Text(), nullable=False),
    sa.Column('results_json', sa.Text(), nullable=False),
    sa.Column('in_limits', sa.Boolean(), nullable=False),
    sa.Column('created_items', sa.Text(), nullable=True),
    sa.Column('performed_at', gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('recorded_by', sa.Integer(), nullable=False),
    sa.Column('signature_id', sa.Integer(), nullable=False),
    sa.Column('verifier_signature_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_step_record_batch_id_batch')),
    sa.ForeignKeyConstraint(['recorded_by'], ['app_user.id'], name=op.f('fk_step_record_recorded_by_app_user')),
    sa.ForeignKeyConstraint(['signature_id'], ['signature.id'], name=op.f('fk_step_record_signature_id_signature')),
    sa.ForeignKeyConstraint(['supersedes_id'], ['step_record.id'], name=op.f('fk_step_record_supersedes_id_step_record')),
    sa.ForeignKeyConstraint(['verifier_signature_id'], ['signature.id'], name=op.f('fk_step_record_verifier_signature_id_signature')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_step_record')),
    sa.UniqueConstraint('batch_id', 'step_code', 'occurrence', 'version', name='uq_step_record_version')
    )
    with op.batch_alter_table('step_record', schema=None) as batch_op:
        batch_op.create_index('ix_step_record_batch', ['batch_id', 'step_index'], unique=False)

    op.create_table('deviation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('number', sa.String(length=48), nullable=False),
    sa.Column('batch_id', sa.Integer(), nullable=False),
    sa.Column('batch_number', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=10), nullable=False),
    sa.Column('severity', sa.String(length=10), nullable=False),
    sa.Column('status', sa.String(length=10), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('step_record_id', sa.Integer(), nullable=True),
    sa.Column('step_code', sa.String(length=40), nullable=True),
    sa.Column('parameter', sa.String(length=40), nullable=True),
    sa.Column('opened_at', gmp_mes.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('opened_by', sa.Integer(), nullable=False),
    sa.Column('assessment', sa.Text(), nullable=True),
    sa.Column('assessed_at', gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('assessed_by', sa.Integer(), nullable=True),
    sa.Column('assessment_signature_id', sa.Integer(), nullable=True),
    sa.Column('closure', sa.Text(), nullable=True),
    sa.Column('closed_at', gmp_mes.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_by', sa.Integer(), nullable=True),
    sa.Column('closure_signature_id', sa.Integer(), nullable=True),
    sa.CheckConstraint("kind IN ('automatic', 'manual')", name=op.f('ck_deviation_kind')),
    sa.CheckConstraint("severity IN ('minor', 'major', 'critical')", name=op.f('ck_deviation_severity')),
    sa.CheckConstraint("status IN ('open', 'assessed', 'closed')", name=op.f('ck_deviation_status')),
    sa.ForeignKeyConstraint(['assessed_by'], ['app_user.id'], name=op.f('fk_deviation_assessed_by_app_user')),
    sa.ForeignKeyConstraint(['assessment_signature_id'], ['signature.id'], name=op.f('fk_deviation_assessment_signature_id_signature')),
    sa.ForeignKeyConstraint(['batch_id'], ['batch.id'], name=op.f('fk_deviation_batch_id_batch')),
    sa.ForeignKeyConstraint(['closed_by'], ['app_user.id'], name=op.f('fk_deviation_closed_by_app_user')),
    sa.ForeignKeyConstraint(['closure_signature_id'], ['signature.id'], name=op.f('fk_deviation_closure_signature_id_signature')),
    sa.ForeignKeyConstraint(['opened_by'], ['app_user.id'], name=op.f('fk_deviation_opened_by_app_user')),
    sa.ForeignKeyConstraint(['step_record_id'], ['step_record.id'], name=op.f('fk_deviation_step_record_id_step_record')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deviation')),
    sa.UniqueConstraint('number', name=op.f('uq_deviation_number'))
    )
    with op.batch_alter_table('deviation', schema=None) as batch_op:
        batch_op.create_index('ix_deviation_batch_status', ['batch_id', 'status'], unique=False)

    # ### end Alembic commands ###

    # EU GMP Chapter 4 / Annex 11 §9: a loaded master batch record, its approval and
    # every executed step are never overwritten or deleted (corrections are new
    # versions); batches and deviations change status but are never deleted.
    for table in GUARDED_APPEND_ONLY:
        ddl.append_only(table)
    for table in GUARDED_NEVER_DELETE:
        ddl.never_delete(table)


def downgrade() -> None:
    for table in GUARDED_APPEND_ONLY + GUARDED_NEVER_DELETE:
        ddl.drop_guards(table)
    op.drop_table('deviation')
    op.drop_table('step_record')
    op.drop_table('process_approval')
    op.drop_table('batch')
    op.drop_table('process_version')
    op.drop_table('batch_counter')
