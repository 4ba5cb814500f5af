-- Signals, DuckDB's engine: every deduplicated case numbered 0..N-1 once (kept as a temp table,
-- so that the drug and term rows of the sparse drug-by-term product share one numbering).
-- reads: cases
SELECT caseid, CAST(row_number() OVER () - 1 AS INTEGER) AS ci FROM cases
