-- Signals, shared by the DuckDB and Spark engines: the cases involving the substance.
-- param: substance VARCHAR  -- the substance's name in substance_hits
-- param: roles VARCHAR = NULL  -- the drug roles that count, e.g. 'PS,SS' (NULL = any role)
-- counts: distinct caseids with a drug row matching the substance in a counted role
-- The role rule is clean's role_counts macro inlined (tests/test_signals.py checks they agree).
SELECT DISTINCT h.caseid
FROM substance_hits h
WHERE h.substance = $substance
  AND ($roles IS NULL OR list_contains(string_split(upper(replace($roles, ' ', '')), ','), upper(trim(h.role_cod))))
