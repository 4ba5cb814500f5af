-- Signals, shared by the DuckDB and Spark engines: the drug-by-term table the EBGM prior is
-- fitted on: per drug-term pair with n >= 1 the cases with both (n) and the count expected
-- under independence (e = cases with the drug * cases with the term / all cases).
-- param: substance VARCHAR  -- the substance's name in substance_strings
-- param: label VARCHAR  -- the drug name the substance's own rows count under, '[kratom]'
-- param: roles VARCHAR = NULL  -- the drug roles that count, e.g. 'PS,SS' (NULL = any role)
-- reads: cases, case_drugs, substance_strings, pt_terms, signal_reactions (reactions.sql)
-- counts: deduplicated cases; a drug is its active ingredient (prod_ai, else drugname,
-- upper-cased), a row matching the substance is the substance itself
WITH drug_rows AS (
    SELECT g.caseid,
        CASE WHEN sn.string IS NOT NULL OR sa.string IS NOT NULL THEN $label
             ELSE upper(trim(coalesce(g.prod_ai, g.drugname))) END AS drug
    FROM case_drugs g
    LEFT JOIN substance_strings sn
      ON sn.substance = $substance AND sn.field = 'drugname' AND sn.string = g.drugname
    LEFT JOIN substance_strings sa
      ON sa.substance = $substance AND sa.field = 'prod_ai' AND sa.string = g.prod_ai
    WHERE ($roles IS NULL OR list_contains(string_split(upper(replace($roles, ' ', '')), ','), upper(trim(g.role_cod))))
      AND coalesce(g.prod_ai, g.drugname) IS NOT NULL),
-- Drugs and terms numbered, so that the big DISTINCT, join and count go over integers.
drug_ids AS (
    SELECT drug, row_number() OVER (ORDER BY drug) AS drug_id
    FROM (SELECT DISTINCT drug FROM drug_rows) d),
term_ids AS (SELECT pt_key, row_number() OVER (ORDER BY pt_key) AS term_id FROM pt_terms),
drugs AS (SELECT DISTINCT r.caseid, i.drug_id FROM drug_rows r JOIN drug_ids i ON i.drug = r.drug),
reac AS (SELECT r.caseid, t.term_id FROM signal_reactions r JOIN term_ids t ON t.pt_key = r.pt_key),
pairs AS (
    SELECT d.drug_id, r.term_id, count(*) AS n
    FROM drugs d JOIN reac r ON r.caseid = d.caseid
    GROUP BY d.drug_id, r.term_id),
drug_totals AS (SELECT drug_id, count(*) AS n_drug FROM drugs GROUP BY drug_id),
term_totals AS (SELECT term_id, count(*) AS n_term FROM reac GROUP BY term_id),
all_cases AS (SELECT count(*) AS n_cases FROM cases)
SELECT p.n, i.n_drug * t.n_term / a.n_cases AS e
FROM pairs p
JOIN drug_totals i ON i.drug_id = p.drug_id
JOIN term_totals t ON t.term_id = p.term_id
CROSS JOIN all_cases a
