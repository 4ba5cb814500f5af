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

Reads the signals temp tables (`_sig_cases`, `_sig_exposed`, `_sig_events` and the prior's drug
table `_sig_drugs`: each case's drugs as ingredients, in the counted roles, the substance as
its label) after the design has narrowed them. Writes nothing: it returns, per term and stratum,
the cases to take off c and d. The maskers are chosen on the term's crude table (all strata
together) and their cases (the union over the K, none of them a substance case) come off c and
d of that term in every stratum, so stratified cells stay exact. a and b never change; neither
does the EBGM prior.
"""

from __future__ import annotations

from typing import Any

import duckdb
import numpy as np
import pandas as pd

MASKER_SEPARATOR = "; "
"""Between the drug names of a row's `maskers` column."""

# Each background case is a case of _sig_cases not involving the substance. _sig_drugs and
# _sig_events hold cases of _sig_cases only, once per drug or event: the background's rows are
# theirs less the substance's few cases (an anti-join with a small build side, no DISTINCT),
# read twice rather than kept (the drug rows are the whole background's).
_PAIRS = """WITH terms AS (
    SELECT DISTINCT pt_key FROM _sig_events WHERE caseid IN (SELECT caseid FROM _sig_exposed)),
events AS (
    SELECT caseid, pt_key FROM _sig_events
    WHERE caseid NOT IN (SELECT caseid FROM _sig_exposed)
      AND pt_key IN (SELECT pt_key FROM terms)),
drugs AS NOT MATERIALIZED (
    SELECT caseid, drug FROM _sig_drugs
    WHERE caseid NOT IN (SELECT caseid FROM _sig_exposed) AND drug <> $label),
per_drug AS (SELECT drug, count(*) AS n_m FROM drugs GROUP BY drug),
per_term AS (SELECT pt_key, count(*) AS c FROM events GROUP BY pt_key),
pairs AS (
    SELECT e.pt_key, g.drug, count(*) AS c_m FROM events e JOIN drugs g USING (caseid)
    GROUP BY ALL),
background AS (
    SELECT count(*) AS n_background FROM _sig_cases
    WHERE caseid NOT IN (SELECT caseid FROM _sig_exposed))
SELECT p.pt_key, p.drug, p.c_m, d.n_m, t.c, b.n_background
FROM pairs p JOIN per_drug d USING (drug) JOIN per_term t USING (pt_key) CROSS JOIN background b"""
# The background cases that a term's maskers take off its c and d, by stratum: n_removed in
# all, c_removed with the term. Each background case with a masker drug (of any term) is
# reduced to its signature, the sorted list of those drugs; cases are counted once per
# signature, and a term removes the signatures sharing a drug with its maskers (equi-joins
# only: no case set is built per term, no list compared with every other).
_REMOVED = """WITH signature AS (
    SELECT caseid, list_sort(list(drug)) AS drugs FROM _sig_drugs
    WHERE drug IN (SELECT drug FROM _mask_frame)
      AND caseid NOT IN (SELECT caseid FROM _sig_exposed)
    GROUP BY caseid),
ids AS (SELECT drugs, row_number() OVER () AS sig_id FROM (SELECT DISTINCT drugs FROM signature)),
case_sig AS (SELECT s.caseid, i.sig_id FROM signature s JOIN ids i USING (drugs)),
hit AS (
    SELECT DISTINCT f.pt_key, u.sig_id
    FROM (SELECT sig_id, unnest(drugs) AS drug FROM ids) u JOIN _mask_frame f USING (drug)),
per_sig AS (
    SELECT k.sig_id, c.stratum, count(*) AS n_cases
    FROM case_sig k JOIN _sig_cases c USING (caseid) GROUP BY ALL),
all_removed AS (
    SELECT h.pt_key, p.stratum, sum(p.n_cases) AS n_removed
    FROM hit h JOIN per_sig p USING (sig_id) GROUP BY ALL),
with_term AS (
    SELECT e.pt_key, e.stratum, count(*) AS c_removed
    FROM _sig_events e JOIN case_sig k USING (caseid)
    JOIN hit h ON h.pt_key = e.pt_key AND h.sig_id = k.sig_id
    GROUP BY ALL)
SELECT a.pt_key, a.stratum, a.n_removed, coalesce(w.c_removed, 0) AS c_removed
FROM all_removed a LEFT JOIN with_term w USING (pt_key, stratum)"""


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
    con: duckdb.DuckDBPyConnection, k: int, label: str
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Per term and stratum the cases its top-k maskers take off c and d (pt_key, stratum,
    c_removed, d_removed), and each term's maskers, highest ratio first, '; '-joined.

    `label` is the substance's name in `_sig_drugs`, never a masker; `_sig_drugs` must be built."""
    empty = pd.DataFrame({"pt_key": [], "stratum": [], "c_removed": [], "d_removed": []})
    if k == 0:
        return empty, {}
    chosen = top_maskers(con.execute(_PAIRS, {"label": label}).fetchdf(), k)
    if chosen.empty:
        return empty, {}
    con.register("_mask_frame", chosen[["pt_key", "drug"]])
    try:
        removed = con.execute(_REMOVED).fetchdf()
    finally:
        con.unregister("_mask_frame")
    removed["d_removed"] = removed["n_removed"] - removed["c_removed"]
    names = chosen.groupby("pt_key", sort=False)["drug"].agg(MASKER_SEPARATOR.join)
    return removed[["pt_key", "stratum", "c_removed", "d_removed"]], names.to_dict()
