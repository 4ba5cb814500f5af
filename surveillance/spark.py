"""Signals on Apache Spark: the DuckDB engine's counts, from the Parquet export.

Reads an export (`surveillance export DIR`: `DIR/<table>/quarter=<YYYYQN>/*.parquet`,
`DIR/<table>.parquet`, `DIR/manifest.json`) as one Spark view per table, runs the shared SQL
files of `queries/signals/` transpiled from DuckDB's dialect by sqlglot with the values bound by
Spark (named `:param` markers, never pasted into the text), and turns the counts into the signal
table by the same code as the DuckDB engine (`signals.signal_run`). Writes nothing. Needs the
`spark` extra (pyspark, sqlglot) and Java 17; the latest quarter of the export only, no strata.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd

from . import stats
from .definitions import roles_option
from .design import BACKGROUND_ALL
from .errors import InputError, NoDataError, SurveillanceError, UsageError
from .faers_format import quarter_option
from .parquet import read_manifest, verify
from .signals import (
    SignalRun,
    check_exposed,
    check_options,
    fit_pairs,
    shared_counts,
    signal_run,
    signal_sql,
    signal_values,
)
from .substances import Substance

MASTER_ENV = "SURVEILLANCE_SPARK_MASTER"
DEFAULT_MASTER = "local[*]"
# The exported tables the shared signals SQL reads, and `quarters` for the latest quarter.
TABLES = (
    "cases",
    "case_drugs",
    "case_reactions",
    "substance_hits",
    "substance_strings",
    "pt_terms",
    "quarters",
)
_SPARK_PARAM = re.compile(r":([a-z_]+)\b")


def transpile(sql: str) -> str:
    """A shared signals query in Spark SQL: DuckDB's `$name` parameters become `:name`."""
    import sqlglot

    return str(sqlglot.transpile(sql, read="duckdb", write="spark")[0])


