"""advisory events, the rebuilds they plan, watched sources; builds record trigger and checks

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01

An advisory that lands is an *event* (one per advisory id, format and content digest, so the
same advisory imported twice is one event).  Planning an event makes *rebuilds*, one per
image; concurrent events that affect one image share its rebuild (``event_rebuilds``).  A
rebuild names the build it submitted.  ``watch_sources`` keeps what the service last saw of
each repository or feed it polls.  Builds gain ``trigger`` (why the build ran: advisories,
events, the image it replaces), ``base_digest`` (the image a layered build is built on) and
``checks`` (the summary of its tests and security gate).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("trigger", sa.JSON))
        batch.add_column(sa.Column("base_digest", sa.String(71)))
        batch.add_column(sa.Column("checks", sa.JSON))
    op.create_table(
        "events",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("advisory_id", sa.String(256), nullable=False),
        sa.Column("advisory_format", sa.String(32), nullable=False),
        sa.Column("advisory_digest", sa.String(71), nullable=False),
        sa.Column("advisory_type", sa.String(32)),
        sa.Column("severity", sa.String(32)),
        sa.Column("cves", sa.JSON),
        sa.Column("source", sa.Text),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("dry_run", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("advisory_id", "advisory_format", "advisory_digest",
                            name="uq_events_advisory"),
    )
    op.create_index("ix_events_state", "events", ["state"])
    op.create_table(
        "rebuilds",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("image", sa.String(256), nullable=False),
        sa.Column("old_build_id", sa.String(32)),
        sa.Column("old_digest", sa.String(71)),
        sa.Column("parent_id", sa.String(32), sa.ForeignKey("rebuilds.id")),
        sa.Column("build_id", sa.String(32), sa.ForeignKey("builds.id")),
        sa.Column("attempt", sa.Integer, nullable=False, server_default="0"),
        sa.Column("new_digest", sa.String(71)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("tests", sa.String(16)),
        sa.Column("gate", sa.String(16)),
        sa.Column("reason", sa.Text),
        sa.Column("advisories", sa.JSON),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_rebuilds_state", "rebuilds", ["state"])
    op.create_index("ix_rebuilds_image", "rebuilds", ["image"])
    op.create_table(
        "event_rebuilds",
        sa.Column("event_id", sa.String(32), sa.ForeignKey("events.id"), primary_key=True),
        sa.Column("rebuild_id", sa.String(32), sa.ForeignKey("rebuilds.id"), primary_key=True),
    )
    op.create_table(
        "watch_sources",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("url", sa.Text, nullable=False, unique=True),
        sa.Column("origin", sa.String(16), nullable=False),
        sa.Column("digest", sa.String(71)),
        sa.Column("checked_at", sa.DateTime),
        sa.Column("changed_at", sa.DateTime),
        sa.Column("error", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("watch_sources")
    op.drop_table("event_rebuilds")
    op.drop_index("ix_rebuilds_image", "rebuilds")
    op.drop_index("ix_rebuilds_state", "rebuilds")
    op.drop_table("rebuilds")
    op.drop_index("ix_events_state", "events")
    op.drop_table("events")
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("checks")
        batch.drop_column("base_digest")
        batch.drop_column("trigger")
