"""Schema changes as a numbered list: migration N takes a database from version N-1 to N.

`db.ensure_schema` applies the missing ones in order, each in one transaction with the row that
records it in `schema_version`. A test builds a database of every older version and migrates it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Migration:
    """One step of the schema: the version it produces, why, and its statements."""

    version: int
    why: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        2,
        "each substance extraction names the data it was built from (NULL: unknown, so stale)",
        ("ALTER TABLE IF EXISTS substance_runs ADD COLUMN IF NOT EXISTS data_fingerprint VARCHAR",),
    ),
    Migration(
        3,
        "load_log says why a file loaded with a caveat (a header-only table)",
        ("ALTER TABLE IF EXISTS load_log ADD COLUMN IF NOT EXISTS warning VARCHAR",),
    ),
)

LATEST = 1 + len(MIGRATIONS)
