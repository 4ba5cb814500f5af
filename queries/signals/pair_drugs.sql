-- Signals, DuckDB's engine: the drug side of the drug-by-term table as integers, a row per drug
-- row of a case (signal_drugs, from drugs.sql): the case's number and the drug's, drugs numbered
-- 0.. in name order. Repeats are summed away by the sparse product (signals.sparse_pairs).
-- reads: signal_drugs (drugs.sql), signal_case_index (pair_cases.sql)
SELECT c.ci, i.drug_id
FROM signal_drugs d
JOIN signal_case_index c ON c.caseid = d.caseid
JOIN (SELECT drug, CAST(row_number() OVER (ORDER BY drug) - 1 AS INTEGER) AS drug_id
      FROM (SELECT DISTINCT drug FROM signal_drugs) u) i ON i.drug = d.drug
