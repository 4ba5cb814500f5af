"""Polysubstance: the other suspect drugs of a substance's cases by drug class, and the subsets
of its cases that a signals run can be limited to.

Reads the shipped class file `surveillance/data/drug_classes.toml` (its top says the rule),
`case_drugs`, `substance_hits` and `cases` (clean layer), or, as of an earlier quarter, the raw
drug rows of each case's version then with the strings the term file matched
(`substance_strings`). Writes nothing but the temp table a signals run narrows
(`narrow_to_subset`). Importing it loads no duckdb or pandas: the CLI builds `--subset` from
SUBSETS at import.

A co-suspect of a case is another drug in role PS or SS: one definition, `OTHER_DRUGS`, which
the report's co_suspects column reads too. An ingredient counts in every class one of its words
falls in (a combination product can be in two); a case counts once per class.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from .errors import NoDataError, UsageError

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

    from .substances import Substance

OTHERS = "others"
"""The class of a co-suspect drug in no class of the file."""
ONLY = "only"
"""The subset of the substance's cases with no other suspect drug."""
TOP_DRUGS = 5
_CLASS_FILE = "data/drug_classes.toml"
_WORD_SPLIT = re.compile(r"[^A-Z0-9]+")

# Every drug row of a case other than the substance's own rows, with its ingredient (prod_ai,
# else drugname, upper-cased) and whether it is a co-suspect (role PS or SS): the one definition
# of "another (suspect) drug" of a case. Through the latest quarter the clean layer's rows, the
# substance's own ones those of substance_hits; as of an earlier quarter the raw rows of each
# `_sig_cases` case's version then, the own ones those whose strings the term file matched
# (what substance_hits holds, on that version). Bound: $substance.
OTHER_DRUGS = """SELECT d.caseid, upper(trim(coalesce(d.prod_ai, d.drugname))) AS ingredient,
        upper(trim(d.role_cod)) IN ('PS', 'SS') AS co_suspect
    FROM case_drugs d
    ANTI JOIN (SELECT caseid, drug_seq FROM substance_hits WHERE substance = $substance) s
      ON s.caseid = d.caseid AND s.drug_seq = d.drug_seq
    WHERE coalesce(d.prod_ai, d.drugname) IS NOT NULL"""
_OTHER_DRUGS_ASOF = """SELECT c.caseid, upper(trim(coalesce(d.prod_ai, d.drugname))) AS ingredient,
        upper(trim(d.role_cod)) IN ('PS', 'SS') AS co_suspect
    FROM _sig_cases c
    JOIN raw_drug d ON d.source = c.source AND d.primaryid = c.primaryid AND d.quarter = c.quarter
    ANTI JOIN (SELECT string FROM substance_strings
               WHERE substance = $substance AND field = 'drugname') sn ON sn.string = d.drugname
    ANTI JOIN (SELECT string FROM substance_strings
               WHERE substance = $substance AND field = 'prod_ai') sa ON sa.string = d.prod_ai
    WHERE coalesce(d.prod_ai, d.drugname) IS NOT NULL"""


@dataclass(frozen=True)
class DrugClass:
    """One class of the class file: its ingredient words and the words that veto them."""

    name: str
    description: str
    sources: tuple[str, ...]
    words: frozenset[str]
    unless: frozenset[str] = frozenset()

    def has(self, ingredient: str) -> bool:
        """Whether an ingredient is in the class: one word in `words`, none in `unless`."""
        words = set(ingredient_words(ingredient))
        return bool(words & self.words) and not words & self.unless


def ingredient_words(ingredient: str) -> list[str]:
    """An ingredient's words: upper-cased, split at anything but letters and digits."""
    return [w for w in _WORD_SPLIT.split(ingredient.upper()) if w]


@cache
def _class_file() -> tuple[str, dict[str, Any]]:
    text = resources.files("surveillance").joinpath(_CLASS_FILE).read_text("utf-8")
    return text, tomllib.loads(text)


def class_file_version() -> str:
    """The class file's version and a digest of its text: what a subset run's id names."""
    text, doc = _class_file()
    return f"{doc['drug_classes']['version']} {hashlib.sha256(text.encode()).hexdigest()[:16]}"


