"""Case listings for a substance and the full record of one case.

Reads the clean layer and `substance_hits` (through the named query `substance_cases`); writes
nothing except, for a user's term file not yet extracted, its `substance_hits`.
"""

from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd

from .errors import NoDataError, UsageError
from .extract import ensure_extracted, has_table
from .faers_format import Quarter
from .query import run_query
from .substances import Substance


def _quarter(text: str | None, option: str) -> str | None:
    if text is None:
        return None
    try:
        return str(Quarter.parse(text))
    except ValueError as e:
        raise UsageError(f"{option}: {e}") from e


def cases(
    con: duckdb.DuckDBPyConnection,
    substance: Substance,
    since: str | None = None,
    until: str | None = None,
    roles: str | None = None,
    term: str | None = None,
) -> pd.DataFrame:
    """One row per surviving case that involves the substance (any role unless `roles`)."""
    if not has_table(con, "cases"):
        raise NoDataError("the clean layer is empty; run 'surveillance load' first")
    if roles is not None:
        bad = sorted({r.strip().upper() for r in roles.split(",")} - {"PS", "SS", "C", "I"})
        if bad:
            raise UsageError(f"--roles: unknown role(s) {', '.join(bad)}; use PS, SS, C, I")
    ensure_extracted(con, substance)
    return run_query(
        con,
        "substance_cases",
        substance=substance.name,
        since=_quarter(since, "--since"),
        until=_quarter(until, "--until"),
        roles=roles,
        term=term,
    )


def case(con: duckdb.DuckDBPyConnection, caseid: str) -> dict[str, Any]:
    """Everything known about one case: its surviving report, drugs, reactions, outcomes,
    indications, therapy dates, and every version seen in any quarter."""
    params = {"caseid": str(caseid).strip()}
    summary = con.execute("SELECT * FROM cases WHERE caseid = $caseid", params).fetchdf()
    versions = con.execute(
        """SELECT source, primaryid, caseversion, quarter, fda_dt, i_f_code,
            caseid IN (SELECT caseid FROM raw_deleted) AS deleted_later
        FROM raw_demo WHERE caseid = $caseid
        ORDER BY quarter, try_cast(caseversion AS INTEGER), primaryid""",
        params,
    ).fetchdf()
    if summary.empty and versions.empty:
        raise NoDataError(f"no case {caseid} in the database")
    detail: dict[str, Any] = {"caseid": params["caseid"], "versions": versions}
    if summary.empty:
        detail["note"] = "this case does not survive deduplication (deleted by the FDA)"
        return detail
    detail["case"] = summary
    for table, order in (
        ("case_drugs", "try_cast(drug_seq AS BIGINT)"),
        ("case_reactions", "pt"),
        ("case_outcomes", "outc_cod"),
        ("case_indications", "try_cast(drug_seq AS BIGINT), indi_pt"),
        ("case_therapies", "try_cast(drug_seq AS BIGINT), start_dt"),
    ):
        detail[table.removeprefix("case_")] = con.execute(
            f"SELECT * EXCLUDE (caseid, primaryid, source) FROM {table} "  # noqa: S608
            f"WHERE caseid = $caseid ORDER BY {order}",
            params,
        ).fetchdf()
    return detail
