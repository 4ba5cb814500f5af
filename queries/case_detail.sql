-- name: case_detail
-- description: One case's drugs with roles and doses (the surviving version), for a caseid.
-- param: caseid VARCHAR -- the FAERS caseid (or LAERS CASE)
-- counts: drug rows of the surviving report of that case
SELECT c.caseid, c.primaryid, c.quarter, d.drug_seq, d.role_cod, d.drugname, d.prod_ai,
    d.route, d.dose_vbm, d.dose_amt, d.dose_unit, d.dose_form, d.dose_freq
FROM cases c JOIN case_drugs d USING (caseid)
WHERE c.caseid = $caseid
ORDER BY try_cast(d.drug_seq AS BIGINT);
