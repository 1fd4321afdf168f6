"""HTTP API: tokens, the audit trail of every write, and cancel requests on builds

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02

``api_tokens`` holds only a token's SHA-256 (the secret is shown once, when it is made).
``api_audit`` is append-only: triggers refuse UPDATE and DELETE, as for the transparency log.
A build's ``cancel_requested_at``/``cancel_requested_by`` are written by whoever asks; the
worker running it stops at once and records the build as failed ("cancelled by ...").
``submitted_token`` names the token (its id) that submitted a build through the API: a
submitter may cancel only its own builds.  The index on (created_at, id) serves the
newest-first pages of builds without sorting the table.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("revoked_at", sa.DateTime),
        sa.Column("last_used_at", sa.DateTime),
    )
    op.create_table(
        "api_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime, nullable=False, index=True),
        sa.Column("actor", sa.String(128), nullable=False),      # token name, or "anonymous"
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),      # build.submit, build.cancel, ...
        sa.Column("target", sa.String(256)),                     # build id, token name, ...
        sa.Column("outcome", sa.String(16), nullable=False),     # ok | refused | failed
        sa.Column("status", sa.Integer, nullable=False),         # the HTTP status answered
        sa.Column("detail", sa.Text),
        sa.Column("remote", sa.String(64)),
    )
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        for what in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER api_audit_no_{what.lower()} BEFORE {what} ON api_audit "
                       f"BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END")
    elif bind.dialect.name == "postgresql":
        op.execute("CREATE FUNCTION api_audit_append_only() RETURNS trigger AS $$ BEGIN "
                   "RAISE EXCEPTION 'the audit trail is append-only'; END $$ LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER api_audit_append_only BEFORE UPDATE OR DELETE ON api_audit "
                   "FOR EACH ROW EXECUTE FUNCTION api_audit_append_only()")
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("submitted_token", sa.String(16)))
        batch.add_column(sa.Column("cancel_requested_at", sa.DateTime))
        batch.add_column(sa.Column("cancel_requested_by", sa.String(128)))
    op.create_index("ix_builds_created_at_id", "builds", ["created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_builds_created_at_id", table_name="builds")
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("cancel_requested_by")
        batch.drop_column("cancel_requested_at")
        batch.drop_column("submitted_token")
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS api_audit_append_only ON api_audit")
        op.execute("DROP FUNCTION IF EXISTS api_audit_append_only()")
    op.drop_table("api_audit")
    op.drop_table("api_tokens")
