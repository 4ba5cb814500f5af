-- Signals, shared by the DuckDB and Spark engines: each case's reaction terms, once each.
-- counts: one row per (caseid, pt_key) of case_reactions
-- case_reactions is distinct over its columns, and a case fixes primaryid and source and a
-- pt_key fixes pt, so a (caseid, pt_key) repeats only with different drug_rec_act values: at
-- most one of its rows has none. Only the pairs with a drug_rec_act (rare) need the DISTINCT
-- that would otherwise cost a hash of every row.
WITH with_rechallenge AS (
    SELECT DISTINCT caseid, pt_key FROM case_reactions WHERE drug_rec_act IS NOT NULL)
SELECT r.caseid, r.pt_key
FROM case_reactions r
LEFT JOIN with_rechallenge w ON w.caseid = r.caseid AND w.pt_key = r.pt_key
WHERE r.drug_rec_act IS NULL AND w.caseid IS NULL
UNION ALL
SELECT caseid, pt_key FROM with_rechallenge
