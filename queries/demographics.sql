-- name: demographics
-- description: Cases involving a substance by sex and age group (years, from age and age_cod).
-- param: substance VARCHAR = 'kratom' -- substance name as extracted
-- counts: deduplicated cases per sex and age group (definitions.AGE_GROUPS via the age_group macro); 'unknown' where not reported or implausible
WITH hit AS (SELECT caseid FROM involved_cases($substance, NULL))
SELECT c.sex,
    age_group(c.age_years) AS age_group,
    count(*) AS n_cases,
    round(avg(c.age_years), 1) AS mean_age_years
FROM cases c JOIN hit USING (caseid)
GROUP BY ALL
ORDER BY c.sex, age_group;
