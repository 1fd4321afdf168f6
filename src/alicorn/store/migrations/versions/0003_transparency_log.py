"""the transparency log's tables, append-only by trigger

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-22
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from alicorn.chain.translog import create_schema

    create_schema(op.get_bind())


def downgrade() -> None:
    # An append-only log is not taken back by a downgrade: its entries are what others witnessed.
    raise NotImplementedError("the transparency log cannot be removed by a downgrade")
