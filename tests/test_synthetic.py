"""Tests of the SYNTHETIC FAERS/LAERS generator: era layout, truth and planted case history.

The checks re-read the zips with a small parser written here, independent of the generator, and
hard-code the era facts of shared/faers-format.md rather than reusing the generator's helpers.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest

from surveillance.faers_format import CANONICAL, HEADERS
from surveillance.synthetic import (
    DECOY_DRUGNAMES,
    KRATOM_DRUGNAMES,
    SEVEN_OH_DRUGNAMES,
    QuarterFiles,
    Series,
    generate_quarter,
    generate_series,
    write_full_size_quarter,
)

TABLES = ("demo", "drug", "reac", "outc", "rpsr", "ther", "indi")
N_CASES = 150

# quarter -> (zip name, DEMO member, DRUG member, deleted member)
ERAS = {
    "2004Q1": ("aers_ascii_2004q1.zip", "ascii/DEMO04Q1.TXT", "ascii/DRUG04Q1.TXT", None),
    "2010Q1": ("aers_ascii_2010q1.zip", "ascii/DEMO10Q1.TXT", "ascii/DRUG10Q1.TXT", None),
    "2012Q4": ("faers_ascii_2012q4.zip", "ascii/demo12q4.txt", "ascii/drug12q4.txt", None),
    "2013Q2": ("faers_ascii_2013q2.zip", "ascii/DEMO13Q2.txt", "ascii/DRUG13Q2.txt", None),
    "2018Q1": ("faers_ascii_2018q1.zip", "ASCII/DEMO18Q1_new.txt", "ASCII/DRUG18Q1.txt", None),
    "2019Q1": (
        "faers_ascii_2019Q1.zip",
        "ASCII/DEMO19Q1.txt",
        "ASCII/DRUG19Q1.txt",
        "Deleted/DELETE19Q1.txt",
    ),
    "2025Q1": (
        "faers_ascii_2025q1.zip",
        "ASCII/DEMO25Q1.txt",
        "ASCII/DRUG25Q1.txt",
        "Deleted/DELETE25Q1.txt",
    ),
}
LEGACY = {"2004Q1", "2010Q1"}
RENAMES = {  # header name -> canonical column, written out independently of faers_format
    "isr": "primaryid",
    "case": "caseid",
    "i_f_cod": "i_f_code",
    "gndr_cod": "sex",
    "outc_code": "outc_cod",
    "lot_nbr": "lot_num",
}
KRATOM = {s.casefold() for s in (*KRATOM_DRUGNAMES, *SEVEN_OH_DRUGNAMES)}
SEVEN_OH = {s.casefold() for s in SEVEN_OH_DRUGNAMES}
DECOYS = {s.casefold() for s in DECOY_DRUGNAMES}


def physical_lines(data: bytes) -> list[str]:
    """Split on LF, drop one trailing CR per line; the file's final LF ends the last line."""
    text = data.decode("latin-1")
    assert text.endswith("\n")
    return [ln[:-1] if ln.endswith("\r") else ln for ln in text[:-1].split("\n")]


def canonical(table: str, name: str) -> str:
    name = name.replace("\ufeff", "").replace("ï»¿", "").strip().lower()
    if table in ("ther", "indi") and name == "drug_seq":
        return f"{'dsg' if table == 'ther' else 'indi'}_drug_seq"
    return RENAMES.get(name, name)


def parse_row(table: str, header: str, line: str, legacy: bool) -> dict[str, str | None]:
    names = [canonical(table, h) for h in header.split("$")]
    fields = line.split("$")
    if legacy and table != "indi":
        assert fields[-1] == "", line
        fields = fields[:-1]
    assert len(fields) == len(names), line
    row: dict[str, str | None] = dict.fromkeys(CANONICAL[table])
    row.update((n, f or None) for n, f in zip(names, fields, strict=True))
    return row


