"""Readers: good files parse, every bad input raises DataError naming file and line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from recpress.data import (
    read_lightgcn,
    read_movielens,
    read_pairs_tsv,
    read_recbole_inter,
    read_table,
    read_users_dat,
)
from recpress.errors import DataError


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def assert_error(fn, path: Path, line: int | None, *words: str) -> None:
    with pytest.raises(DataError) as ei:
        fn(path)
    msg = str(ei.value)
    assert str(path) in msg
    if line is not None:
        assert f"{path}:{line}:" in msg
        assert ei.value.line == line
    for w in words:
        assert w in msg, msg


# ---------------------------------------------------------------- users.dat
def test_users_dat_ok(tmp_path):
    p = write(tmp_path, "users.dat", "2 5 7\n0\n3 1 2 3\n")
    df = read_users_dat(p)
    assert df["user"].tolist() == [0, 0, 2, 2, 2]
    assert df["item"].tolist() == [5, 7, 1, 2, 3]


@pytest.mark.parametrize(
    "text,line,word",
    [
        ("2 5 7\n3 1 2\n", 2, "count"),  # count mismatch
        ("2 5 7\n2 1 x\n", 2, "not an integer"),
        ("2 5 7\n2 1 -4\n", 2, "negative"),
        ("2 5 7\n\n1 3\n", 2, "blank"),
        ("1 2.5\n", 1, "not an integer"),
    ],
)
def test_users_dat_bad(tmp_path, text, line, word):
    assert_error(read_users_dat, write(tmp_path, "users.dat", text), line, word)


def test_users_dat_empty_and_missing(tmp_path):
    assert_error(read_users_dat, write(tmp_path, "users.dat", ""), None, "empty")
    assert_error(read_users_dat, write(tmp_path, "u2.dat", "\n\n"), None, "empty")
    assert_error(read_users_dat, tmp_path / "nope.dat", None, "not found")


# ---------------------------------------------------------------- pairs tsv
def test_pairs_ok(tmp_path):
    df = read_pairs_tsv(write(tmp_path, "t.tsv", "0\t1\n3\t4\n"))
    assert df.to_numpy().tolist() == [[0, 1], [3, 4]]
    assert df["user"].dtype == np.int64


@pytest.mark.parametrize(
    "text,line,word",
    [
        ("0\t1\n1\t2\t3\n", 2, "expected 2 fields"),
        ("0\t1\n1\n", 2, "found 1"),
        ("0\t1\n1 2\n", 2, "found 1"),
        ("0\t1\n0\t1\n1\tb\n", 3, "not an integer"),
        ("0\t1\n-1\t2\n", 2, "negative"),
        ("0\t1\n1\t2.0\n", 2, "not an integer"),
    ],
)
def test_pairs_bad(tmp_path, text, line, word):
    assert_error(read_pairs_tsv, write(tmp_path, "t.tsv", text), line, word)


def test_pairs_empty_missing(tmp_path):
    assert_error(read_pairs_tsv, write(tmp_path, "t.tsv", ""), None, "empty")
    assert_error(read_pairs_tsv, tmp_path / "missing.tsv", None, "not found")


# ---------------------------------------------------------------- movielens
def test_movielens_both_formats(tmp_path):
    a = read_movielens(write(tmp_path, "u.data", "1\t2\t5\t100\n3\t4\t3\t90\n"))
    b = read_movielens(write(tmp_path, "ratings.dat", "1::2::5::100\n3::4::3::90\n"))
    for df in (a, b):
        assert df["user"].tolist() == [1, 3]
        assert df["rating"].tolist() == [5.0, 3.0]
        assert df["timestamp"].tolist() == [100, 90]


@pytest.mark.parametrize(
    "name,text,line,word",
    [
        ("u.data", "1\t2\t5\t100\n1\t2\t5\n", 2, "found 3"),
        ("u.data", "1\t2\t5\t100\nx\t2\t5\t1\n", 2, "not an integer"),
        ("u.data", "1\t2\t5\t100\n1\t-2\t5\t1\n", 2, "negative"),
        ("u.data", "1\t2\t5\t100\n1\t2\tgood\t1\n", 2, "not a number"),
        ("ratings.dat", "1::2::5::100\n1::2::5\n", 2, "found 3"),
        ("ratings.dat", "1::2::5::100\n1::z::5::3\n", 2, "not an integer"),
    ],
)
def test_movielens_bad(tmp_path, name, text, line, word):
    assert_error(read_movielens, write(tmp_path, name, text), line, word)


def test_movielens_empty_missing(tmp_path):
    assert_error(read_movielens, write(tmp_path, "u.data", ""), None, "empty")
    assert_error(read_movielens, tmp_path / "x.data", None, "not found")


def test_movielens_real_slice(data_root, tmp_path):
    lines = (data_root / "ml-100k" / "u.data").read_text().splitlines()[:50]
    df = read_movielens(write(tmp_path, "u.data", "\n".join(lines) + "\n"))
    assert len(df) == 50 and df["rating"].between(1, 5).all()


# ---------------------------------------------------------------- lightgcn
def test_lightgcn_ok_and_bad(tmp_path):
    df = read_lightgcn(write(tmp_path, "train.txt", "0 1 2 3\n1 4\n2\n"))
    assert df["user"].tolist() == [0, 0, 0, 1]
    assert df["item"].tolist() == [1, 2, 3, 4]
    assert_error(read_lightgcn, write(tmp_path, "b.txt", "0 1\n1 q\n"), 2, "not an integer")
    assert_error(read_lightgcn, write(tmp_path, "c.txt", "0 1\n1 -3\n"), 2, "negative")
    assert_error(read_lightgcn, write(tmp_path, "d.txt", ""), None, "empty")
    assert_error(read_lightgcn, tmp_path / "e.txt", None, "not found")


# ---------------------------------------------------------------- table
def test_table_csv_tsv_parquet(tmp_path):
    csv = write(tmp_path, "x.csv", "uid,iid,score,ts\na,10,4.5,7\nb,11,2,8\n")
    df = read_table(csv, "uid", "iid", rating_col="score", time_col="ts")
    assert df["user"].tolist() == ["a", "b"]
    assert df["item"].tolist() == [10, 11]
    assert df["rating"].tolist() == [4.5, 2.0]
    assert df["timestamp"].tolist() == [7, 8]
    tsv = write(tmp_path, "x.tsv", "u\ti\n1\t2\n")
    assert read_table(tsv, "u", "i")["user"].tolist() == [1]
    pq = tmp_path / "x.parquet"
    pd.DataFrame({"u": [1, 2], "i": [3, 4], "r": [1.0, 5.0]}).to_parquet(pq)
    df = read_table(pq, "u", "i", rating_col="r")
    assert df["item"].tolist() == [3, 4] and df["rating"].tolist() == [1.0, 5.0]


def test_table_bad(tmp_path):
    p = write(tmp_path, "x.csv", "uid,iid\n1,2\n")
    with pytest.raises(DataError) as ei:
        read_table(p, "user", "iid")
    assert "missing user column 'user'" in str(ei.value) and "uid, iid" in str(ei.value)
    p = write(tmp_path, "y.csv", "u,i\n1,2\n3,4,5\n")
    assert_error(lambda q: read_table(q, "u", "i"), p, 3, "wrong number of columns")
    p = write(tmp_path, "z.csv", "u,i\n1,2\n3\n")
    assert_error(lambda q: read_table(q, "u", "i"), p, 3, "empty item id")
    p = write(tmp_path, "r.csv", "u,i,r\n1,2,x\n")
    assert_error(lambda q: read_table(q, "u", "i", rating_col="r"), p, 2, "not a number")
    assert_error(lambda q: read_table(q, "u", "i"), write(tmp_path, "e.csv", ""), None, "empty")
    assert_error(lambda q: read_table(q, "u", "i"), tmp_path / "m.csv", None, "not found")


# ---------------------------------------------------------------- recbole
def test_recbole_inter(tmp_path):
    head = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    p = write(tmp_path, "ml.inter", head + "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    df = read_recbole_inter(p)
    assert df["user"].tolist() == [196, 186]
    assert df["timestamp"].tolist() == [881250949, 891717742]
    assert_error(read_recbole_inter, write(tmp_path, "b.inter", head + "1\t2\t3\n"), 2, "found 3")
    bad = write(tmp_path, "c.inter", "uid:token\titem_id:token\n1\t2\n")
    assert_error(read_recbole_inter, bad, 1, "user_id")
    assert_error(read_recbole_inter, write(tmp_path, "d.inter", ""), None, "empty")