@cache
def drug_classes() -> tuple[DrugClass, ...]:
    """The classes of the shipped class file, in its order (others not among them)."""
    _, doc = _class_file()
    return tuple(
        DrugClass(
            name,
            table["description"],
            tuple(table["sources"]),
            frozenset(table["words"]),
            frozenset(table.get("unless", ())),
        )
        for name, table in doc["classes"].items()
    )


def class_named(name: str) -> DrugClass:
    """One class of the class file by name (e.g. the report's opioids)."""
    for found in drug_classes():
        if found.name == name:
            return found
    raise KeyError(name)


@cache  # a substance's cases repeat the same few thousand ingredients
def classes_of(ingredient: str) -> tuple[str, ...]:
    """Every class an ingredient is in, in the file's order; empty when in none."""
    return tuple(c.name for c in drug_classes() if c.has(ingredient))


def drug_class(ingredient: str) -> str:
    """An ingredient's class: the first class of the file it is in, else 'others'."""
    return next(iter(classes_of(ingredient)), OTHERS)


def class_names() -> tuple[str, ...]:
    """The classes as outputs list them: the file's, then others."""
    return (*(c.name for c in drug_classes()), OTHERS)


SUBSETS: tuple[str, ...] = (
    ONLY,
    *(f"with-{c.name}" for c in drug_classes()),
    *(f"without-{c.name}" for c in drug_classes()),
)
"""The subsets of a substance's cases (`signals --subset`): only (no other suspect drug), and
with-CLASS / without-CLASS (another suspect drug of the class, or none of it)."""


def in_subset(subset: str, classes: Iterable[str], any_co_suspect: bool) -> bool:
    """Whether a case with co-suspects in these classes (and any co-suspect at all) is in it."""
    if subset == ONLY:
        return not any_co_suspect
    kind, _, name = subset.partition("-")
    return (name in set(classes)) == (kind == "with")


def check_subset(subset: str | None) -> str | None:
    """A subset as asked, refused with one line unless one of SUBSETS."""
    if subset is not None and subset not in SUBSETS:
        raise UsageError(f"--subset: {subset!r}: use one of {', '.join(SUBSETS)}")
    return subset


def subset_statement(subset: str | None) -> str | None:
    """The sentence a run limited to a subset carries: which of the substance's cases count."""
    if subset is None:
        return None
    if subset == ONLY:
        which = "those with no other suspect drug (PS/SS)"
    else:
        kind, _, name = subset.partition("-")
        which = f"those {kind} another suspect drug (PS/SS) of class {name}"
    return (
        f"Subset {subset}: of the substance's cases only {which} are analysed; "
        "the others are left out of a, b, c and d."
    )


def _classes(ingredients: Iterable[str]) -> set[str]:
    """The classes of a case's co-suspect ingredients, others included (empty: none)."""
    return {name for drug in ingredients for name in classes_of(drug) or (OTHERS,)}


# Each case's co-suspect ingredients, each once ([] when none), from the cases of `{cases}`
# (a query whose rows have a caseid) and the other drugs of `{other}`.
_CASE_INGREDIENTS = """SELECT h.caseid,
        coalesce(list(DISTINCT o.ingredient) FILTER (WHERE o.ingredient IS NOT NULL), [])
    FROM ({cases}) h LEFT JOIN ({other}) o ON o.caseid = h.caseid AND o.co_suspect
    GROUP BY h.caseid"""


def narrow_to_subset(
    con: duckdb.DuckDBPyConnection, subset: str, substance: str, latest: bool
) -> None:
    """Remove the substance's cases outside the subset from the signals temp tables
    (`_sig_cases`, `_sig_exposed`, `_sig_reac`): they leave the analysis, not to c or d."""
    other = OTHER_DRUGS if latest else _OTHER_DRUGS_ASOF
    rows = con.execute(
        _CASE_INGREDIENTS.format(cases="SELECT caseid FROM _sig_exposed", other=other),
        {"substance": substance},
    ).fetchall()
    leaving = [c for c, drugs in rows if not in_subset(subset, _classes(drugs), bool(drugs))]
    if rows and len(leaving) == len(rows):
        raise NoDataError(f"no {substance} cases in --subset {subset} (of {len(rows)} cases)")
    if not leaving:
        return
    import pandas as pd

    con.register("_sig_leaving", pd.DataFrame({"caseid": pd.Series(leaving, dtype=object)}))
    try:
        for table in ("_sig_cases", "_sig_exposed", "_sig_reac"):
            # The table names are the constants of this loop, never input.
            con.execute(
                f"DELETE FROM {table} WHERE caseid IN (SELECT caseid FROM _sig_leaving)"  # noqa: S608
            )
    finally:
        con.unregister("_sig_leaving")


