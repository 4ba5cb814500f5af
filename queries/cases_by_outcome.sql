-- name: cases_by_outcome
-- description: Cases involving a substance by reported outcome (a case with several outcomes counts under each).
-- param: substance VARCHAR = 'kratom' -- substance name as extracted
-- counts: deduplicated cases per outcome code (labels: definitions.OUTCOME_CODES via the outcome_label macro); n_cases of 'none reported' have no outcome row
WITH hit AS (SELECT caseid FROM involved_cases($substance, NULL)),
labelled AS (
    SELECT h.caseid, coalesce(o.outc_cod, 'none reported') AS outcome
    FROM hit h LEFT JOIN case_outcomes o USING (caseid)
)
SELECT outcome,
    coalesce(outcome_label(outcome), outcome) AS outcome_label,
    count(DISTINCT caseid) AS n_cases,
    round(100.0 * count(DISTINCT caseid) / (SELECT count(*) FROM hit), 1) AS pct_of_substance_cases
FROM labelled
GROUP BY outcome
ORDER BY n_cases DESC, outcome;
