"""The Spark engine: from the Parquet export, the same a, b, c, d, statistics and drug-by-term
pairs as DuckDB's engine on the database, by the same SQL files (transpiled, not copied).

Needs the spark extra (pyspark, sqlglot) and Java 17; skipped with the reason where they are
missing. One local[2] session serves the module."""

from __future__ import annotations

import io
import re
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

pytestmark = pytest.mark.slow
pytest.importorskip("pyspark", reason="pyspark is not installed: pip install '.[spark]'")
pytest.importorskip("sqlglot", reason="sqlglot is not installed: pip install '.[spark]'")
if shutil.which("java") is None:
    pytest.skip("Java (17) is not installed: Spark cannot start", allow_module_level=True)

from pyspark.errors import PySparkException  # noqa: E402

from surveillance import signals as signals_module  # noqa: E402
from surveillance import spark as spark_module  # noqa: E402
from surveillance.cli import cli  # noqa: E402
from surveillance.db import connect  # noqa: E402
from surveillance.errors import (  # noqa: E402
    InputError,
    NoDataError,
    SurveillanceError,
    UsageError,
)
from surveillance.extract import resolve  # noqa: E402
from surveillance.parquet import export_parquet  # noqa: E402
from surveillance.signals import OUTPUT_COLUMNS, signals  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def export(series_db, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The multi-era series database exported as Parquet (`surveillance export`)."""
    dest = tmp_path_factory.mktemp("spark") / "export"
    with connect(series_db[1]) as con:
        signals(con, resolve("kratom"), min_cases=1)  # the database current, kratom extracted
        export_parquet(con, dest)
    return dest


@pytest.fixture(scope="module")
def session() -> Iterator[Any]:
    with spark_module.spark_session(
        "local[2]", **{"spark.sql.shuffle.partitions": "4", "spark.default.parallelism": "2"}
    ) as s:
        yield s


def _sorted_pairs(pairs: tuple[Any, Any]) -> np.ndarray:
    n, e = (np.asarray(x, dtype=float) for x in pairs)
    order = np.lexsort((e, n))
    return np.column_stack([n[order], e[order]])


@pytest.mark.parametrize("roles", [None, "PS,SS"])
def test_spark_counts_and_statistics_equal_duckdb(series_db, export, session, roles) -> None:
    kratom = resolve("kratom")
    with connect(series_db[1]) as con:
        duck = signals(con, kratom, roles=roles, min_cases=1)
        want = signals_module._duckdb_counts(con, kratom, duck.roles)
        want_pairs = want.pairs()
    spark_module.register_export(session, export)
    got = spark_module.spark_counts(session, kratom, duck.roles)
    got_pairs = got.pairs()
    assert len(want_pairs[0]) > 1000 and len(want.cells) > 20
    np.testing.assert_allclose(_sorted_pairs(got_pairs), _sorted_pairs(want_pairs), rtol=1e-12)
    cells = ["pt_key", "stratum", "n_term", "a"]
    pd.testing.assert_frame_equal(
        got.cells[cells].sort_values("pt_key").reset_index(drop=True),
        want.cells[cells].sort_values("pt_key").reset_index(drop=True),
        check_dtype=False,
    )
    pd.testing.assert_frame_equal(got.strata, want.strata, check_dtype=False)
    assert got.exposed == want.exposed and got.names == want.names
    prior = signals_module.fit_pairs(lambda: got_pairs)
    assert prior.n_pairs == duck.prior.n_pairs
    np.testing.assert_allclose(prior.loglik_full, duck.prior.loglik_full, rtol=1e-9)
    run = signals_module.signal_run(
        got, duck.prior, kratom, duck.through, duck.roles, (), 1, None, None
    )
    pd.testing.assert_frame_equal(run.table, duck.table, rtol=1e-12)
    assert (run.n_cases, run.n_substance_cases) == (duck.n_cases, duck.n_substance_cases)


def test_cli_prints_the_spark_run(series_db, export, session, monkeypatch) -> None:
    """`signals --engine spark` end to end prints DuckDB's table, and says what counted."""
    runner = CliRunner()
    db = str(series_db[1])
    duck = runner.invoke(cli, ["signals", "--db", db, "--format", "csv", "--min-cases", "2"])
    args = ["--engine", "spark", "--parquet", str(export), "--min-cases", "2"]
    spark = runner.invoke(cli, ["signals", *args, "--format", "csv"])
    assert spark.exit_code == 0, spark.output
    assert "\nCounted by spark from the Parquet export.\n" in spark.stderr
    assert spark.stderr.endswith("\nBackground (c, d): all cases without the substance.\n")
    got, want = (pd.read_csv(io.StringIO(r.stdout)) for r in (spark, duck))
    assert list(got.columns) == OUTPUT_COLUMNS and len(got) > 10
    pd.testing.assert_frame_equal(got, want, rtol=1e-7)
    with connect(series_db[1]) as con:
        run = signals(con, resolve("kratom"), min_cases=2)
    monkeypatch.setattr(spark_module, "spark_signals", lambda *a, **k: replace(run, engine="spark"))
    table = runner.invoke(cli, ["signals", *args, "--format", "table"])
    assert table.exit_code == 0, table.output
    assert "; counted by Spark from the Parquet export;" in " ".join(table.stdout.split())


def test_spark_refuses_what_it_does_not_count(export, session, tmp_path, monkeypatch) -> None:
    kratom = resolve("kratom")
    tampered = tmp_path / "tampered"
    shutil.copytree(export, tampered)
    victim = next((tampered / "case_reactions").rglob("*.parquet"))
    victim.write_bytes(victim.read_bytes() + b"x")
    with pytest.raises(InputError, match="does not match the manifest's sha256"):
        spark_module.spark_signals(tampered, kratom, session=session)
    with pytest.raises(NoDataError, match=r"holds no matches of kratom 0\.0 "):
        spark_module.spark_signals(export, replace(kratom, version="0.0"), session=session)

    def fail(*args: Any) -> Any:
        raise PySparkException(message="an executor was lost")

    with monkeypatch.context() as m:
        m.setattr(spark_module, "spark_counts", fail)
        with pytest.raises(SurveillanceError, match=r"^Spark failed on .*: an executor was lost$"):
            spark_module.spark_signals(export, kratom, session=session)
    with pytest.raises(UsageError, match=r"latest quarter of the export \(2023Q1\) only"):
        spark_module.spark_signals(export, kratom, through="2019Q1", session=session)
    with pytest.raises(UsageError, match="--stratify is not supported"):
        spark_module.spark_signals(export, kratom, stratify="sex", session=session)
    runner = CliRunner()
    for args, message in (
        (["--engine", "spark"], "Error: --engine spark needs --parquet DIR"),
        (["--parquet", str(export)], "Error: --parquet goes with --engine spark"),
        (
            ["--engine", "spark", "--parquet", str(export), "--through", "2019Q1"],
            "Error: --engine spark counts the latest quarter of the export (2023Q1) only",
        ),
    ):
        out = runner.invoke(cli, ["signals", *args])
        assert out.exit_code == 2, out.output
        assert out.stderr.startswith(message), out.stderr
        assert len(out.stderr.splitlines()) == 1


def test_the_shared_sql_files_are_the_only_copy() -> None:
    """The Spark module runs the queries of queries/signals/ transpiled: it has no SQL of its
    own, and the DuckDB engine's latest-quarter path none either. Every file is read by the
    shared path, or (pair_*.sql, numbering for DuckDB's sparse drug-by-term product, which
    tests/test_signals.py checks against pairs.sql) by `drug_term`."""
    source = (ROOT / "surveillance" / "spark.py").read_text(encoding="utf-8")
    assert not re.search(r"\b(SELECT|FROM|JOIN|GROUP BY)\b", source)
    shared = (ROOT / "surveillance" / "signals.py").read_text(encoding="utf-8")
    start = shared.index("def shared_counts(")
    latest_path = shared[start : shared.index("def _term_names(")]
    assert not re.search(r"\b(SELECT|GROUP BY)\b", latest_path)
    files = {p.stem for p in (ROOT / "queries" / "signals").glob("*.sql")}
    sparse = (ROOT / "surveillance" / "drug_term.py").read_text(encoding="utf-8")
    used = (
        {q for _, q in signals_module.SIGNAL_VIEWS}
        | set(re.findall(r'frame\("(\w+)"\)', latest_path))
        | set(re.findall(r'register\("\w+", "(\w+)"\)', latest_path))
        | set(re.findall(r"""sql\(["'](\w+)["']\)""", sparse))
    )
    assert used == files
    for name in sorted(files):
        text = spark_module.transpile(signals_module.signal_sql(name))
        assert "$" not in text, name
