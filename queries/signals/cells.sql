-- Signals, shared by the DuckDB and Spark engines: per term co-reported with the substance,
-- the cases with the term (n_term) and those of them involving the substance (a).
-- reads: signal_reactions (reactions.sql), signal_exposed (exposed.sql)
-- counts: deduplicated cases; terms with a >= 1 only
SELECT r.pt_key, 'all' AS stratum, count(*) AS n_term, count(e.caseid) AS a
FROM signal_reactions r
LEFT JOIN signal_exposed e ON e.caseid = r.caseid
GROUP BY r.pt_key
HAVING count(e.caseid) > 0
