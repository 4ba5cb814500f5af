"""Masking (competition bias): a signals design option (`Design.masking`, `--remove-maskers K`)
that removes from each term's background the cases of the K drugs that mask it most.

Maignen F, Hauben M, Hung E, Van Holle L, Dogne JM. A conceptual approach to the masking effect
of measures of disproportionality. Pharmacoepidemiol Drug Saf 2014;23(2):208-217
(doi:10.1002/pds.3530), applied in Pharmacoepidemiol Drug Saf 2014;23(2):195-207: the masking
ratio of a product M for an event E is the PRR of the masked product with M's reports removed
from the database over its PRR with them,

    MR = [c / (c + d)] / [(c - c_M) / (c + d - n_M)]

where c, d are the background's cases with and without E and c_M, n_M the background cases
involving M with E and in all. The masked product's own cells a, b cancel, so for a given event
the ranking of maskers is the same for every substance. Only MR > 1 masks (removing M raises
the PRR); MR is infinite when every background case with E involves M.

Reads the signals temp tables (`_sig_cases`, `_sig_exposed`, `_sig_events`) after the design has
narrowed them, and the background cases' drugs as the prior counts them (as ingredients, in the
counted roles, the substance's label left out), which the caller writes (`DRUG_ROWS`). Writes only
temp tables (`_mask_*`, dropped at the end): it returns, per term and stratum, the cases to take
off c and d. The maskers are chosen on
the term's crude table (all strata together) and their cases (the union over the K, none of them
a substance case) come off c and d of that term in every stratum, so stratified cells stay
exact. a and b never change; neither does the EBGM prior.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from .drug_term import incidence

MASKER_SEPARATOR = "; "
"""Between the drug names of a row's `maskers` column."""

DRUG_ROWS = ("_mask_drug_strings", "_mask_drug_ids", "_mask_drugs")
"""The temp tables the caller writes, once `_mask_cases` is there: its own working table (any
columns), every drug numbered (drug, drug_id: the substance's label left out) and each case's
drugs (ci of `_mask_cases`, drug_id), each pair once."""

# The background (the cases of _sig_cases not involving the substance) numbered by their row in
# _sig_cases (a view: no copy of the cases is written; the other rows' numbers stay unused),
# its strata numbered, its drugs (once per case and drug, the substance's label left out) and
# the events of the substance's terms (_sig_events) as integer rows: the counts below join and
# group integers, and the one DISTINCT is over two integers, not text ids and names.
_CASES = """CREATE OR REPLACE TEMP VIEW _mask_cases AS
SELECT CAST(rowid AS INTEGER) AS ci, * FROM _sig_cases
WHERE caseid NOT IN (SELECT caseid FROM _sig_exposed)"""
_STRATUM_IDS = """CREATE OR REPLACE TEMP TABLE _mask_strata AS
SELECT stratum, CAST(row_number() OVER (ORDER BY stratum) - 1 AS INTEGER) AS stratum_id
FROM (SELECT DISTINCT stratum FROM _mask_cases)"""
_TERM_IDS = """CREATE OR REPLACE TEMP TABLE _mask_term_ids AS
SELECT pt_key, CAST(row_number() OVER (ORDER BY pt_key) - 1 AS INTEGER) AS term_id
FROM (SELECT DISTINCT pt_key FROM _sig_events WHERE caseid IN (SELECT caseid FROM _sig_exposed))"""
# _sig_events has a case's PT or group once (signals' reactions are distinct per case and PT,
# its group events DISTINCT), so each (ci, term_id) is here once.
_EVENTS = """CREATE OR REPLACE TEMP TABLE _mask_events AS
SELECT m.ci, t.term_id FROM _sig_events e
JOIN _mask_cases m USING (caseid) JOIN _mask_term_ids t USING (pt_key)"""
_N_M = "SELECT drug_id, count(*) AS n_m FROM _mask_drugs GROUP BY drug_id"
# Every pair's c_M: the background cases with both the drug and the term (each pair of
# _mask_drugs and of _mask_events is there once), counted on integers in the database.
_PAIRS = """SELECT d.drug_id, e.term_id, count(*) AS c_m
FROM _mask_drugs d JOIN _mask_events e USING (ci) GROUP BY ALL"""
_MASKER_CASES = "SELECT ci, drug_id FROM _mask_drugs WHERE list_contains($ids, drug_id)"
_STRATA = "SELECT stratum FROM _mask_strata ORDER BY stratum_id"
_CASE_STRATA = "SELECT m.ci, s.stratum_id FROM _mask_cases m JOIN _mask_strata s USING (stratum)"
_TEMP = ("_mask_strata", *DRUG_ROWS, "_mask_term_ids", "_mask_events")


def masking_ratio(c: Any, d: Any, c_m: Any, n_m: Any) -> np.ndarray:
    """Maignen's masking ratio of a masker with c_m of its n_m background cases having the
    event, for an event with c of c + d background cases: inf when c_m = c > 0."""
    c, d, c_m, n_m = (np.asarray(x, dtype=float) for x in (c, d, c_m, n_m))
    n = c + d
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (c / n) / ((c - c_m) / (n - n_m))
    return np.where((c - c_m) == 0, np.where(c > 0, np.inf, np.nan), ratio)


