-- name: cases_by_quarter
-- description: Cases involving a substance per FDA quarter, beside all cases, with the substance's share.
-- param: substance VARCHAR = 'kratom' -- substance name as extracted
-- counts: deduplicated cases, by the FDA quarter of each case's surviving version
WITH hit AS (SELECT DISTINCT caseid FROM substance_hits WHERE substance = $substance)
SELECT c.quarter,
    count(*) FILTER (WHERE h.caseid IS NOT NULL) AS n_cases,
    count(*) AS n_all_cases,
    round(100.0 * count(*) FILTER (WHERE h.caseid IS NOT NULL) / count(*), 3) AS pct_of_all_cases
FROM cases c LEFT JOIN hit h USING (caseid)
GROUP BY c.quarter
ORDER BY c.quarter;
