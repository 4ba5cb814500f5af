"""Time the EBGM prior's inputs and fit on a cached database, read-only (issue 12).

`dump DB OUT.npz` counts the drug-term pairs as the default signals run does (`_duckdb_counts`
for kratom through the latest quarter) on a read-only connection and saves their n and e;
`fit NPZ` fits the prior on them and prints the hyperparameters and the time; `first-run DB` does
both in one process as a first signals run does (counts, pairs, `fit_pairs`), without writing the
database. Run each under `/usr/bin/time -v` for its peak RSS.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np


def dump(db: Path, out: Path | None, memory_limit: str) -> dict[str, object]:
    """Count the pairs of the default signals run on `db` (read-only) and save n, e to `out`;
    without `out`, fit the prior on them as `signals.fit_pairs` does."""
    import duckdb

    from surveillance.extract import resolve
    from surveillance.signals import _duckdb_counts, fit_pairs

    with tempfile.TemporaryDirectory(prefix="prior-fit-") as spill:
        con = duckdb.connect(
            str(db),
            read_only=True,
            config={"memory_limit": memory_limit, "temp_directory": spill},
        )
        start = time.perf_counter()
        counts = _duckdb_counts(con, resolve("kratom"), None)
        counted = time.perf_counter()
        if out is None:
            prior = fit_pairs(counts.pairs)
            con.close()
            return {
                "counts_s": counted - start,
                "pairs_and_fit_s": time.perf_counter() - counted,
                **prior.__dict__,
            }
        n, e = counts.pairs()
        paired = time.perf_counter()
        con.close()
    np.savez(out, n=n, e=e)
    return {"counts_s": counted - start, "pairs_s": paired - counted, "n_pairs": int(n.size)}


def fit(npz: Path) -> dict[str, object]:
    """Fit the prior on the pairs saved in `npz`; hyperparameters, loglik and seconds."""
    from surveillance import stats

    data = np.load(npz)
    n, e = data["n"], data["e"]
    start = time.perf_counter()
    prior = stats.fit_prior(n, e)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, **prior.__dict__}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    d = sub.add_parser("dump")
    d.add_argument("db", type=Path)
    d.add_argument("out", type=Path)
    d.add_argument("--memory-limit", default="4GB")
    f = sub.add_parser("fit")
    f.add_argument("npz", type=Path)
    r = sub.add_parser("first-run")
    r.add_argument("db", type=Path)
    r.add_argument("--memory-limit", default="4GB")
    args = parser.parse_args()
    if args.command == "dump":
        result = dump(args.db, args.out, args.memory_limit)
    elif args.command == "first-run":
        result = dump(args.db, None, args.memory_limit)
    else:
        result = fit(args.npz)
    print(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
