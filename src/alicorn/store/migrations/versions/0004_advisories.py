"""the advisory store: advisories, and the package names and CVEs they name

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def _key_columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("pk", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("advisory_id", sa.String(256), nullable=False),
        sa.Column("advisory_format", sa.String(32), nullable=False),
    ]


def _advisory_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["advisory_id", "advisory_format"],
                                   ["advisories.id", "advisories.format"], ondelete="CASCADE")


def upgrade() -> None:
    op.create_table(
        "advisories",
        sa.Column("id", sa.String(256), primary_key=True),
        sa.Column("format", sa.String(32), primary_key=True),
        sa.Column("type", sa.String(32), nullable=False, index=True),
        sa.Column("severity", sa.String(32)),
        sa.Column("issued", sa.DateTime),
        sa.Column("updated", sa.DateTime),
        sa.Column("withdrawn", sa.DateTime),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("imported_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "advisory_packages",
        *_key_columns(),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("ecosystem", sa.String(64)),
        sa.Column("name", sa.String(512), nullable=False),
        _advisory_fk(),
    )
    op.create_index("ix_advisory_packages_name", "advisory_packages", ["name", "ecosystem"])
    op.create_index("ix_advisory_packages_advisory", "advisory_packages",
                    ["advisory_id", "advisory_format"])
    op.create_table(
        "advisory_cves",
        *_key_columns(),
        sa.Column("cve", sa.String(64), nullable=False),
        _advisory_fk(),
    )
    op.create_index("ix_advisory_cves_cve", "advisory_cves", ["cve"])
    op.create_index("ix_advisory_cves_advisory", "advisory_cves",
                    ["advisory_id", "advisory_format"])


def downgrade() -> None:
    op.drop_table("advisory_cves")
    op.drop_table("advisory_packages")
    op.drop_table("advisories")
