"""processes: adopt process_version and process_approval

The two tables were created (and guarded append-only) by ``batches_0001`` before process
master data had a package of its own (issue 16). Revisions are never rewritten, so this
branch starts by adopting them: nothing to do on any database, and every later change of
the process tables is a revision of this branch.

Revision ID: processes_0001
Revises: core_0002
"""

from __future__ import annotations

revision = "processes_0001"
down_revision = "core_0002"
branch_labels = ("processes",)
depends_on = ("batches_0001",)


def upgrade() -> None:
    """The tables exist: batches_0001, which this revision depends on, created them."""


def downgrade() -> None:
    """Nothing was created here."""
