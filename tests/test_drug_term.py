"""The drug-by-term table's sparse product (`surveillance.drug_term`): in row blocks on several
workers it gives every pair with n >= 1 and the same n and e as a dense count, repeats once."""

from __future__ import annotations

import numpy as np
import pytest

import surveillance.drug_term as drug_term


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_pair_table_in_blocks_is_the_dense_count(monkeypatch, workers: int) -> None:
    monkeypatch.setattr(drug_term, "_WORKERS", workers)
    rng = np.random.default_rng(7)
    n_cases, n_drugs, n_terms = 300, 9, 11
    drug_case = rng.integers(0, n_cases, 900).astype(np.int32)
    drug = (rng.integers(0, n_drugs, 900) ** 2 % n_drugs).astype(np.int32)  # uneven drugs
    term_case = rng.integers(0, n_cases, 700).astype(np.int32)
    term = rng.integers(0, n_terms, 700).astype(np.int32)
    n, e = drug_term.pair_table(drug_case, drug, term_case, term, n_cases, n_terms)

    d = np.zeros((n_drugs, n_cases), dtype=np.int64)
    d[drug, drug_case] = 1  # a drug listed twice in a case counts once
    t = np.zeros((n_cases, n_terms), dtype=np.int64)
    t[term_case, term] = 1
    dense = d @ t
    rows, cols = np.nonzero(dense)
    want = sorted(
        zip(
            dense[rows, cols].tolist(),
            (d.sum(1)[rows] * t.sum(0)[cols] / n_cases).tolist(),
            strict=True,
        )
    )
    got = sorted(zip(n.tolist(), e.tolist(), strict=True))
    assert len(got) == len(want) > 0
    assert np.allclose(np.array(got), np.array(want), rtol=1e-12, atol=0)
