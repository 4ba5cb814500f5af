-- name: load_history
-- description: Every file loaded, per quarter: zip checksum, rows read, loaded and quarantined.
-- counts: rows (physical lines after the header) per loaded file; rows_read = rows_loaded + rows_quarantined
SELECT quarter, file, table_name, zip_sha256, rows_read, rows_loaded, rows_quarantined,
       tool_version, loaded_at
FROM load_log
ORDER BY quarter, table_name;
