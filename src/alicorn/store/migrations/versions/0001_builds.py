"""builds and their packages

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "builds",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("state", sa.String(16), nullable=False, index=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("started_at", sa.DateTime),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("argv", sa.JSON, nullable=False),
        sa.Column("submitter", sa.String(128), nullable=False),
        sa.Column("source_kind", sa.String(8), nullable=False),
        sa.Column("source_url", sa.Text),
        sa.Column("source_ref", sa.String(256)),
        sa.Column("source_commit", sa.String(64)),
        sa.Column("recipe_path", sa.Text, nullable=False),
        sa.Column("recipe_name", sa.String(128)),
        sa.Column("recipe_digest", sa.String(71)),
        sa.Column("recipe_content", sa.Text),
        sa.Column("options", sa.JSON, nullable=False),
        sa.Column("input_key", sa.String(71), index=True),
        sa.Column("inputs", sa.JSON),
        sa.Column("digest", sa.String(71), index=True),
        sa.Column("image_ref", sa.Text),
        sa.Column("outputs", sa.JSON),
        sa.Column("cached_from", sa.String(32)),
        sa.Column("error", sa.Text),
        sa.Column("worker", sa.String(128)),
        sa.Column("log_digest", sa.String(71)),
        sa.Column("published", sa.Boolean, nullable=False),
    )
    op.create_table(
        "build_packages",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("build_id", sa.String(32), sa.ForeignKey("builds.id"), nullable=False,
                  index=True),
        sa.Column("type", sa.String(16), nullable=False),
        sa.Column("name", sa.String(256), nullable=False, index=True),
        sa.Column("version", sa.String(256), nullable=False),
        sa.Column("arch", sa.String(32), nullable=False),
        sa.Column("source", sa.String(256)),
        sa.Column("checksum", sa.String(71)),
        sa.Column("purl", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("build_packages")
    op.drop_table("builds")
