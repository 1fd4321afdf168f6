"""where each build's sealed record and its log entries are

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("record_digest", sa.String(71)))
        batch.add_column(sa.Column("record_index", sa.Integer))
        batch.add_column(sa.Column("inputs_index", sa.Integer))
        batch.add_column(sa.Column("provenance_digest", sa.String(71)))


def downgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("provenance_digest")
        batch.drop_column("inputs_index")
        batch.drop_column("record_index")
        batch.drop_column("record_digest")
