"""The registry of what an analyst cites: one definition per concept, read by every output.

Signal criteria, outcome labels (worst outcome first), age groups and the definition of a new
case live here, and nowhere else; the CLI, CSV/JSON, database tables, report and figures take
their labels and bounds from this module. Importing it loads nothing heavy.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from . import stats
from .errors import UsageError


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


@dataclass(frozen=True)
class OutcomeCode:
    """One FAERS outcome code (OUTC outc_cod): the flag column of `cases` it sets, its label."""

    code: str
    flag: str
    label: str


OUTCOME_CODES: tuple[OutcomeCode, ...] = (
    OutcomeCode("DE", "death", "Death"),
    OutcomeCode("LT", "life_threatening", "Life-threatening"),
    OutcomeCode("HO", "hospitalization", "Hospitalization"),
    OutcomeCode("DS", "disability", "Disability"),
    OutcomeCode("CA", "congenital_anomaly", "Congenital anomaly"),
    OutcomeCode("RI", "required_intervention", "Required intervention"),
    OutcomeCode("OT", "other_serious", "Other serious"),
)
"""The FAERS outcome codes (faers-format.md), in the FDA's order."""

WORST_OUTCOME_RULE: tuple[tuple[str, str | None], ...] = (
    ("death", "death"),
    ("life-threatening", "life_threatening"),
    ("hospitalization", "hospitalization"),
    ("other serious", "serious"),
    ("non-serious", None),
)
"""Worst outcome of a case: the first category whose `cases` flag is true (None: otherwise).
"other serious" is any other outcome code (DS, CA, RI, OT); "non-serious" is no outcome code."""

OUTCOMES: tuple[str, ...] = tuple(label for label, _ in WORST_OUTCOME_RULE)
"""Worst outcome of a case, in priority order: each case falls in exactly one category."""

AGE_BOUNDS: tuple[int, ...] = (18, 25, 35, 45, 55, 65)
"""Lower bounds (years) of the age groups after the first; ages are in completed years."""
AGE_GROUPS: tuple[str, ...] = (
    f"0-{AGE_BOUNDS[0] - 1}",
    *(f"{lo}-{hi - 1}" for lo, hi in pairwise(AGE_BOUNDS)),
    f"{AGE_BOUNDS[-1]}+",
)
"""Age group labels, built from AGE_BOUNDS: 0-17, 18-24, ..., 65+."""
AGE_UNKNOWN = "unknown"
"""The age group of a case without a plausible age."""
SEXES: tuple[str, ...] = ("F", "M", "unknown")
YEAR_BOUNDS: tuple[int, ...] = (2014, 2018, 2025)
"""First years of the year groups after the first, by the year of a case's initial FDA receipt
(`cases.initial_quarter`, which is always known): the eras the regulatory events of
data/regulatory_events.csv open, because they changed who reported kratom and how much (the 2014
import alert; the 2017-11 FDA advisory and the 2018 Salmonella recall, taken as one turn at
2018; the 2025 7-OH actions). Eras rather than single years keep exposed cases in every stratum."""
YEAR_GROUPS: tuple[str, ...] = (
    f"before {YEAR_BOUNDS[0]}",
    *(f"{lo}-{hi - 1}" for lo, hi in pairwise(YEAR_BOUNDS)),
    f"{YEAR_BOUNDS[-1]} on",
)
"""Year group labels, built from YEAR_BOUNDS: before 2014, 2014-2017, 2018-2024, 2025 on."""
COUNTRY_GROUPS: tuple[str, ...] = ("US", "non-US", "unknown")
"""Where a case occurred (ISO country of the clean layer): the US, elsewhere, or not reported."""


def country_group(country: object) -> str:
    """The COUNTRY_GROUPS label of one ISO country code (None or NaN: unknown)."""
    if not isinstance(country, str):
        return COUNTRY_GROUPS[2]
    return COUNTRY_GROUPS[0] if country == "US" else COUNTRY_GROUPS[1]


NEW_CASE = (
    "A new case in quarter Q is a case whose initial FDA receipt falls in Q: the earliest "
    "init_fda_dt among its versions (a partial date counts from its first day; a date known only "
    "to the year, or none, gives way to the quarter of the first version seen, and so does a "
    "date later than that quarter). A follow-up of an older case is a follow-up, not a new case."
)


def marks(row: Mapping[str, Any]) -> str:
    """The criteria a term meets as text marks (P R I E), a dash for each one it does not."""
    return " ".join(c.mark if bool(row[c.flag]) else "-" for c in CRITERIA)


SENSITIVITY_CRITERION = CRITERIA[1]
"""A term's classification in the sensitivity analyses: whether it meets the ROR criterion, the
one every analysis computes (the Mantel-Haenszel-adjusted one gives an ROR only)."""
ROBUSTNESS_RULE = (
    f"A term is classed a signal in an analysis when it meets the {SENSITIVITY_CRITERION.name} "
    f"criterion ({SENSITIVITY_CRITERION.rule}). Its signal is robust when it is a signal in the "
    "main analysis and in every sensitivity analysis that could be run; otherwise the sentence "
    "names the analyses that change its classification."
)


def criteria_legend() -> str:
    """One line naming each PRIE mark and its rule."""
    return "; ".join(f"{c.mark} = {c.name} ({c.rule})" for c in CRITERIA)


ROLES: dict[str, str] = {
    "PS": "primary suspect",
    "SS": "secondary suspect",
    "C": "concomitant",
    "I": "interacting",
}
"""FAERS drug roles (DRUG role_cod) and their labels, in the order a role filter is written."""
SUSPECT_ROLES = "PS,SS"
"""The suspect roles: a drug the reporter suspected (primary or secondary suspect)."""

CHALLENGE_CODES: dict[str, str] = {
    "Y": "positive",
    "N": "negative",
    "U": "unknown",
    "D": "does not apply",
}
"""DRUG dechal/rechal codes (faers-format.md §4) and their meaning."""


def parse_roles(roles: str | None) -> str | None:
    """A role filter as typed ("ss, ps") in canonical form ("PS,SS"); None means any role.

    Raises ValueError naming the unknown roles, for the caller to report as a usage error."""
    if roles is None:
        return None
    parsed = {r.strip().upper() for r in roles.split(",") if r.strip()}
    bad = sorted(parsed - set(ROLES))
    if bad or not parsed:
        raise ValueError(f"unknown role(s) {', '.join(bad) or repr(roles)}; use PS,SS,C,I")
    return ",".join(r for r in ROLES if r in parsed)


def roles_option(roles: str | None) -> str | None:
    """`parse_roles` of a user's --roles: an unknown role is a UsageError naming the option."""
    try:
        return parse_roles(roles)
    except ValueError as e:
        raise UsageError(f"--roles: {e}") from e
