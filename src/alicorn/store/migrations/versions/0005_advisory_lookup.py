"""advisory_packages.lookup: the key an installed package looks an advisory up by

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01

A scan reads only the advisories that name its packages.  The names as feeds write them are
not what installed packages are matched by (PyPI names are normalised, Debian advisories name
source packages), so each row gets the matcher's key ("rpm:NAME", "pypi:pyyaml",
"deb:openssl"; NULL for an ecosystem no installed package type matches), computed here for
the rows already stored.
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from alicorn.advisories.model import Affected
    from alicorn.match.index import affected_key

    conn = op.get_bind()
    inspector = sa.inspect(conn)
    # Databases made by a development snapshot of 0004 have the column already.
    if "lookup" not in {c["name"] for c in inspector.get_columns("advisory_packages")}:
        with op.batch_alter_table("advisory_packages") as batch:
            batch.add_column(sa.Column("lookup", sa.String(600)))
    if "ix_advisory_packages_lookup" not in {
            i["name"] for i in inspector.get_indexes("advisory_packages")}:
        op.create_index("ix_advisory_packages_lookup", "advisory_packages", ["lookup"])
    table = sa.table("advisory_packages", sa.column("pk", sa.Integer),
                     sa.column("kind", sa.String), sa.column("ecosystem", sa.String),
                     sa.column("name", sa.String), sa.column("lookup", sa.String))
    updates = []
    for pk, kind, ecosystem, name in conn.execute(
            sa.select(table.c.pk, table.c.kind, table.c.ecosystem, table.c.name)):
        if kind == "rpm":
            lookup: str | None = f"rpm:{name}"
        else:
            key = affected_key(Affected(ecosystem=ecosystem or "", name=name))
            lookup = f"{key[0]}:{key[1]}" if key else None
        updates.append({"row": pk, "value": lookup})
    if updates:
        conn.execute(table.update().where(table.c.pk == sa.bindparam("row"))
                     .values(lookup=sa.bindparam("value")), updates)


def downgrade() -> None:
    op.drop_index("ix_advisory_packages_lookup", "advisory_packages")
    with op.batch_alter_table("advisory_packages") as batch:
        batch.drop_column("lookup")
