-- name: cases_by_quarter
-- description: New cases involving a substance per loaded quarter of initial FDA receipt, beside all new cases, with the substance's share; and the cases per quarter of their latest version.
-- param: substance VARCHAR = 'kratom' -- substance name as extracted
-- counts: deduplicated cases; n_cases and n_all_cases by initial receipt (cases.initial_quarter, definitions.NEW_CASE); n_cases_latest_version by the FDA quarter of each case's surviving version; one row per loaded quarter (cases first received in a quarter not loaded are in no row)
WITH hit AS (SELECT caseid FROM involved_cases($substance, NULL)),
flagged AS (
    SELECT c.initial_quarter, c.quarter, h.caseid IS NOT NULL AS has_substance
    FROM cases c LEFT JOIN hit h USING (caseid)
),
initial AS (
    SELECT initial_quarter AS quarter,
        count(*) FILTER (WHERE has_substance) AS n_cases,
        count(*) AS n_all_cases
    FROM flagged GROUP BY initial_quarter
),
latest AS (
    SELECT quarter, count(*) FILTER (WHERE has_substance) AS n_cases_latest_version
    FROM flagged GROUP BY quarter
)
SELECT q.quarter,
    coalesce(i.n_cases, 0) AS n_cases,
    coalesce(i.n_all_cases, 0) AS n_all_cases,
    round(100.0 * i.n_cases / nullif(i.n_all_cases, 0), 3) AS pct_of_all_cases,
    coalesce(l.n_cases_latest_version, 0) AS n_cases_latest_version
FROM quarters q
LEFT JOIN initial i ON i.quarter = q.quarter
LEFT JOIN latest l ON l.quarter = q.quarter
ORDER BY q.quarter;
