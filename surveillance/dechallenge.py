"""Dechallenge and rechallenge of a substance's cases: what the reports say happened when the
substance was stopped (DRUG `dechal`) and when it was given again (`rechal`).

Reads `case_drugs` (the codes) and `substance_hits` (which drug rows are the substance), through
the cases `cases.cases` lists for the same options; writes nothing. The codes are the FDA's
(faers-format.md §4, `definitions.CHALLENGE_CODES`): Y positive (the reaction abated on
stopping / came back on re-administration), N negative, U unknown, D does not apply (the drug
was not stopped / not given again). A value that is none of these is `other`, a blank `missing`.

The codes belong to a drug row, not to a reaction, so a case carries one dechallenge and one
rechallenge result, and counts once in every term it has. When a case has several drug rows of
the substance (in the counted roles) with different codes, the most informative one stands for
the case, in the order of RESOLUTION: Y, N, D, U, other, missing (a positive on any row of the
substance is a positive for it); cases whose rows say both Y and N are also counted in
`n_*_conflicting`, so an analyst can look at them.
"""

from __future__ import annotations

import duckdb
import pandas as pd

from .clean import ensure_macros
from .definitions import CHALLENGE_CODES, parse_roles
from .onset import TermCases, cases_by_term
from .substances import Substance

RESOLUTION: tuple[str, ...] = ("Y", "N", "D", "U", "other", "missing")
"""A case's code when its substance rows differ: the first of these any of its rows has."""
RESULTS: dict[str, str] = {
    "Y": "positive",
    "N": "negative",
    "U": "unknown",
    "D": "not_applicable",
    "other": "other",
    "missing": "missing",
}
"""Each resolved code and the column suffix it is counted in (`n_dechal_positive`, ...)."""
CHALLENGES = ("dechal", "rechal")

# One row per substance drug row in the counted roles: its codes, normalised to RESOLUTION.
_CODES = """SELECT d.caseid,
        {dechal} AS dechal,
        {rechal} AS rechal
    FROM case_drugs d
    JOIN substance_hits h ON h.caseid = d.caseid AND h.drug_seq = d.drug_seq
    WHERE h.substance = $substance AND role_counts(h.role_cod, $roles)
      AND d.caseid IN (SELECT unnest($caseids))"""
# The registry's codes as an SQL list, built from constants (never from data).
_NORMALISED = (
    "CASE WHEN nullif(trim({c}), '') IS NULL THEN 'missing' "
    f"WHEN upper(trim({{c}})) IN ({', '.join(repr(k) for k in CHALLENGE_CODES)}) "
    "THEN upper(trim({c})) ELSE 'other' END"
)
_CODES_SQL = _CODES.format(
    dechal=_NORMALISED.format(c="d.dechal"), rechal=_NORMALISED.format(c="d.rechal")
)


def case_challenges(
    con: duckdb.DuckDBPyConnection, substance: Substance, caseids: list[str], roles: str | None
) -> pd.DataFrame:
    """One row per case: caseid, dechal and rechal (the resolved RESOLUTION code of its
    substance rows), and whether its rows say both Y and N (dechal_conflicting,
    rechal_conflicting)."""
    ensure_macros(con)
    rows = con.execute(
        _CODES_SQL, {"caseids": caseids, "substance": substance.name, "roles": roles}
    ).fetchdf()
    rank = {code: i for i, code in enumerate(RESOLUTION)}
    out = pd.DataFrame({"caseid": pd.Series(caseids, dtype=object)})
    for challenge in CHALLENGES:
        codes = rows.groupby("caseid")[challenge].agg(set)
        resolved = codes.map(lambda found: min(found, key=rank.__getitem__))
        conflicting = codes.map(lambda found: {"Y", "N"} <= found)
        out[challenge] = out["caseid"].map(resolved).fillna("missing")
        out[f"{challenge}_conflicting"] = out["caseid"].map(conflicting).fillna(False).astype(bool)
    return out


def dechallenge(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    since: str | None = None,
    until: str | None = None,
    roles: str | None = None,
    term: str | None = None,
    top_terms: int = 10,
    groups: bool = False,
    by_term: TermCases | None = None,
) -> pd.DataFrame:
    """Dechallenge and rechallenge counts of the substance's cases (the cases `cases` lists for
    these options): overall, for its `top_terms` most reported PTs and, with `groups`, each
    shipped event group (`by_term` as in `onset.onset`). Per challenge, the cases of each result
    add up to n_cases; pct_*_positive is Y / (Y + N), the positive share among cases with a
    known outcome."""
    made = cases_by_term(con, substance, since, until, roles, term, top_terms, groups, by_term)
    roles = parse_roles(roles)
    per_case = case_challenges(con, substance, made.caseids, roles).set_index("caseid")
    rows = []
    for name, kind, ids in made.rows:
        subset = per_case.loc[ids]
        row: dict[str, object] = {"term": name, "term_kind": kind, "n_cases": len(ids)}
        for challenge in CHALLENGES:
            counts = {code: int((subset[challenge] == code).sum()) for code in RESULTS}
            row.update({f"n_{challenge}_{RESULTS[code]}": n for code, n in counts.items()})
            row[f"n_{challenge}_conflicting"] = int(subset[f"{challenge}_conflicting"].sum())
            known = counts["Y"] + counts["N"]
            row[f"pct_{challenge}_positive"] = (
                round(100.0 * counts["Y"] / known, 1) if known else None
            )
        rows.append(row)
    return pd.DataFrame(rows)


def compact(table: pd.DataFrame) -> pd.DataFrame:
    """The table as an analyst scans it in 80 columns: per challenge, cases positive, negative,
    unknown, not applicable and missing or other, as Y/N/U/D/- counts, and %Y(d), %Y(r)."""
    out = pd.DataFrame({"term": table["term"].str.slice(0, 22), "cases": table["n_cases"]})
    for challenge in CHALLENGES:
        n = {code: table[f"n_{challenge}_{suffix}"] for code, suffix in RESULTS.items()}
        out[f"{challenge} Y/N/U/D/-"] = [
            "/".join(str(v) for v in values)
            for values in zip(
                n["Y"], n["N"], n["U"], n["D"], n["other"] + n["missing"], strict=True
            )
        ]
        out[f"%Y({challenge[0]})"] = table[f"pct_{challenge}_positive"]
    return out
