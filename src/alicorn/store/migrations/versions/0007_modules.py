"""rollout: modules, their replicas, history, events and the operations journal

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02

A *module* is a named service on this host (``alicorn deploy``): its spec, the digest serving
now and the one before.  ``module_replicas`` are its running replicas (each one or two
containers), ``module_history`` the digests it ran and how each operation ended,
``module_events`` what happened during them, and ``module_ops`` the journal: every phase of an
operation is written before it is acted on, so a run killed at any point is finished or rolled
back by the next (``alicorn resume``).
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "modules",
        sa.Column("name", sa.String(63), primary_key=True),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("digest", sa.String(71)),
        sa.Column("image", sa.Text),
        sa.Column("previous_digest", sa.String(71)),
        sa.Column("content_image", sa.Text),
        sa.Column("readiness", sa.JSON),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "module_replicas",
        sa.Column("name", sa.String(160), primary_key=True),
        sa.Column("module", sa.String(63), sa.ForeignKey("modules.name"), nullable=False),
        sa.Column("digest", sa.String(71), nullable=False),
        sa.Column("image", sa.Text, nullable=False),
        sa.Column("host_port", sa.Integer, nullable=False),
        sa.Column("containers", sa.JSON, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("healthy", sa.Boolean),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_module_replicas_module", "module_replicas", ["module"])
    op.create_table(
        "module_history",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("module", sa.String(63), sa.ForeignKey("modules.name"), nullable=False),
        sa.Column("digest", sa.String(256), nullable=False),
        sa.Column("from_digest", sa.String(71)),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("result", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("op_id", sa.String(32)),
    )
    op.create_index("ix_module_history_module", "module_history", ["module"])
    op.create_table(
        "module_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("module", sa.String(63), sa.ForeignKey("modules.name"), nullable=False),
        sa.Column("op_id", sa.String(32)),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_module_events_module", "module_events", ["module"])
    op.create_index("ix_module_events_op_id", "module_events", ["op_id"])
    op.create_table(
        "module_ops",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("module", sa.String(63), sa.ForeignKey("modules.name"), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("from_digest", sa.String(71)),
        sa.Column("to_digest", sa.String(256), nullable=False),
        sa.Column("phase", sa.String(16), nullable=False),
        sa.Column("started_at", sa.DateTime, nullable=False),
        sa.Column("deadline_at", sa.DateTime, nullable=False),
        sa.Column("finished_at", sa.DateTime),
        sa.Column("result", sa.String(16)),
        sa.Column("reason", sa.Text),
        sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("data", sa.JSON),
    )
    op.create_index("ix_module_ops_module", "module_ops", ["module"])


def downgrade() -> None:
    op.drop_index("ix_module_ops_module", "module_ops")
    op.drop_table("module_ops")
    op.drop_index("ix_module_events_op_id", "module_events")
    op.drop_index("ix_module_events_module", "module_events")
    op.drop_table("module_events")
    op.drop_index("ix_module_history_module", "module_history")
    op.drop_table("module_history")
    op.drop_index("ix_module_replicas_module", "module_replicas")
    op.drop_table("module_replicas")
    op.drop_table("modules")
