-- name: co_reported_substances
-- description: Other drugs reported in the substance's cases, ranked: the polysubstance picture.
-- param: substance VARCHAR = 'kratom' -- substance name as extracted
-- param: limit_rows INTEGER = 30 -- how many to show
-- param: roles VARCHAR = NULL -- comma-separated roles in which the substance counts (PS,SS,C,I); NULL = any
-- counts: deduplicated substance cases in which each other drug (prod_ai, else drugname) appears
WITH hit_rows AS (SELECT caseid, drug_seq, role_cod FROM substance_hits WHERE substance = $substance),
hit AS (SELECT caseid FROM involved_cases($substance, $roles)),
others AS (
    SELECT DISTINCT d.caseid, upper(trim(coalesce(d.prod_ai, d.drugname))) AS drug
    FROM case_drugs d JOIN hit USING (caseid)
    WHERE NOT EXISTS (
        SELECT 1 FROM hit_rows r WHERE r.caseid = d.caseid AND r.drug_seq = d.drug_seq)
      AND coalesce(d.prod_ai, d.drugname) IS NOT NULL
)
SELECT drug, count(*) AS n_cases,
    round(100.0 * count(*) / (SELECT count(*) FROM hit), 1) AS pct_of_substance_cases
FROM others
GROUP BY drug
ORDER BY n_cases DESC, drug
LIMIT $limit_rows;
