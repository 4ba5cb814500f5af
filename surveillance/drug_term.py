"""The drug-by-term table the EBGM prior is fitted on, counted by DuckDB's engine as a sparse
matrix product: with D the drugs x cases and T the cases x terms incidence matrices (0/1), the
pair counts are n = D T, a drug's cases the row counts of D and a term's the column counts of T.

It is the table `queries/signals/pairs.sql` counts (Spark runs that file): the same drug rows
(`drugs.sql`) and case terms (`reactions.sql`), numbered by `pair_cases.sql`, `pair_drugs.sql` and
`pair_terms.sql`. On the whole archive the SQL form joins every drug row with every term of its
case (225 M rows) and groups them into 23.5 M pairs, most of a first signals run's time; the
product does the same sums in compiled code over two integer columns per side.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import duckdb
import numpy as np
from scipy import sparse


def sparse_pairs(
    con: duckdb.DuckDBPyConnection, sql: Callable[[str], str], values: Mapping[str, Any]
) -> tuple[np.ndarray, np.ndarray]:
    """n and e of every drug-term pair with n >= 1 over the clean layer, in no set order.

    `sql(name)` gives a `queries/signals/` file's text; `values` the bound parameters of
    `drugs.sql` (substance, label, roles)."""
    # The file texts are the project's constants, never input.
    con.execute(f"CREATE OR REPLACE TEMP TABLE signal_case_index AS\n{sql('pair_cases')}")
    try:
        found = con.execute("SELECT count(*) FROM signal_case_index").fetchone()
        n_cases = int(found[0]) if found else 0
        # drugs.sql inlined as a CTE, not kept: its rows are read once here.
        drugs = con.execute(
            f"WITH signal_drugs AS (\n{sql('drugs')}\n)\n{sql('pair_drugs')}", dict(values)
        ).fetchnumpy()
        terms = con.execute(sql("pair_terms")).fetchnumpy()
        found = con.execute("SELECT count(*) FROM pt_terms").fetchone()
        n_terms = int(found[0]) if found else 0
    finally:
        con.execute("DROP TABLE IF EXISTS signal_case_index")
    return pair_table(
        np.asarray(drugs["ci"]),
        np.asarray(drugs["drug_id"]),
        np.asarray(terms["ci"]),
        np.asarray(terms["term_id"]),
        n_cases,
        n_terms,
    )


def incidence(rows: np.ndarray, cols: np.ndarray, shape: tuple[int, int]) -> sparse.csr_matrix:
    """The 0/1 matrix with a one at each (row, col) given, repeats counted once."""
    matrix = sparse.csr_matrix(
        (np.ones(rows.size, dtype=np.int32), (rows, cols)), shape=shape, dtype=np.int32
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1
    return matrix


def pair_table(
    drug_case: np.ndarray,
    drug: np.ndarray,
    term_case: np.ndarray,
    term: np.ndarray,
    n_cases: int,
    n_terms: int,
) -> tuple[np.ndarray, np.ndarray]:
    """n and e of every (drug, term) with n >= 1, from the (case, drug) rows and the (case, term)
    rows (numbered from 0): n the cases with both, e = drug's cases * term's cases / n_cases."""
    if drug.size == 0 or term.size == 0 or n_cases == 0:
        return np.zeros(0), np.zeros(0)
    n_drugs = int(drug.max()) + 1
    d = incidence(drug, drug_case, (n_drugs, n_cases))
    t = incidence(term_case, term, (n_cases, n_terms))
    n_drug = np.diff(d.indptr).astype(np.int64)
    n_term = np.bincount(t.indices, minlength=n_terms).astype(np.int64)
    # A sparse product stores no zero sums: every entry is a pair with n >= 1.
    product = (d @ t).tocoo()
    del d, t
    return product.data.astype(float), n_drug[product.row] * n_term[product.col] / n_cases