@contextmanager
def spark_session(master: str | None = None, **config: str) -> Iterator[Any]:
    """A Spark session on `master` (default: env SURVEILLANCE_SPARK_MASTER, else local[*]),
    stopped afterwards unless it was already running. Missing pyspark or Java is one line."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:
        raise UsageError(
            "--engine spark needs the spark extra: pip install 'kratom-surveillance[spark]'"
        ) from e
    builder = SparkSession.builder.master(master or os.environ.get(MASTER_ENV) or DEFAULT_MASTER)
    builder = builder.appName("surveillance signals").config("spark.ui.enabled", "false")
    builder = builder.config("spark.ui.showConsoleProgress", "false")
    for key, value in config.items():
        builder = builder.config(key, value)
    running = SparkSession.getActiveSession()
    try:
        session = builder.getOrCreate()
    except Exception as e:  # pyspark raises its own runtime errors when Java cannot start
        raise UsageError(f"Spark could not start (Java 17 is needed): {e}") from e
    session.sparkContext.setLogLevel("ERROR")
    try:
        yield session
    finally:
        if running is None:
            session.stop()


def register_export(session: Any, parquet: Path) -> dict[str, Any]:
    """One Spark view per exported table the signals read, over the files its manifest lists
    (each checked against its sha256 first); the manifest."""
    manifest = read_manifest(parquet)
    verify(parquet, manifest)
    for table in TABLES:
        entry = manifest["tables"].get(table)
        if entry is None:
            raise InputError(parquet, f"the export has no table {table}")
        files = [str(parquet / name) for name in entry["files"]]
        if not files:
            raise NoDataError(f"{parquet}: the export's {table} is empty")
        reader = session.read
        if entry["partitioned_by"]:
            reader = reader.option("basePath", str(parquet / entry["path"]))
        reader.parquet(*files).createOrReplaceTempView(table)
    return manifest


def spark_counts(session: Any, substance: Substance, roles: str | None) -> Any:
    """The latest quarter's counts by the shared SQL files on the export's views."""
    values = signal_values(substance, roles)

    def query(name: str) -> Any:
        sql = transpile(signal_sql(name))
        args = {key: values[key] for key in dict.fromkeys(_SPARK_PARAM.findall(sql))}
        return session.sql(sql, args=args)

    def register(view: str, name: str) -> None:
        # Kept once computed: each is read by several of the queries after it.
        query(name).cache().createOrReplaceTempView(view)

    def frame(name: str) -> pd.DataFrame:
        return query(name).toPandas()

    return shared_counts(register, frame)


def spark_signals(
    parquet: Path,
    substance: Substance,
    through: str | None = None,
    roles: str | None = None,
    min_cases: int = 3,
    stratify: Sequence[str] | str | None = None,
    sort: str | None = None,
    prior: stats.Prior | None = None,
    master: str | None = None,
    session: Any = None,
    background: str | Path | None = None,
    groups: bool = False,
    group_files: Sequence[str | Path] = (),
    meddra: str | Path | None = None,
    exclude_window: int | None = None,
    era: str | None = None,
    remove_maskers: int | None = None,
    subset: str | None = None,
) -> SignalRun:
    """`signals.signals` on Spark from a Parquet export: the same table, stored nowhere.

    The prior is fitted on the export's drug-by-term table unless one is given. A `session`
    given is used as it is; otherwise one is started on `master` and stopped afterwards."""
    check_options(min_cases, sort)
    if stratify:
        raise UsageError("--stratify is not supported with --engine spark; use --engine duckdb")
    if str(background or BACKGROUND_ALL) != BACKGROUND_ALL or groups or group_files or meddra:
        raise UsageError(
            "--background, --groups, --group-file and --meddra are not supported with "
            "--engine spark; use --engine duckdb"
        )
    if (exclude_window, era, remove_maskers) != (None, None, None):
        raise UsageError(
            "--exclude-window, --era and --remove-maskers are not supported with --engine spark; "
            "use --engine duckdb"
        )
    if subset is not None:
        raise UsageError("--subset is not supported with --engine spark; use --engine duckdb")
    roles = roles_option(roles)
    asked = quarter_option(through, "--through")
    with spark_session(master) if session is None else nullcontext(session) as running:
        try:
            return _run(running, parquet, substance, asked, roles, min_cases, sort, prior)
        except _spark_errors() as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SurveillanceError(f"Spark failed on {parquet}: {first}") from e


def _spark_errors() -> tuple[type[BaseException], ...]:
    """What pyspark raises when a query fails (a bad file, an executor lost, Java errors)."""
    from py4j.protocol import Py4JError
    from pyspark.errors import PySparkException

    return (PySparkException, Py4JError)


def _run(
    session: Any,
    parquet: Path,
    substance: Substance,
    through: str | None,
    roles: str | None,
    min_cases: int,
    sort: str | None,
    prior: stats.Prior | None,
) -> SignalRun:
    manifest = register_export(session, parquet)
    latest = session.table("quarters").agg({"quarter": "max"}).first()[0]
    if latest is None:
        raise NoDataError(f"{parquet}: the export holds no quarter")
    if through is not None and through != latest:
        raise UsageError(
            f"--engine spark counts the latest quarter of the export ({latest}) only; "
            f"use --engine duckdb for --through {through}"
        )
    extracted = {s.get("substance"): s.get("version") for s in manifest["freshness"]["substances"]}
    if extracted.get(substance.name) != substance.version:
        held = f"version {extracted[substance.name]}" if substance.name in extracted else "none"
        raise NoDataError(
            f"{parquet}: the export holds no matches of {substance.name} {substance.version} "
            f"({held}); extract it in the database, then export again"
        )
    counts = spark_counts(session, substance, roles)
    check_exposed(counts, substance, roles, latest)
    if prior is None:
        prior = fit_pairs(counts.pairs)
    data = manifest.get("data_fingerprint")
    run = signal_run(
        counts,
        prior,
        substance,
        latest,
        roles,
        (),
        min_cases,
        sort,
        data if isinstance(data, str) else None,
    )
    return replace(run, engine="spark")
