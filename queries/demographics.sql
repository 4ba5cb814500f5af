-- name: demographics
-- description: Cases involving a substance by sex and age group (years, from age and age_cod).
-- param: substance VARCHAR = 'kratom' -- substance name as extracted
-- counts: deduplicated cases per sex and age group; 'unknown' where not reported or implausible
WITH hit AS (SELECT DISTINCT caseid FROM substance_hits WHERE substance = $substance)
SELECT c.sex,
    CASE WHEN c.age_years IS NULL THEN 'unknown'
         WHEN c.age_years < 18 THEN '0-17'
         WHEN c.age_years < 25 THEN '18-24'
         WHEN c.age_years < 35 THEN '25-34'
         WHEN c.age_years < 45 THEN '35-44'
         WHEN c.age_years < 55 THEN '45-54'
         WHEN c.age_years < 65 THEN '55-64'
         ELSE '65+' END AS age_group,
    count(*) AS n_cases,
    round(avg(c.age_years), 1) AS mean_age_years
FROM cases c JOIN hit USING (caseid)
GROUP BY ALL
ORDER BY c.sex, age_group;