def _substance_cases(
    con: duckdb.DuckDBPyConnection, substance: Substance, roles: str | None
) -> list[tuple[str, str, list[str]]]:
    """The substance's cases (clean layer, in the roles): caseid, year of initial FDA receipt
    and the co-suspect ingredients, each once."""
    from .definitions import roles_option
    from .extract import ensure_extracted, has_table

    if not has_table(con, "cases"):
        raise NoDataError("the clean layer is empty; run 'surveillance load' first")
    roles = roles_option(roles)
    ensure_extracted(con, substance)
    cases = """SELECT caseid, left(initial_quarter, 4) AS year FROM cases
        WHERE caseid IN (SELECT caseid FROM involved_cases($substance, $roles))"""
    rows = con.execute(
        f"""SELECT i.caseid, c.year, i.ingredients
        FROM ({_CASE_INGREDIENTS.format(cases=cases, other=OTHER_DRUGS)}) i(caseid, ingredients)
        JOIN ({cases}) c USING (caseid)""",  # noqa: S608
        {"substance": substance.name, "roles": roles},
    ).fetchall()
    if not rows:
        in_roles = f" in roles {roles}" if roles else ""
        raise NoDataError(f"no {substance.name} cases{in_roles}")
    return rows


def co_suspect_profile(
    con: duckdb.DuckDBPyConnection, substance: Substance, roles: str | None = None
) -> pd.DataFrame:
    """The other suspect drugs (PS/SS) of the substance's cases by class: class, n_cases, pct
    (of the substance's cases in the roles), top_drugs (the class's most frequent ingredients,
    'NAME (n_cases)'). A case counts once per class; every class is listed, others last."""
    import pandas as pd

    found = _substance_cases(con, substance, roles)
    n_cases = dict.fromkeys(class_names(), 0)
    drugs: dict[str, dict[str, int]] = {name: {} for name in class_names()}
    for _, _, ingredients in found:
        for name in _classes(ingredients):
            n_cases[name] += 1
        for drug in ingredients:
            for name in classes_of(drug) or (OTHERS,):
                drugs[name][drug] = drugs[name].get(drug, 0) + 1
    rows = []
    for name in class_names():
        top = sorted(drugs[name].items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_DRUGS]
        rows.append(
            {
                "class": name,
                "n_cases": n_cases[name],
                "pct": round(100.0 * n_cases[name] / len(found), 1),
                "top_drugs": "; ".join(f"{drug} ({n})" for drug, n in top),
            }
        )
    return pd.DataFrame(rows, columns=["class", "n_cases", "pct", "top_drugs"])


def subset_shares(
    con: duckdb.DuckDBPyConnection, substance: Substance, roles: str | None = None
) -> pd.DataFrame:
    """Per year of initial FDA receipt (`cases.initial_quarter`): year, n_cases (the
    substance's cases in the roles) and each subset's share of them in percent (one column
    per subset, named as in SUBSETS)."""
    import pandas as pd

    found = _substance_cases(con, substance, roles)
    rows = []
    for year in sorted({y for _, y, _ in found}):
        cases = [(_classes(drugs), bool(drugs)) for _, y, drugs in found if y == year]
        row: dict[str, Any] = {"year": year, "n_cases": len(cases)}
        for subset in SUBSETS:
            n = sum(in_subset(subset, classes, any_drug) for classes, any_drug in cases)
            row[subset] = round(100.0 * n / len(cases), 1)
        rows.append(row)
    return pd.DataFrame(rows, columns=["year", "n_cases", *SUBSETS])