def top_maskers(pairs: pd.DataFrame, k: int) -> pd.DataFrame:
    """The k drugs of highest masking ratio above 1 per term (pt_key, drug, masking_ratio);
    a tie is broken by drug name, so the choice does not depend on row order."""
    ratio = masking_ratio(
        pairs["c"], pairs["n_background"] - pairs["c"], pairs["c_m"], pairs["n_m"]
    )
    found = pairs.assign(masking_ratio=ratio)
    found = found[found["masking_ratio"] > 1]
    found = found.sort_values(
        ["pt_key", "masking_ratio", "drug"], ascending=[True, False, True], kind="mergesort"
    )
    return found.groupby("pt_key", sort=False).head(k)[["pt_key", "drug", "masking_ratio"]]


def removals(
    con: duckdb.DuckDBPyConnection, k: int, drug_rows: Callable[[], None]
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per term and stratum the cases its top-k maskers take off c and d (pt_key, stratum,
    c_removed, d_removed), and each term's maskers, highest ratio first, '; '-joined.

    `drug_rows()` writes the background's drugs (`DRUG_ROWS`: the substance is never a masker)
    once `_mask_cases` is built.
    With D the background's drugs x cases and T its cases x terms 0/1 matrices, every pair's
    c_M is D T and n_M the row counts of D (both counted in SQL, on integers), a term's c the
    column counts of T; a term's maskers' cases are the union of their rows of D."""
    if k == 0:
        return _nothing(), {}
    try:
        con.execute(_CASES)
        con.execute(_STRATUM_IDS)
        drug_rows()
        for statement in (_TERM_IDS, _EVENTS):
            con.execute(statement)
        return _removals(con, k)
    finally:
        for table in _TEMP:
            con.execute(f"DROP TABLE IF EXISTS {table}")
        con.execute("DROP VIEW IF EXISTS _mask_cases")


def _nothing() -> pd.DataFrame:
    """No term loses a case."""
    return pd.DataFrame({"pt_key": [], "stratum": [], "c_removed": [], "d_removed": []})


def _column(con: duckdb.DuckDBPyConnection, sql: str) -> list[Any]:
    return [r[0] for r in con.execute(sql).fetchall()]


def _removals(con: duckdb.DuckDBPyConnection, k: int) -> tuple[pd.DataFrame, dict[str, str]]:
    """`removals` from the `_mask_*` temp tables."""
    n_background = int(_column(con, "SELECT count(*) FROM _mask_cases")[0])
    n_rows = int(_column(con, "SELECT coalesce(max(rowid), -1) + 1 FROM _sig_cases")[0])
    drug_names = _column(con, "SELECT drug FROM _mask_drug_ids ORDER BY drug_id")
    terms = _column(con, "SELECT pt_key FROM _mask_term_ids ORDER BY term_id")
    if not terms or not drug_names or n_background == 0:
        return _nothing(), {}
    found = con.execute("SELECT ci, term_id FROM _mask_events").fetchnumpy()
    events = incidence(np.asarray(found["ci"]), np.asarray(found["term_id"]), (n_rows, len(terms)))
    both = con.execute(_PAIRS).fetchnumpy()
    pair_drug = np.asarray(both["drug_id"], dtype=np.int64)
    pair_term = np.asarray(both["term_id"], dtype=np.int64)
    n_m = np.zeros(len(drug_names), dtype=np.int64)
    found = con.execute(_N_M).fetchnumpy()
    n_m[np.asarray(found["drug_id"])] = np.asarray(found["n_m"])
    events = events.tocsc()
    c = np.diff(events.indptr)
    pairs = pd.DataFrame(
        {
            "pt_key": np.asarray(terms, dtype=object)[pair_term],
            "drug": np.asarray(drug_names, dtype=object)[pair_drug],
            "c_m": np.asarray(both["c_m"], dtype=np.int64),
            "n_m": n_m[pair_drug],
            "c": c[pair_term],
            "n_background": n_background,
        }
    )
    chosen = top_maskers(pairs, k)
    if chosen.empty:
        return _nothing(), {}
    drug_id = {d: i for i, d in enumerate(drug_names)}
    ids = sorted({drug_id[d] for d in chosen["drug"]})
    found = con.execute(_MASKER_CASES, {"ids": ids}).fetchnumpy()
    masker_cases = pd.Series(np.asarray(found["ci"])).groupby(np.asarray(found["drug_id"]))
    cases_of = {int(i): group.to_numpy() for i, group in masker_cases}
    strata = _column(con, _STRATA)
    found = con.execute(_CASE_STRATA).fetchnumpy()
    stratum = np.full(n_rows, -1, dtype=np.int64)  # -1: not a background case, never masked
    stratum[np.asarray(found["ci"])] = np.asarray(found["stratum_id"])
    term_id = {t: i for i, t in enumerate(terms)}
    rows = []
    for pt_key, own in chosen.groupby("pt_key", sort=True):
        masked = np.zeros(n_rows, dtype=bool)
        for i in own["drug"].map(drug_id):
            masked[cases_of[int(i)]] = True
        j = term_id[pt_key]
        with_term = events.indices[events.indptr[j] : events.indptr[j + 1]]
        n_removed = np.bincount(stratum[masked], minlength=len(strata))
        c_removed = np.bincount(stratum[with_term[masked[with_term]]], minlength=len(strata))
        for s in np.flatnonzero(n_removed):
            rows.append((pt_key, strata[s], int(c_removed[s]), int(n_removed[s] - c_removed[s])))
    removed = pd.DataFrame(rows, columns=["pt_key", "stratum", "c_removed", "d_removed"])
    names_by_term = chosen.groupby("pt_key", sort=False)["drug"].agg(MASKER_SEPARATOR.join)
    return removed, names_by_term.to_dict()
