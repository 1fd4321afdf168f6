"""Scale-out: attempts and heartbeats of builds, their files in the database, public keys

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02

A build now records which attempt of its submission it is (``attempt``, ``retry_of``; the
failed attempt names its successor in ``retried_as``), the queue it was sent to and when
(``queue``, ``dispatched_at``, ``dispatches``), and the worker's heartbeat while it runs
(``heartbeat_at``): a running build whose heartbeat is older than the lease is the reaper's.

``build_files`` holds a build's files (logs, progress, SBOMs, provenance, record) when workers
run on other hosts than the readers: a worker writes them while the build runs (``sealed``
false, replaced as they grow) and seals each at the end with its SHA-256; triggers refuse any
UPDATE or DELETE of a sealed row, as for the transparency log.

``signing_keys`` holds the public half of every builder's signing keys (``kind`` "ecdsa" for
the provenance and log heads, "gpg" for podman's simple signing), so that hosts holding no
private key (the API host) can verify what any builder signed.
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_SEALED = "the sealed files of a build cannot change"


def upgrade() -> None:
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("attempt", sa.Integer, nullable=False, server_default="1"))
        batch.add_column(sa.Column("retry_of", sa.String(32)))
        batch.add_column(sa.Column("retried_as", sa.String(32)))
        batch.add_column(sa.Column("queue", sa.String(64)))
        batch.add_column(sa.Column("dispatched_at", sa.DateTime))
        batch.add_column(sa.Column("dispatches", sa.Integer, nullable=False,
                                   server_default="0"))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime))
    op.create_table(
        "build_files",
        sa.Column("build_id", sa.String(32), sa.ForeignKey("builds.id"), primary_key=True),
        sa.Column("name", sa.String(128), primary_key=True),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("sha256", sa.String(71)),          # sha256:..., set when sealed
        sa.Column("sealed", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "signing_keys",
        sa.Column("key_id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(8), nullable=False),       # ecdsa | gpg
        sa.Column("public", sa.Text, nullable=False),          # PEM, or an armored GPG key
        sa.Column("created", sa.BigInteger, nullable=False),
        sa.Column("retired", sa.BigInteger),
        sa.Column("host", sa.String(256), nullable=False),     # the builder that holds it
        sa.Column("published_at", sa.DateTime, nullable=False),
    )
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("CREATE TRIGGER build_files_sealed_update BEFORE UPDATE ON build_files "
                   f"WHEN OLD.sealed BEGIN SELECT RAISE(ABORT, '{_SEALED}'); END")
        op.execute("CREATE TRIGGER build_files_sealed_delete BEFORE DELETE ON build_files "
                   f"WHEN OLD.sealed BEGIN SELECT RAISE(ABORT, '{_SEALED}'); END")
    elif bind.dialect.name == "postgresql":
        op.execute("CREATE FUNCTION build_files_sealed() RETURNS trigger AS $$ BEGIN "
                   f"IF OLD.sealed THEN RAISE EXCEPTION '{_SEALED}'; END IF; "
                   "IF TG_OP = 'DELETE' THEN RETURN OLD; END IF; RETURN NEW; END $$ "
                   "LANGUAGE plpgsql")
        op.execute("CREATE TRIGGER build_files_sealed BEFORE UPDATE OR DELETE ON build_files "
                   "FOR EACH ROW EXECUTE FUNCTION build_files_sealed()")


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS build_files_sealed ON build_files")
        op.execute("DROP FUNCTION IF EXISTS build_files_sealed()")
    op.drop_table("signing_keys")
    op.drop_table("build_files")
    with op.batch_alter_table("builds") as batch:
        for name in ("heartbeat_at", "dispatches", "dispatched_at", "queue", "retried_as",
                     "retry_of", "attempt"):
            batch.drop_column(name)
