"""Literature duplicates: reference keys on real-looking variants, and the pass of --dedup strict
on a generated series with planted duplicates (the generator's `Series.literature` truth)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pytest

from surveillance import clean, ingest
from surveillance.db import connect
from surveillance.literature import STEP, normalise, parse_reference, reference_keys
from surveillance.query import run_query
from surveillance.synthetic import Series, generate_series

# One article (Kratom hepatotoxicity, J Med Toxicol 2019;15(2):123-127) as senders file it.
SAME_ARTICLE = (
    "Peña R, Jones K, Lee M. Kratom-associated hepatotoxicity. J Med Toxicol. 2019 Mar;"
    "15(2):123-7.",
    "PENA R, ET AL. KRATOM ASSOCIATED HEPATOTOXICITY. J. MED. TOXICOL. 2019;15(2):123-127",
    "Peña, R., Jones, K., & Lee, M. (2019). Kratom-associated hepatotoxicity. Journal of Medical "
    "Toxicology, 15(2), 123\u2013127.",
    "pena r et al.   kratom-associated hepatotoxicity  journal of medical toxicology 2019; 15: 123",
    "Peña R, et al. J Med Toxicol, vol. 15, no. 2, pp. 123-127, 2019",
    "van der PEÑA R, Jones K. Kratom. J Med Toxicol 2019 Mar 4;15(2):0123-7",
)


def test_normalise_folds_case_accents_dashes_and_space() -> None:
    assert normalise("  Peña\u2013MÜLLER\t Østergaard  ") == "pena-muller ostergaard"


@pytest.mark.parametrize("ref", SAME_ARTICLE)
def test_citation_forms_of_one_article_give_one_key(ref: str) -> None:
    assert parse_reference(ref).citation == "cite:pena:2019:15:123"


@pytest.mark.parametrize(
    ("ref", "surname"),
    [
        ("van der Berg A, de Souza B. Kratom. Lancet. 2020;395(10227):e12", "berg"),
        ("Berg A. Kratom. Lancet 2020;395:e12", "berg"),
        ("Le TH, Du X. Kratom. Lancet. 2020;395:e12", "le"),
        ("O'Brien SM. Kratom. Lancet. 2020;395:e12", "obrien"),
        ("GARCIA-LOPEZ M. KRATOM. LANCET. 2020;395:E12", "garcia"),
    ],
)
def test_first_author_surname(ref: str, surname: str) -> None:
    assert parse_reference(ref).citation == f"cite:{surname}:2020:395:e12"


def test_faers_month_between_year_and_volume() -> None:
    ref = (
        "CASTILLO JJ, REAGAN JL. BORTEZOMIB IN PLASMABLASTIC LYMPHOMA. BR J HAEMATOL. "
        "2015;MAY;169(3):352-5"
    )
    assert parse_reference(ref).citation == "cite:castillo:2015:169:352"


@pytest.mark.parametrize(
    ("ref", "doi"),
    [
        ("Smith J. X. 2019;1:2. doi:10.1007/S13181-019-00701-1.", "10.1007/s13181-019-00701-1"),
        ("https://doi.org/10.1016/S0140-6736(20)30183-5).", "10.1016/s0140-6736(20)30183-5"),
        ("DOI: 10.1002/pds.4567; Epub 2018", "10.1002/pds.4567"),
        ("10.1080/15563650.2021.1891234", "10.1080/15563650.2021.1891234"),
    ],
)
def test_doi_is_found_case_folded_without_trailing_punctuation(ref: str, doi: str) -> None:
    assert parse_reference(ref).doi == doi


@pytest.mark.parametrize("ref", ["PMID: 31234567", "pmid 031234567.", "PubMed ID 31234567"])
def test_pubmed_id_is_found(ref: str) -> None:
    assert parse_reference(ref).pmid == "31234567"


def test_distinct_articles_of_one_author_and_year_keep_apart() -> None:
    keys = {
        parse_reference(ref).citation
        for ref in (
            "Peña R, et al. Kratom seizures. J Med Toxicol. 2019;15(2):123-7.",
            "Peña R, et al. Kratom withdrawal. J Med Toxicol. 2019;15(2):150-6.",
            "Peña R, et al. Kratom psychosis. J Med Toxicol. 2019;16(1):123-7.",
            "Peña R, et al. Kratom psychosis. Clin Toxicol. 2019;15(2):123-7.",
        )
    }
    # the last shares surname, year, volume and page with the first: one key, by the rule
    assert len(keys) == 3


def test_identifiers_link_citation_variants_and_conflicts_decide_nothing() -> None:
    refs = {
        "with_doi": "Peña R. Kratom. J Med Toxicol. 2019;15(2):123-7. doi:10.1007/abc.1",
        "citation_only": "PENA R, ET AL. KRATOM. J MED TOXICOL 2019;15:123",
        "pmid_and_citation": "Peña R. Kratom. J Med Toxicol 2019;15:123. PMID: 31234567",
        "pmid_only": "PMID 31234567",
        "doi_only": "https://doi.org/10.1007/ABC.1",
        "other_article": "Adams B. Kratom. Clin Toxicol. 2020;58:9. doi:10.1000/one",
        "same_citation_other_doi": "Adams B. Other. Addict Med. 2020;58:9. doi:10.1000/two",
        "ambiguous_citation": "ADAMS B. KRATOM. 2020;58:9",
    }
    keys = reference_keys(refs.values())
    article = {keys[refs[k]] for k in ("with_doi", "citation_only", "pmid_and_citation")}
    assert article == {keys[refs["pmid_only"]], keys[refs["doi_only"]]} == {"doi:10.1007/abc.1"}
    assert keys[refs["other_article"]] == "doi:10.1000/one"
    assert keys[refs["same_citation_other_doi"]] == "doi:10.1000/two"
    assert refs["ambiguous_citation"] not in keys


@pytest.mark.parametrize("ref", ["LITERATURE", "UNK", "See attached", "Case report 2019", ""])
def test_references_that_name_no_article_get_no_key(ref: str) -> None:
    assert reference_keys([ref]) == {}


def test_unparsed_text_matches_only_itself_after_normalisation() -> None:
    a = "Kratom and the liver: a poster at the Annual Toxicology Meeting, Boston 2019"
    keys = reference_keys([a, a.upper().replace(",", " ;"), a.replace("2019", "2018")])
    assert keys[a] == keys[a.upper().replace(",", " ;")] != keys[a.replace("2019", "2018")]


# --- the pass on a generated series --------------------------------------------------------


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Series, Path]:
    """Two FAERS quarters with planted literature duplicates, loaded and rebuilt (fda)."""
    tmp = tmp_path_factory.mktemp("literature")
    series = generate_series(
        ["2018Q4", "2019Q1"], tmp / "zips", n_cases=20, seed=3, literature=True
    )
    with connect(tmp / "db.duckdb") as con:
        ingest.load(con, [tmp / "zips"])
        clean.rebuild(con, dedup="fda")
    return series, tmp / "db.duckdb"


def _cases(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    return con.execute(
        "SELECT caseid, fda_dt, primaryid, strict_duplicate_of, literature_duplicate_of "
        "FROM cases ORDER BY caseid"
    ).fetchdf()


@pytest.fixture(scope="module")
def rebuilt(planted: tuple[Series, Path]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """The cases and dedup_log under fda, then under strict (and fda again after it)."""
    with connect(planted[1]) as con:
        fda = _cases(con)
        fda_log = con.execute("SELECT step FROM dedup_log").fetchdf()
        clean.rebuild(con, dedup="strict")
        strict = _cases(con)
        log = con.execute("SELECT * FROM dedup_log ORDER BY step_order").fetchdf()
        pairs = run_query(con, "literature_duplicates")
        clean.rebuild(con, dedup="fda")
        again = _cases(con)
    return fda, strict, {"fda_log": fda_log, "log": log, "pairs": pairs, "again": again}


def test_planted_duplicates_found_and_the_latest_receipt_kept(planted, rebuilt) -> None:
    truth, (_, strict, _) = planted[0].literature, rebuilt
    assert truth["group"].value_counts().min() >= 2
    cases = strict.set_index("caseid")
    for group, members in truth.groupby("group"):
        rows = cases.loc[members["caseid"]]
        keeper = (
            rows.assign(pid=rows["primaryid"].astype("int64"))
            .sort_values(["fda_dt", "pid"])
            .index[-1]
        )
        assert pd.isna(rows.loc[keeper, "literature_duplicate_of"]), group
        flagged = rows.drop(index=keeper)["literature_duplicate_of"]
        assert (flagged == keeper).all(), group


def test_distinct_articles_and_patients_kept_apart_and_nothing_else_flagged(
    planted, rebuilt
) -> None:
    truth, strict = planted[0].literature, rebuilt[1]
    group_of = dict(zip(truth["caseid"], truth["group"], strict=True))
    flagged = strict.dropna(subset=["literature_duplicate_of"])
    assert set(flagged["caseid"]) <= set(group_of)
    for caseid, keeper in zip(flagged["caseid"], flagged["literature_duplicate_of"], strict=True):
        assert group_of[caseid] == group_of[keeper]
    # every article has a twin of patient 1 in article B, and a second patient in article A
    assert truth["article"].nunique() == 2 * truth["group"].str[:6].nunique()
    assert len(flagged) == len(truth) - truth["group"].nunique()


def test_fda_mode_unchanged_and_strict_only_flags(rebuilt) -> None:
    fda, strict, other = rebuilt
    assert fda["literature_duplicate_of"].isna().all()
    assert not other["fda_log"]["step"].str.contains("literature").any()
    assert list(fda["caseid"]) == list(strict["caseid"])  # a flag, never a deletion
    pd.testing.assert_frame_equal(other["again"], fda)


def test_dedup_log_has_the_step_with_its_counts(planted, rebuilt) -> None:
    truth, (_, strict, other) = planted[0].literature, rebuilt
    log = other["log"]
    assert list(log["step"][-2:]) == ["not flagged by the strict rule-based pass", STEP[0]]
    before, after = log["n_cases"].iloc[-2], log["n_cases"].iloc[-1]
    assert before - after == len(truth) - truth["group"].nunique()
    unflagged = strict["strict_duplicate_of"].isna() & strict["literature_duplicate_of"].isna()
    assert after == unflagged.sum() == log["n_reports"].iloc[-1]
    assert before == strict["strict_duplicate_of"].isna().sum()


def test_query_lists_each_flagged_case_beside_the_one_kept(rebuilt) -> None:
    strict, pairs = rebuilt[1], rebuilt[2]["pairs"]
    flagged = strict.dropna(subset=["literature_duplicate_of"])
    assert list(zip(pairs["caseid"], pairs["kept_caseid"], strict=True)) == sorted(
        zip(flagged["caseid"], flagged["literature_duplicate_of"], strict=True),
        key=lambda pair: (pair[1], pair[0]),
    )
    assert pairs["lit_ref"].notna().all() and pairs["kept_lit_ref"].notna().all()


def test_planting_moves_no_other_generated_value(tmp_path: Path) -> None:
    quarters = ["2019Q1", "2019Q2"]
    plain = generate_series(quarters, tmp_path / "a", n_cases=30, seed=4, background=40)
    with_lit = generate_series(
        quarters, tmp_path / "b", n_cases=30, seed=4, background=40, literature=True
    )
    planted = set(with_lit.literature["caseid"])
    assert planted and plain.literature.empty
    kept = with_lit.cases[~with_lit.cases["caseid"].isin(planted)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, plain.cases)
    for a, b in zip(plain.quarters, with_lit.quarters, strict=True):
        assert a.background_rows == b.background_rows
        for table, rows in a.truth.items():
            strip = [
                {k: v for k, v in r.items() if k != "source_line"}
                for r in b.truth[table]
                if r["caseid"] not in planted
            ]
            assert strip == [{k: v for k, v in r.items() if k != "source_line"} for r in rows]
