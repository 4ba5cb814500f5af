-- name: matched_strings
-- description: The drug strings a substance's rules matched, with the rule and term, for review.
-- param: substance VARCHAR = 'kratom' -- substance name as extracted
-- counts: drug rows and deduplicated cases per matched string
SELECT matched_string, field, rule, term,
    count(*) AS n_drug_rows, count(DISTINCT caseid) AS n_cases
FROM substance_hits
WHERE substance = $substance
GROUP BY ALL
ORDER BY n_cases DESC, matched_string;
