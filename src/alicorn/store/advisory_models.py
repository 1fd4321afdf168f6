"""The advisory store's tables (created by migration 0004).

An advisory is keyed by its id *and* its feed format: an id is unique within a feed's namespace
(FEDORA-2023-..., GHSA-..., PYSEC-...), and two feeds may carry the same id for their own
record of one advisory (GitHub's OSV JSON and rubysec both name GHSA ids); both are kept.
``body`` holds the whole advisory as canonical JSON (alicorn.advisories.codec), enough to
rebuild the frozen value exactly; the other columns are copies for filtering and indexes.
Datetimes are naive UTC, as elsewhere in the database.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import DateTime, ForeignKeyConstraint, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from alicorn.store.models import Base


class AdvisoryRow(Base):
    __tablename__ = "advisories"

    id: Mapped[str] = mapped_column(String(256), primary_key=True)
    format: Mapped[str] = mapped_column(String(32), primary_key=True)
    type: Mapped[str] = mapped_column(String(32), index=True)
    severity: Mapped[str | None] = mapped_column(String(32))
    issued: Mapped[datetime | None] = mapped_column(DateTime)
    updated: Mapped[datetime | None] = mapped_column(DateTime)
    withdrawn: Mapped[datetime | None] = mapped_column(DateTime)
    source: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(71))
    body: Mapped[str] = mapped_column(Text)
    imported_at: Mapped[datetime] = mapped_column(DateTime)


class AdvisoryPackageRow(Base):
    """One package name an advisory names: an RPM it ships, or an ecosystem package it affects."""

    __tablename__ = "advisory_packages"
    __table_args__ = (
        ForeignKeyConstraint(["advisory_id", "advisory_format"],
                             ["advisories.id", "advisories.format"], ondelete="CASCADE"),
        Index("ix_advisory_packages_name", "name", "ecosystem"),
        Index("ix_advisory_packages_lookup", "lookup"),
        Index("ix_advisory_packages_advisory", "advisory_id", "advisory_format"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    advisory_id: Mapped[str] = mapped_column(String(256))
    advisory_format: Mapped[str] = mapped_column(String(32))
    kind: Mapped[str] = mapped_column(String(16))  # rpm | ecosystem
    ecosystem: Mapped[str | None] = mapped_column(String(64))  # None for rpm
    name: Mapped[str] = mapped_column(String(512))
    # What an installed package looks it up by (alicorn.match.index's keys): "rpm:NAME" for an
    # rpm the advisory ships, "FAMILY:NORMALISED" for an affected package ("pypi:pyyaml",
    # "deb:openssl"); None for an ecosystem no installed package type matches.
    lookup: Mapped[str | None] = mapped_column(String(600))


class AdvisoryCveRow(Base):
    """One CVE an advisory names (its cve references and aliases): the index of search(cve=)."""

    __tablename__ = "advisory_cves"
    __table_args__ = (
        ForeignKeyConstraint(["advisory_id", "advisory_format"],
                             ["advisories.id", "advisories.format"], ondelete="CASCADE"),
        Index("ix_advisory_cves_cve", "cve"),
        Index("ix_advisory_cves_advisory", "advisory_id", "advisory_format"),
    )

    pk: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    advisory_id: Mapped[str] = mapped_column(String(256))
    advisory_format: Mapped[str] = mapped_column(String(32))
    cve: Mapped[str] = mapped_column(String(64))
