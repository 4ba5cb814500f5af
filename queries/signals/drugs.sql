-- Signals, shared by the DuckDB and Spark engines: each drug row of a case as the drug that the
-- drug-by-term table counts, a row per case_drugs row (a case may list a drug more than once).
-- param: substance VARCHAR  -- the substance's name in substance_strings
-- param: label VARCHAR  -- the drug name the substance's own rows count under, '[kratom]'
-- param: roles VARCHAR = NULL  -- the drug roles that count, e.g. 'PS,SS' (NULL = any role)
-- reads: case_drugs, substance_strings
-- counts: a drug is its active ingredient (prod_ai, else drugname, upper-cased); a row matching
-- the substance is the substance itself
SELECT g.caseid,
    CASE WHEN sn.string IS NOT NULL OR sa.string IS NOT NULL THEN $label
         ELSE upper(trim(coalesce(g.prod_ai, g.drugname))) END AS drug
FROM case_drugs g
LEFT JOIN substance_strings sn
  ON sn.substance = $substance AND sn.field = 'drugname' AND sn.string = g.drugname
LEFT JOIN substance_strings sa
  ON sa.substance = $substance AND sa.field = 'prod_ai' AND sa.string = g.prod_ai
WHERE ($roles IS NULL OR list_contains(string_split(upper(replace($roles, ' ', '')), ','), upper(trim(g.role_cod))))
  AND coalesce(g.prod_ai, g.drugname) IS NOT NULL
