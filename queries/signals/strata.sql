-- Signals, shared by the DuckDB and Spark engines: all cases and the substance's cases.
-- reads: cases, signal_exposed (exposed.sql)
-- counts: deduplicated cases (n) and those involving the substance (n_exposed), one stratum
SELECT 'all' AS stratum, count(*) AS n, count(e.caseid) AS n_exposed
FROM cases c
LEFT JOIN signal_exposed e ON e.caseid = c.caseid
