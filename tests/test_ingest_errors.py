"""Bad input: one clear line on stderr, exit status 1, and the database exactly as it was."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import duckdb
import pytest
from click.testing import CliRunner

from surveillance.cli import cli

# A minimal, well-formed FAERS 2014Q3+ quarter (values shortened from faers-format.md §9.1).
FB = {
    "ASCII/DEMO24Q1.txt": "primaryid$caseid$caseversion$i_f_code$event_dt$mfr_dt$init_fda_dt$"
    "fda_dt$rept_cod$auth_num$mfr_num$mfr_sndr$lit_ref$age$age_cod$age_grp$sex$e_sub$wt$wt_cod$"
    "rept_dt$to_mfr$occp_cod$reporter_country$occr_country\r\n"
    "100140224$10014022$4$F$$20240508$20140317$20240513$EXP$$EU-ROCHE-1347273$ROCHE$$66$YR$E$M$Y"
    "$83$KG$20240513$$MD$EU$EU\r\n",
    "ASCII/DRUG24Q1.txt": "primaryid$caseid$drug_seq$role_cod$drugname$prod_ai$val_vbm$route$"
    "dose_vbm$cum_dose_chr$cum_dose_unit$dechal$rechal$lot_num$exp_dt$nda_num$dose_amt$dose_unit$"
    "dose_form$dose_freq\r\n"
    "100140224$10014022$1$PS$KRATOM$MITRAGYNINE$1$Oral$$$$Y$U$$$$180$UG$Powder$/WK\r\n",
    "ASCII/REAC24Q1.txt": "primaryid$caseid$pt$drug_rec_act\r\n100140224$10014022$Seizure$\r\n",
    "ASCII/OUTC24Q1.txt": "primaryid$caseid$outc_cod\r\n100140224$10014022$HO\r\n",
    "ASCII/RPSR24Q1.txt": "primaryid$caseid$rpsr_cod\r\n100140224$10014022$CSM\r\n",
    "ASCII/THER24Q1.txt": "primaryid$caseid$dsg_drug_seq$start_dt$end_dt$dur$dur_cod\r\n"
    "100140224$10014022$1$20230101$$$\r\n",
    "ASCII/INDI24Q1.txt": "primaryid$caseid$indi_drug_seq$indi_pt\r\n100140224$10014022$1$Pain\r\n",
}


def write_zip(path: Path, members: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text if isinstance(text, bytes) else text.encode("latin-1"))
    return path


def snapshot(db: Path) -> dict[str, list[tuple[object, ...]]]:
    with duckdb.connect(str(db), read_only=True) as con:
        tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
        return {t: sorted(map(repr, con.execute(f"SELECT * FROM {t}").fetchall())) for t in tables}


@pytest.fixture
def loaded_db(tmp_path: Path) -> Path:
    db = tmp_path / "s.duckdb"
    good = write_zip(tmp_path / "faers_ascii_2024q1.zip", FB)
    result = CliRunner().invoke(cli, ["load", str(good), "--db", str(db)])
    assert result.exit_code == 0, result.output
    return db


def run_load(db: Path, path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["load", str(path), "--db", str(db), "--quiet"])
    return result.exit_code, result.output


def assert_one_line_error(code: int, output: str, *fragments: str) -> None:
    assert code == 1, output
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), output
    assert "Traceback" not in output
    for fragment in fragments:
        assert fragment in lines[0], output


def test_not_a_zip(loaded_db: Path, tmp_path: Path) -> None:
    before = snapshot(loaded_db)
    bad = tmp_path / "faers_ascii_2024q2.zip"
    bad.write_text("this is not a zip")
    assert_one_line_error(*run_load(loaded_db, bad), str(bad), "not a valid zip")
    assert snapshot(loaded_db) == before


def test_truncated_zip(loaded_db: Path, tmp_path: Path) -> None:
    before = snapshot(loaded_db)
    whole = write_zip(tmp_path / "whole.zip", FB).read_bytes()
    bad = tmp_path / "faers_ascii_2024q2.zip"
    bad.write_bytes(whole[: len(whole) // 2])
    assert_one_line_error(*run_load(loaded_db, bad), str(bad))
    assert snapshot(loaded_db) == before


def test_corrupt_member_changes_nothing(loaded_db: Path, tmp_path: Path) -> None:
    """A flipped byte inside DRUG's compressed data fails the CRC; the old quarter stays."""
    before = snapshot(loaded_db)
    big = dict(FB)
    big["ASCII/DRUG24Q1.txt"] = FB["ASCII/DRUG24Q1.txt"] + "".join(
        f"1{i:08d}$1{i:07d}$1$PS$DRUG {i * 7919 % 10007}$X$1$Oral$$$$$$$$$$$$\r\n"
        for i in range(3000)
    )
    path = write_zip(tmp_path / "faers_ascii_2024q1.zip", big)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("ASCII/DRUG24Q1.txt")
    data[info.header_offset + 30 + len(info.filename) + info.compress_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    code, output = run_load(loaded_db, path)
    assert_one_line_error(code, output, "DRUG24Q1.txt")
    assert snapshot(loaded_db) == before


def test_zip_without_faers_tables(loaded_db: Path, tmp_path: Path) -> None:
    path = write_zip(tmp_path / "other.zip", {"readme.txt": "hello"})
    assert_one_line_error(*run_load(loaded_db, path), "no FAERS tables")


def test_missing_table(loaded_db: Path, tmp_path: Path) -> None:
    members = {k: v for k, v in FB.items() if "THER" not in k}
    path = write_zip(tmp_path / "faers_ascii_2024q2.zip", members)
    assert_one_line_error(*run_load(loaded_db, path), "missing FAERS tables: ther")


def test_unknown_header_names_the_columns(loaded_db: Path, tmp_path: Path) -> None:
    before = snapshot(loaded_db)
    members = dict(FB)
    members["ASCII/REAC24Q1.txt"] = "primaryid$caseid$pt$severity\r\n100140224$10014022$X$Y\r\n"
    path = write_zip(tmp_path / "faers_ascii_2024q1.zip", members)
    assert_one_line_error(
        *run_load(loaded_db, path), "REAC24Q1.txt, line 1", "unexpected columns ['severity']"
    )
    assert snapshot(loaded_db) == before


def test_unreadable_path(loaded_db: Path, tmp_path: Path) -> None:
    assert_one_line_error(*run_load(loaded_db, tmp_path / "nope.zip"), "no such file")


def test_database_locked_by_another_writer(loaded_db: Path, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); print('ok', flush=True);"
            " time.sleep(30)",
            str(loaded_db),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        path = write_zip(tmp_path / "faers_ascii_2024q1.zip", FB)
        # The holder keeps the lock for 30 s: a load that waited for it would succeed, not
        # report the lock.
        assert_one_line_error(*run_load(loaded_db, path), "locked by another process")
    finally:
        holder.kill()
        holder.wait()


def test_unknown_code_values_are_kept(tmp_path: Path) -> None:
    members = dict(FB)
    members["ASCII/DRUG24Q1.txt"] = FB["ASCII/DRUG24Q1.txt"].replace("$PS$", "$DN$")
    db = tmp_path / "s.duckdb"
    code, output = run_load(db, write_zip(tmp_path / "faers_ascii_2024q1.zip", members))
    assert code == 0, output
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT role_cod FROM raw_drug").fetchall() == [("DN",)]
