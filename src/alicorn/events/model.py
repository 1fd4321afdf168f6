"""States and values shared by the rebuild service's parts.

An *event* is one advisory that landed (one per advisory id, format and content digest):

    new → planned → building → done | failed | skipped

``skipped``: no published image contains an affected package at a vulnerable version (the
reason says which packages were looked for).  ``failed``: one of its rebuilds failed (the
reason names the image and why).  ``done``: every rebuild it needed is published.

A *rebuild* is one image rebuilt once, shared by every event that needs it (concurrent
advisories coalesce into one rebuild per image):

    planned → queued → done | failed | skipped

``queued`` means its build was submitted (the build's own state says whether it runs);
a rebuild whose parent (the rebuild of its base image) failed fails without building.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Event states.
NEW, PLANNED, BUILDING, DONE, FAILED, SKIPPED = (
    "new", "planned", "building", "done", "failed", "skipped")
EVENT_STATES = (NEW, PLANNED, BUILDING, DONE, FAILED, SKIPPED)
EVENT_FINAL = (DONE, FAILED, SKIPPED)

# Rebuild states (PLANNED, DONE, FAILED, SKIPPED as above).
QUEUED = "queued"
REBUILD_STATES = (PLANNED, QUEUED, DONE, FAILED, SKIPPED)
REBUILD_FINAL = (DONE, FAILED, SKIPPED)

# Results of a build's checks.
PASSED = "passed"
CHECK_FAILED = "failed"

# What the reason of a rebuild (and its event) says when the repositories did not hold the
# fixed version yet: such events are planned again when a repository changes.
MISSING_FIX = "lack the fixed version"

# How the reason of a retried event (alicorn events retry, or a repository that changed)
# begins.  A retried event is planned alone, once no other event is new and no rebuild is
# unfinished: folded into another advisory's rebuild, a fix still missing would fail that
# rebuild too.
RETRIED = "planned again"

# Advisory types that make events (a bugfix update does not rebuild images).
EVENT_TYPES = ("security",)


@dataclass(frozen=True)
class PlannedRebuild:
    """One image the plan rebuilds.

    ``image`` is the recipe name; ``old_build_id``/``old_digest`` the published build it
    replaces; ``advisories`` the advisory ids whose fixed versions the new image must hold
    (empty for an image rebuilt only because its base is); ``parent`` the image name of the
    planned rebuild it is layered on (None: not layered on a rebuilt image); ``reason`` why,
    for people ("busybox 1.35.0-1.fc40 < 1.35.0-2.fc40 (FEDORA-2024-…)", "layered on
    pony-rpm").
    """

    image: str
    old_build_id: str
    old_digest: str
    advisories: tuple[str, ...]
    parent: str | None
    reason: str


@dataclass(frozen=True)
class Plan:
    """What a set of advisories needs: rebuilds ordered parents first, and per advisory id
    the images it affects (rebuilds' image names) or, for one affecting none, why it is
    skipped."""

    rebuilds: tuple[PlannedRebuild, ...] = ()
    affects: dict[str, tuple[str, ...]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