def members_of(qf: QuarterFiles) -> dict[str, bytes]:
    with zipfile.ZipFile(qf.zip_path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def table_member(members: dict[str, bytes], table: str) -> str:
    (name,) = [m for m in members if m.split("/")[-1].lower().startswith(table)]
    return name


@pytest.fixture(scope="module", params=sorted(ERAS))
def era_quarter(request, tmp_path_factory) -> QuarterFiles:
    return generate_quarter(request.param, tmp_path_factory.mktemp(request.param), N_CASES, seed=3)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = generate_quarter("2010Q1", tmp_path / "a", 60, seed=7)
    b = generate_quarter("2010Q1", tmp_path / "b", 60, seed=7)
    c = generate_quarter("2010Q1", tmp_path / "c", 60, seed=8)
    assert a.zip_path.read_bytes() == b.zip_path.read_bytes()
    assert a.truth == b.truth and a.quarantine == b.quarantine
    assert a.zip_path.read_bytes() != c.zip_path.read_bytes()


def test_member_names_and_docs(era_quarter: QuarterFiles) -> None:
    zip_name, demo, drug, deleted = ERAS[era_quarter.quarter]
    members = members_of(era_quarter)
    assert era_quarter.zip_path.name == zip_name
    assert demo in members and drug in members
    assert "README_SYNTHETIC.txt" in members
    assert b"SYNTHETIC" in members["README_SYNTHETIC.txt"]
    tables = [m for m in members if m.endswith((".TXT", ".txt")) and "/" in m]
    tables = [m for m in tables if not m.startswith("Deleted/")]
    assert len(tables) == 7
    assert all(m.startswith(demo.split("/")[0] + "/") for m in tables)
    assert (deleted in members) if deleted else not any(m.startswith("Deleted/") for m in members)
    if era_quarter.quarter in LEGACY:
        yyqn = era_quarter.quarter[2:]
        assert {f"SIZE{yyqn}.TXT", f"STAT{yyqn}.TXT", "README.doc", "ascii/Asc_nts.doc"} <= set(
            members
        )


def test_headers_crlf_and_trailing_dollar(era_quarter: QuarterFiles) -> None:
    q = era_quarter.quarter
    era = {"2004Q1": "L0", "2010Q1": "L1", "2012Q4": "FA", "2013Q2": "FA"}.get(q, "FB")
    members = members_of(era_quarter)
    for table in TABLES:
        data = members[table_member(members, table)]
        header = data.split(b"\r\n", 1)[0]
        expected = "$".join(HEADERS[era][table])
        if q == "2012Q4":
            expected = expected.replace("rept_dt", " rept_dt").replace("lot_num", "lot_nbr")
            expected = expected.replace("outc_cod", "outc_code")
        bom = b"\xef\xbb\xbf" if (q, table) == ("2012Q4", "drug") else b""
        assert header == bom + expected.encode()
        assert not header.endswith(b"$")
        # every line ends in CRLF except the first part of a record split by a bare LF
        n_split_heads = sum(
            1
            for x in era_quarter.quarantine
            if x["kind"] == "split" and x["source_file"].lower().startswith(table, 6)
        )
        assert data.count(b"\n") - data.count(b"\r\n") == n_split_heads // 2
        width = len(HEADERS[era][table])
        lines = physical_lines(data)
        truth_lines = {r["source_line"] for r in era_quarter.truth[table]}
        for number in truth_lines:
            fields = lines[number - 1].split("$")
            trailing = q in LEGACY and table != "indi"
            assert len(fields) == width + trailing
            assert not trailing or fields[-1] == ""
    if q == "2012Q4":
        assert members["ascii/demo12q4.txt"].startswith(b"primaryid$caseid$caseversion$")
        assert b"$ rept_dt$" in members["ascii/demo12q4.txt"].split(b"\r\n")[0]


def test_every_line_is_truth_or_quarantine(era_quarter: QuarterFiles) -> None:
    members = members_of(era_quarter)
    legacy = era_quarter.quarter in LEGACY
    source = "LAERS" if legacy else "FAERS"
    for table in TABLES:
        member = table_member(members, table)
        lines = physical_lines(members[member])
        header = lines[0]
        rows = era_quarter.truth[table]
        bad = [x for x in era_quarter.quarantine if x["source_file"] == member]
        numbers = sorted([r["source_line"] for r in rows] + [x["source_line"] for x in bad])
        assert numbers == list(range(2, len(lines) + 1))
        for row in rows:
            assert set(row) == {
                *CANONICAL[table],
                "quarter",
                "source",
                "source_file",
                "source_line",
            }
            assert (row["quarter"], row["source"], row["source_file"]) == (
                era_quarter.quarter,
                source,
                member,
            )
            parsed = parse_row(table, header, lines[row["source_line"] - 1], legacy)
            assert parsed == {c: row[c] for c in CANONICAL[table]}
        for x in bad:
            assert x["raw_text"] == lines[x["source_line"] - 1]


def test_damage_kinds(era_quarter: QuarterFiles) -> None:
    legacy = era_quarter.quarter in LEGACY
    kinds = [x["kind"] for x in era_quarter.quarantine]
    expected = {"glued", "split", "extra_dollar", "blank"} | ({"continuation"} if legacy else set())
    assert set(kinds) == expected
    assert kinds.count("split") == 2 and kinds.count("glued") == 1
    by_kind = {x["kind"]: x for x in era_quarter.quarantine}
    assert "$E2B" in by_kind["extra_dollar"]["raw_text"]
    if legacy:
        cont = [x for x in era_quarter.quarantine if x["kind"] == "continuation"]
        assert cont[1]["raw_text"].startswith("$")
        assert cont[1]["source_line"] == cont[0]["source_line"] + 1
    members = members_of(era_quarter)
    for x in era_quarter.quarantine:
        if x["kind"] in ("glued", "split", "extra_dollar", "continuation"):
            header = physical_lines(members[x["source_file"]])[0]
            with pytest.raises(AssertionError):
                parse_row(
                    "demo" if "demo" in x["source_file"].lower() else "drug",
                    header,
                    x["raw_text"],
                    legacy,
                )


def test_deleted_list(era_quarter: QuarterFiles) -> None:
    deleted_member = ERAS[era_quarter.quarter][3]
    if deleted_member is None:
        assert era_quarter.deleted == []
        return
    data = members_of(era_quarter)[deleted_member]
    assert data.startswith(b" \r\n") and data.count(b"\n") == data.count(b"\r\n")
    lines = physical_lines(data)
    assert len(lines) == len(era_quarter.deleted) + 1 >= 2
    for d in era_quarter.deleted:
        assert d["source_file"] == deleted_member
        assert lines[d["source_line"] - 1] == d["caseid"] and d["caseid"].isdigit()
    blank = [x for x in era_quarter.quarantine if x["source_file"] == deleted_member]
    assert blank == [
        {"source_file": deleted_member, "source_line": 1, "raw_text": " ", "kind": "blank"}
    ]


def test_era_values(era_quarter: QuarterFiles) -> None:
    q = era_quarter.quarter
    t = era_quarter.truth
    demo, drug = pd.DataFrame(t["demo"]), pd.DataFrame(t["drug"])
    texts = [r[c] for table, rows in t.items() for r in rows for c in CANONICAL[table] if r[c]]
    assert any(any("\x80" <= ch <= "\xff" for ch in v) for v in texts)  # latin-1 letters
    assert any("\x7f" in v for v in drug["drugname"].dropna())
    assert any("\x08" in v for v in drug["dose_vbm"].dropna())
    assert any(v.endswith(" ") for v in drug["drugname"].dropna())
    # rows of damaged records are gone; their case's other rows stay behind as orphans
    damaged = {x["raw_text"].split("$")[0] for x in era_quarter.quarantine if x["raw_text"]}
    assert len(damaged) >= 3
    if q in LEGACY:
        assert all(v == v.upper() for v in texts)
        assert demo["caseversion"].isna().all() and demo["image"].notna().all()
        assert all(
            img.split("-")[0] == p for img, p in zip(demo["image"], demo["primaryid"], strict=True)
        )
        seqs = drug["drug_seq"]
        assert seqs.str.fullmatch(r"\d{10}").all() and seqs.is_unique
        for table, column in (("ther", "dsg_drug_seq"), ("indi", "indi_drug_seq")):
            child = pd.DataFrame(t[table])
            assert child["caseid"].isna().all()
            child = child[~child["primaryid"].isin(damaged)]
            assert set(zip(child["primaryid"], child[column], strict=True)) <= set(
                zip(drug["primaryid"], seqs, strict=True)
            )
        countries = set(demo["reporter_country"].dropna())
        assert countries == set() if q == "2004Q1" else "UNITED STATES" in countries
    else:
        assert (demo["primaryid"] == demo["caseid"] + demo["caseversion"]).all()
        assert demo["reporter_country"].dropna().str.fullmatch("[A-Z]{2}").all()
        assert any(v != v.upper() for v in drug["drugname"].dropna())
        assert (demo["event_dt"].dropna().str.len() < 8).any()  # partial dates
        assert drug["nda_num"].dropna().str.startswith("0").any()
        keys = set(zip(demo["primaryid"], demo["caseid"], strict=True))
        for table in ("drug", "reac", "outc", "ther", "indi"):
            child = pd.DataFrame(t[table])
            child = child[~child["primaryid"].isin(damaged)]
            assert set(zip(child["primaryid"], child["caseid"], strict=True)) <= keys
    if q >= "2025":
        assert "DN" in set(drug["role_cod"])
    if q < "2014Q3":
        assert drug["prod_ai"].isna().all() and demo["lit_ref"].isna().all()


@pytest.fixture(scope="module")
def cross_era(tmp_path_factory) -> Series:
    quarters = ["2012Q2", "2012Q3", "2012Q4", "2013Q1"]
    return generate_series(quarters, tmp_path_factory.mktemp("cross"), N_CASES, seed=5)


@pytest.fixture(scope="module")
def with_deletions(tmp_path_factory) -> Series:
    quarters = ["2018Q4", "2019Q1", "2019Q2"]
    return generate_series(quarters, tmp_path_factory.mktemp("del"), N_CASES, seed=5)


def expected_cases(series: Series) -> pd.DataFrame:
    """The FDA rule applied to the truth rows, independently of the generator's bookkeeping."""
    demo = pd.DataFrame([r for qf in series.quarters for r in qf.truth["demo"]])
    drug = pd.DataFrame([r for qf in series.quarters for r in qf.truth["drug"]])
    demo["version"] = demo["caseversion"].fillna("-1").astype(int)
    demo["faers"] = demo["source"] == "FAERS"
    demo["isr"] = demo["primaryid"].astype(int)
    demo = demo.sort_values(["faers", "version", "fda_dt", "isr", "quarter"])
    latest = demo.groupby("caseid").tail(1).set_index("caseid")
    first = demo.groupby("caseid")["quarter"].min()
    init = demo.dropna(subset=["init_fda_dt"]).groupby("caseid")["init_fda_dt"].min()
    init_quarter = init.str[:4] + "Q" + ((init.str[4:6].astype(int) + 2) // 3).astype(str)
    deleted = {d["caseid"]: qf.quarter for qf in series.quarters for d in qf.deleted}
    names = drug.assign(
        name=drug["drugname"].str.casefold(), ai=drug["prod_ai"].fillna("").str.casefold()
    )
    out = []
    for caseid, row in latest.iterrows():
        rows = names[
            (names["primaryid"] == row["primaryid"]) & (names["quarter"] == row["quarter"])
        ]
        spelled = set(rows["name"]) | set(rows["ai"])
        out.append(
            {
                "caseid": caseid,
                "source_of_latest": row["source"],
                "surviving": caseid not in deleted,
                "primaryid_latest": row["primaryid"],
                "quarter_latest": row["quarter"],
                "quarter_initial": min(init_quarter.get(caseid, first[caseid]), first[caseid]),
                "quarter_first_version": first[caseid],
                "is_kratom": bool(spelled & KRATOM),
                "is_7oh": bool(spelled & SEVEN_OH),
                "has_decoy": bool(spelled & DECOYS),
                "deleted_in": deleted.get(caseid),
            }
        )
    return pd.DataFrame(out).sort_values("caseid", key=lambda s: s.astype(int), ignore_index=True)


@pytest.mark.parametrize("name", ["cross_era", "with_deletions"])
def test_case_truth_matches_fda_rule_on_rows(name: str, request) -> None:
    series: Series = request.getfixturevalue(name)
    expected = expected_cases(series)
    pd.testing.assert_frame_equal(series.cases, expected, check_dtype=False)
    assert series.cases["caseid"].is_unique
    share = series.cases["is_kratom"].mean()
    assert 0.04 <= share <= 0.12
    assert series.cases["has_decoy"].any()


def test_planted_history_cross_era(cross_era: Series) -> None:
    demo = pd.DataFrame([r for qf in cross_era.quarters for r in qf.truth["demo"]])
    sources = demo.groupby("caseid")["source"].agg(set)
    assert (sources.map(len) == 2).any()  # a legacy case followed up in FAERS
    laers_ids = set(demo.loc[demo["source"] == "LAERS", "primaryid"])
    faers_ids = set(demo.loc[demo["source"] == "FAERS", "primaryid"])
    assert laers_ids & faers_ids  # an ISR equal to a primaryid, in different sources
    laers = demo[demo["source"] == "LAERS"]
    assert (laers.groupby("caseid")["primaryid"].nunique() > 1).any()  # LAERS follow-ups
    cols = [c for c in CANONICAL["demo"]]
    repeated = demo[demo.duplicated(["source", "primaryid"], keep=False)]
    assert len(repeated) >= 2
    assert (repeated.groupby(["source", "primaryid"])[cols].nunique(dropna=False) == 1).all().all()


def test_planted_history_with_deletions(with_deletions: Series) -> None:
    demo = pd.DataFrame([r for qf in with_deletions.quarters for r in qf.truth["demo"]])
    demo["version"] = demo["caseversion"].astype(int)
    versions = demo.groupby("caseid")["version"].agg(lambda v: sorted(set(v)))
    assert (versions.map(len) > 1).any()  # follow-ups
    assert versions.map(lambda v: len(v) > 1 and v[-1] - v[0] >= len(v)).any()  # skipped version
    first_quarter = demo.groupby("caseid")["quarter"].min()
    deleted = [(d["caseid"], qf.quarter) for qf in with_deletions.quarters for d in qf.deleted]
    earlier = [c for c, q in deleted if c in first_quarter and first_quarter[c] < q]
    assert earlier
    cases = with_deletions.cases.set_index("caseid")
    assert not cases.loc[earlier, "surviving"].any()
    # a later quarter publishing an older version of a case: the highest version still wins
    late = (
        demo.sort_values("quarter").groupby("caseid")["version"].agg(lambda v: list(v) != sorted(v))
    )
    assert late.any()


def test_kratom_signal(cross_era: Series, with_deletions: Series) -> None:
    for series in (cross_era, with_deletions):
        cases = series.cases
        reac = pd.DataFrame([r for qf in series.quarters for r in qf.truth["reac"]])
        latest = set(zip(cases["primaryid_latest"], cases["quarter_latest"], strict=True))
        reac = reac[[k in latest for k in zip(reac["primaryid"], reac["quarter"], strict=True)]]
        kratom_ids = set(cases.loc[cases["is_kratom"], "primaryid_latest"])
        for pt in ("Drug withdrawal syndrome", "Liver injury"):
            hit = set(reac.loc[reac["pt"].str.casefold() == pt.casefold(), "primaryid"])
            a = len(hit & kratom_ids) / len(kratom_ids)
            c = len(hit - kratom_ids) / (len(cases) - len(kratom_ids))
            assert a > 0.08 and a > 10 * c


def test_seven_oh_in_recent_quarters(tmp_path: Path) -> None:
    series = generate_series(["2025Q1"], tmp_path, 400, seed=1)
    assert series.cases["is_7oh"].any()
    assert not (series.cases["is_7oh"] & ~series.cases["is_kratom"]).any()


def test_decoys_are_not_kratom() -> None:
    assert not DECOYS & KRATOM


def test_no_damage_when_asked(tmp_path: Path) -> None:
    qf = generate_quarter("2011Q2", tmp_path, 80, seed=2, damage=False)
    assert qf.quarantine == []


def test_full_size_layout(tmp_path: Path) -> None:
    path = write_full_size_quarter("2019Q2", tmp_path, n_reports=3000, seed=1)
    assert path.name == "faers_ascii_2019Q2.zip"
    with zipfile.ZipFile(path) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    assert "README_SYNTHETIC.txt" in members
    counts = {}
    for table in TABLES:
        data = members[f"ASCII/{table.upper()}19Q2.txt"]
        assert data.count(b"\n") == data.count(b"\r\n")
        lines = physical_lines(data)
        assert lines[0] == "$".join(HEADERS["FB"][table])
        width = len(HEADERS["FB"][table])
        assert all(len(line.split("$")) == width for line in lines[1:])
        counts[table] = len(lines) - 1
    assert counts["demo"] == 3000
    assert 4 < counts["drug"] / 3000 < 6 and 2.5 < counts["reac"] / 3000 < 4
    assert 1.2 < counts["indi"] / counts["ther"] < 1.8
    demo = [line.split("$") for line in physical_lines(members["ASCII/DEMO19Q2.txt"])[1:]]
    assert all(r[0] == r[1] + r[2] for r in demo)
    assert len({r[1] for r in demo}) == len(demo)
    assert physical_lines(members["Deleted/DELETE19Q2.txt"])[0] == " "
