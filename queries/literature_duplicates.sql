-- name: literature_duplicates
-- description: Cases flagged by the literature-duplicate pass (--dedup strict), each beside the case kept: references, age, sex, senders, receipt dates.
-- counts: one row per flagged case (cases.literature_duplicate_of set); empty unless the clean layer was rebuilt with --dedup strict
WITH refs AS (
    SELECT c.caseid, c.age_years, c.sex, c.fda_dt, c.mfr_sndr, c.quarter, r.lit_ref,
        c.literature_duplicate_of
    FROM cases c JOIN reports r ON r.source = c.source AND r.primaryid = c.primaryid
    WHERE c.literature_duplicate_of IS NOT NULL
       OR c.caseid IN (SELECT literature_duplicate_of FROM cases)
),
reactions AS (
    SELECT caseid, list_sort(list_distinct(list(pt))) AS reactions
    FROM case_reactions WHERE caseid IN (SELECT caseid FROM refs) GROUP BY caseid
)
SELECT d.caseid, d.literature_duplicate_of AS kept_caseid, d.age_years, d.sex,
    x.reactions, d.quarter, k.quarter AS kept_quarter, d.fda_dt, k.fda_dt AS kept_fda_dt,
    d.mfr_sndr, k.mfr_sndr AS kept_mfr_sndr, d.lit_ref, k.lit_ref AS kept_lit_ref
FROM refs d
JOIN refs k ON k.caseid = d.literature_duplicate_of
LEFT JOIN reactions x ON x.caseid = d.caseid
ORDER BY kept_caseid, d.caseid;
