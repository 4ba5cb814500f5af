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

import itertools
import os
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import duckdb
import numpy as np
from scipy import sparse

_WORKERS = max(1, os.cpu_count() or 1)
"""Threads of the sparse product: one per core."""


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
    # scipy's sparse routines release the GIL: the two matrices are built side by side and the
    # product is taken in blocks of drugs on every core.
    with ThreadPoolExecutor(_WORKERS) as pool:
        building = pool.submit(incidence, drug, drug_case, (n_drugs, n_cases))
        t = incidence(term_case, term, (n_cases, n_terms))
        d = building.result()
        n_drug = np.diff(d.indptr).astype(np.int64)
        n_term = np.bincount(t.indices, minlength=n_terms).astype(np.int64)
        rows, cols, n = _product(d, t, pool)
    del d, t
    return n.astype(float), n_drug[rows] * n_term[cols] / n_cases


def _product(
    d: sparse.csr_matrix, t: sparse.csr_matrix, pool: ThreadPoolExecutor
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nonzero entries (row, column, value) of d @ t, computed in row blocks of d with about
    equal numbers of entries, one per worker. A sparse product stores no zero sums."""
    bounds = np.searchsorted(d.indptr, np.linspace(0, d.nnz, _WORKERS + 1)[1:-1])
    edges = [0, *sorted({int(b) for b in bounds}), d.shape[0]]
    blocks = [slice(a, b) for a, b in itertools.pairwise(edges) if b > a]
    parts = list(pool.map(lambda rows: (_rows(d, rows) @ t).tocoo(), blocks))
    return (
        np.concatenate([p.row + b.start for p, b in zip(parts, blocks, strict=True)]),
        np.concatenate([p.col for p in parts]),
        np.concatenate([p.data for p in parts]),
    )


def _rows(matrix: sparse.csr_matrix, rows: slice) -> sparse.csr_matrix:
    """A block of consecutive rows of a CSR matrix as a view of its entries, not a copy."""
    first, last = matrix.indptr[rows.start], matrix.indptr[rows.stop]
    return sparse.csr_matrix(
        (
            matrix.data[first:last],
            matrix.indices[first:last],
            matrix.indptr[rows.start : rows.stop + 1] - first,
        ),
        shape=(rows.stop - rows.start, matrix.shape[1]),
        copy=False,
    )
