-- name: top_reactions
-- description: Reaction terms most often reported in the substance's cases.
-- param: substance VARCHAR = 'kratom' -- substance name as extracted
-- param: limit_rows INTEGER = 30 -- how many to show
-- counts: deduplicated substance cases reporting each MedDRA preferred term
WITH hit AS (SELECT caseid FROM involved_cases($substance, NULL))
SELECT r.pt, count(DISTINCT r.caseid) AS n_cases,
    round(100.0 * count(DISTINCT r.caseid) / (SELECT count(*) FROM hit), 1) AS pct_of_substance_cases
FROM case_reactions r JOIN hit USING (caseid)
GROUP BY r.pt
ORDER BY n_cases DESC, r.pt
LIMIT $limit_rows;
