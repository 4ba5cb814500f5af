-- name: substance_cases
-- description: One row per surviving case that involves the substance, with its drugs, reactions and outcomes.
-- param: substance VARCHAR = 'kratom' -- substance name as extracted (kratom, 7-oh, or a user's)
-- param: since VARCHAR = NULL -- first FDA quarter (of the case's latest version), e.g. 2019Q1
-- param: until VARCHAR = NULL -- last FDA quarter, e.g. 2024Q4
-- param: roles VARCHAR = NULL -- comma-separated drug roles that count (PS,SS,C,I); NULL = any
-- param: term VARCHAR = NULL -- keep cases with a reaction term containing this text (any case)
-- counts: deduplicated cases (FDA rule: latest version per caseid, deleted cases removed)
WITH hits AS (
    SELECT * FROM substance_hits
    WHERE substance = $substance
      AND role_counts(role_cod, $roles)
),
hit_cases AS (
    SELECT caseid,
        list_sort(list_distinct(list(role_cod))) AS roles,
        list_sort(list_distinct(list(matched_string))) AS matched_strings
    FROM hits GROUP BY caseid
),
reactions AS (
    SELECT caseid, list_sort(list_distinct(list(pt))) AS reactions
    FROM case_reactions WHERE caseid IN (SELECT caseid FROM hit_cases) GROUP BY caseid
),
outcomes AS (
    SELECT caseid, list_sort(list_distinct(list(outc_cod))) AS outcomes
    FROM case_outcomes WHERE caseid IN (SELECT caseid FROM hit_cases) GROUP BY caseid
),
co AS (
    SELECT d.caseid,
        list_sort(list_distinct(list(upper(trim(coalesce(d.prod_ai, d.drugname)))))) AS co_reported
    FROM case_drugs d JOIN hit_cases h USING (caseid)
    WHERE NOT EXISTS (
          SELECT 1 FROM substance_hits s
          WHERE s.substance = $substance AND s.caseid = d.caseid AND s.drug_seq = d.drug_seq)
      AND coalesce(d.prod_ai, d.drugname) IS NOT NULL
    GROUP BY d.caseid
)
SELECT c.caseid, c.primaryid, c.quarter, c.fda_date AS fda_dt, c.event_dt, c.age_years, c.sex,
    c.country, c.reporter_type, h.roles, h.matched_strings,
    coalesce(r.reactions, []) AS reactions, coalesce(o.outcomes, []) AS outcomes,
    coalesce(co.co_reported, []) AS co_reported
FROM cases c
JOIN hit_cases h USING (caseid)
LEFT JOIN reactions r USING (caseid)
LEFT JOIN outcomes o USING (caseid)
LEFT JOIN co USING (caseid)
WHERE ($since IS NULL OR c.quarter >= upper($since))
  AND ($until IS NULL OR c.quarter <= upper($until))
  AND ($term IS NULL OR EXISTS (
      SELECT 1 FROM case_reactions x
      WHERE x.caseid = c.caseid AND contains(lower(x.pt), lower($term))))
ORDER BY c.quarter, c.caseid;
