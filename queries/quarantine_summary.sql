-- name: quarantine_summary
-- description: Quarantined lines by quarter, file and reason.
-- param: quarter VARCHAR = NULL -- one quarter such as 2024Q1, or NULL for all
-- counts: n_lines = physical lines kept in quarantine (not loaded into raw_*)
SELECT quarter, file, reason, count(*) AS n_lines, min(line_number) AS first_line
FROM quarantine
WHERE $quarter IS NULL OR quarter = $quarter
GROUP BY quarter, file, reason
ORDER BY quarter, file, reason;
