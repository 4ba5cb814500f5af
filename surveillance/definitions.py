"""The registry of what an analyst cites: one definition per concept, read by every output.

Signal criteria, outcome labels (worst outcome first), age groups and the definition of a new
case live here, and nowhere else; the CLI, CSV/JSON, database tables, report and figures take
their labels and bounds from this module. Importing it loads nothing heavy.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import stats


@dataclass(frozen=True)
class Criterion:
    """One signal criterion: the flag column it sets, a short mark and the rule in words."""

    flag: str
    mark: str
    name: str
    rule: str


CRITERIA: tuple[Criterion, ...] = (
    Criterion(
        "signal_prr",
        "P",
        "PRR",
        f"Evans: a >= {stats.EVANS_MIN_CASES}, PRR >= {stats.EVANS_MIN_PRR:g}, "
        f"chi2 >= {stats.EVANS_MIN_CHI2:g}",
    ),
    Criterion("signal_ror", "R", "ROR", f"lower 95% bound > 1, a >= {stats.ROR_MIN_CASES}"),
    Criterion("signal_ic", "I", "IC", "IC025 > 0"),
    Criterion(
        "signal_ebgm",
        "E",
        "EBGM",
        f"EB05 >= {stats.EB05_THRESHOLD:g}, only with a converged prior off its bounds",
    ),
)
"""Signal criteria in the order of the PRIE mark string."""

OUTCOMES: tuple[str, ...] = (
    "death",
    "life-threatening",
    "hospitalization",
    "other serious",
    "non-serious",
)
"""Worst outcome of a case, in priority order: each case falls in exactly one category."""

AGE_BOUNDS: tuple[int, ...] = (18, 25, 35, 45, 55, 65)
"""Lower bounds (years) of the age groups after the first; ages are in completed years."""
AGE_GROUPS: tuple[str, ...] = ("0-17", "18-24", "25-34", "35-44", "45-54", "55-64", "65+")
AGE_UNKNOWN = "unknown"
SEXES: tuple[str, ...] = ("F", "M", "unknown")

NEW_CASE = (
    "A new case in quarter Q is a case whose initial FDA receipt (init_fda_dt of its versions, "
    "else the quarter of its first version) falls in Q; a follow-up of an older case is a "
    "follow-up, not a new case."
)


def criteria_legend() -> str:
    """One line naming each PRIE mark and its rule."""
    return "; ".join(f"{c.mark} = {c.name} ({c.rule})" for c in CRITERIA)
