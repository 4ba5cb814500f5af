-- name: cases_by_reporter_type
-- description: Cases involving a substance by the reporter's occupation (MD, PH, OT, HP, RN, LW, CN).
-- param: substance VARCHAR = 'kratom' -- substance name as extracted
-- counts: deduplicated cases per reporter type of the surviving version
WITH hit AS (SELECT caseid FROM involved_cases($substance, NULL))
SELECT coalesce(c.reporter_type, 'not reported') AS reporter_type,
    coalesce(c.reporter_type_label, 'Not reported / other') AS reporter_type_label,
    count(*) AS n_cases,
    round(100.0 * count(*) / (SELECT count(*) FROM hit), 1) AS pct_of_substance_cases
FROM cases c JOIN hit USING (caseid)
GROUP BY ALL
ORDER BY n_cases DESC, reporter_type;
