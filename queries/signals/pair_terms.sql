-- Signals, DuckDB's engine: the term side of the drug-by-term table as integers, a row per
-- case and term (signal_reactions): the case's number and the term's, terms numbered 0.. in
-- pt_key order over pt_terms.
-- reads: signal_reactions (reactions.sql), signal_case_index (pair_cases.sql), pt_terms
SELECT c.ci, t.term_id
FROM signal_reactions r
JOIN signal_case_index c ON c.caseid = r.caseid
JOIN (SELECT pt_key, CAST(row_number() OVER (ORDER BY pt_key) - 1 AS INTEGER) AS term_id
      FROM pt_terms) t ON t.pt_key = r.pt_key
