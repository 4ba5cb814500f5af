"""Notoriety windows and eras: a signals design option (`Design.exclusion`) that removes cases
by the day of their initial FDA receipt, to show how much stimulated reporting moves a signal.

Reads the substance's regulatory events (`data/regulatory_events.csv`, `trends.regulatory_events`)
and each case's initial receipt as `definitions.NEW_CASE` defines it: the `cases` columns through
the latest quarter, clean's `initial_receipts($through)` macro as of an earlier one. Writes only
temp tables: it deletes the removed cases from `_sig_cases`, `_sig_exposed` and `_sig_reac`
before anything is counted, so a, b, c, d and the EBGM prior all leave them out.

A case's initial receipt day is its initial receipt date from the first day of a partial date
(NEW_CASE's rule); when NEW_CASE takes the quarter of the case's first version instead (a date
known only to the year, none, or one later than that quarter) it is that quarter's first day.
A window of M months after an event on day E is [E, E + M months): the event day is inside, the
day M calendar months later is the first day outside.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

import duckdb

from .definitions import YEAR_BOUNDS
from .errors import UsageError

DEFAULT_WINDOW_MONTHS = 6
"""Issue 13's default notoriety window after each regulatory event."""
ERA_START = YEAR_BOUNDS[1]
"""First year of the later era: the turn the 2017-11 advisory and the 2018 recall made
(`definitions.YEAR_BOUNDS`, where the year groups take it from)."""
ERAS = (f"before-{ERA_START}", f"{ERA_START}-on")
"""`--era` values: cases initially received before ERA_START, or from ERA_START on."""

# A case's initial receipt day (module docstring), from the columns NEW_CASE's rule gives:
# `cases` through the latest quarter, clean's initial_receipts macro as of $through. Every case
# of the source, not only those of `_sig_cases`: the deletes below keep only theirs, and a
# semi-join of every case costs more than the day of every case (3.2 of 5.5 s on 18 M cases).
_RECEIPT_DAY = """WITH r AS (
    SELECT caseid, initial_quarter, CASE initial_receipt_precision
        WHEN 'day' THEN CAST(initial_receipt_date AS DATE)
        WHEN 'month' THEN CAST(initial_receipt_date || '-01' AS DATE) END AS day
    FROM {source})
SELECT caseid, initial_quarter,
    CASE WHEN CAST(year(day) AS VARCHAR) || 'Q' || CAST(quarter(day) AS VARCHAR) = initial_quarter
         THEN day
         ELSE make_date(left(initial_quarter, 4)::INT, right(initial_quarter, 1)::INT * 3 - 2, 1)
    END AS initial_day
FROM r"""
_SOURCES = {True: "cases", False: "initial_receipts($through)"}
_IN_WINDOW = """SELECT DISTINCT i.caseid FROM _sig_initial i
    JOIN (SELECT unnest($events::DATE[]) AS event_day) e
      ON i.initial_day >= e.event_day AND i.initial_day < e.event_day + to_months($months)"""
_OUTSIDE_ERA = {
    ERAS[0]: "SELECT caseid FROM _sig_initial WHERE left(initial_quarter, 4)::INT >= $start",
    ERAS[1]: "SELECT caseid FROM _sig_initial WHERE left(initial_quarter, 4)::INT < $start",
}


@dataclass(frozen=True)
class Exclusion:
    """Which cases a run leaves out by initial receipt: those within `months` after any of the
    substance's regulatory `events` (None: no window), and those outside `era` (None: none)."""

    substance: str
    months: int | None = None
    era: str | None = None
    events: tuple[date, ...] = ()

    def key(self) -> list[Any]:
        """The exclusion's identity in a run id and a prior's: window, event days, era."""
        days = [d.isoformat() for d in self.events]
        return ["exclusion", self.months, days if self.months else [], self.era]

    def statement(self) -> str:
        """What the run leaves out, in one sentence for every printed run."""
        parts = []
        if self.months:
            parts.append(
                f"cases initially received within {self.months} months on or after one of the "
                f"{len(self.events)} {self.substance} regulatory events"
            )
        if self.era == ERAS[0]:
            parts.append(f"cases initially received from {ERA_START} on")
        elif self.era == ERAS[1]:
            parts.append(f"cases initially received before {ERA_START}")
        return "Excluded: " + "; ".join(parts) + "."

    def apply(self, con: duckdb.DuckDBPyConnection, latest: bool, through: str | None) -> None:
        """Delete the left-out cases from `_sig_cases`, `_sig_exposed` and `_sig_reac`."""
        removed = []
        values: dict[str, Any] = {} if latest else {"through": through}
        if self.months:
            removed.append(_IN_WINDOW)
            values |= {"events": list(self.events), "months": self.months}
        if self.era is not None:
            removed.append(_OUTSIDE_ERA[self.era])
            values["start"] = ERA_START
        # The receipt days are a CTE, not a table of every case: each part reads what it needs.
        # The source is one of two constant table expressions, never input.
        con.execute(
            "CREATE OR REPLACE TEMP TABLE _sig_excluded AS WITH _sig_initial AS ("
            + _RECEIPT_DAY.format(source=_SOURCES[latest])
            + ") "
            + " UNION ".join(removed),
            values,
        )
        for table in ("_sig_cases", "_sig_exposed", "_sig_reac"):
            con.execute(f"DELETE FROM {table} WHERE caseid IN (SELECT caseid FROM _sig_excluded)")  # noqa: S608


def exclusion(
    substance: str, months: int | None = None, era: str | None = None
) -> Exclusion | None:
    """The exclusion `--exclude-window MONTHS` and `--era` ask for (None: neither).

    A window for a substance without events in the shipped events file, a window under one
    month or an unknown era is a UsageError."""
    if months is None and era is None:
        return None
    if era is not None and era not in ERAS:
        raise UsageError(f"--era: one of {', '.join(ERAS)}")
    events: tuple[date, ...] = ()
    if months is not None:
        if months < 1:
            raise UsageError("--exclude-window must be at least 1 month")
        # trends imports signals, which imports the design: read the events file lazily.
        from .trends import regulatory_events

        events = tuple(dict.fromkeys(e.date for e in regulatory_events(substance)))
        if not events:
            raise UsageError(
                f"--exclude-window: no regulatory events for {substance} in the shipped "
                "events file (data/regulatory_events.csv)"
            )
    return Exclusion(substance, months, era, events)
