-- Signals, shared by the DuckDB and Spark engines: the drug-by-term table the EBGM prior is
-- fitted on: per drug-term pair with n >= 1 the cases with both (n) and the count expected
-- under independence (e = cases with the drug * cases with the term / all cases).
-- reads: cases, pt_terms, signal_drugs (drugs.sql), signal_reactions (reactions.sql)
-- counts: deduplicated cases. Spark runs this query; DuckDB's engine counts the same table as a
-- sparse product (signals.sparse_pairs, over pair_drugs.sql and pair_terms.sql), and
-- tests/test_signals.py checks that the two agree.
-- Drugs and terms numbered, so that the big DISTINCT, join and count go over integers.
WITH drug_ids AS (
    SELECT drug, row_number() OVER (ORDER BY drug) AS drug_id
    FROM (SELECT DISTINCT drug FROM signal_drugs) d),
term_ids AS (SELECT pt_key, row_number() OVER (ORDER BY pt_key) AS term_id FROM pt_terms),
drugs AS (SELECT DISTINCT r.caseid, i.drug_id FROM signal_drugs r JOIN drug_ids i ON i.drug = r.drug),
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
