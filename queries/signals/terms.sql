-- Signals, shared by the DuckDB and Spark engines: each reaction term's display spelling.
-- counts: one row per MedDRA term key
SELECT pt_key, pt FROM pt_terms
