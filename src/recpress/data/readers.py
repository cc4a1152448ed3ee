"""Readers for the interaction file formats RecPress knows.

Every reader returns a ``pandas.DataFrame`` of *original* ids with columns ``user``, ``item``
and, where the format has them, ``rating`` (float64) and ``timestamp`` (int64). Rows keep file
order. Bad input raises :class:`recpress.errors.DataError` naming the file, the 1-based line
and how to fix it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from itertools import chain
from pathlib import Path

import numpy as np
import pandas as pd

from recpress.errors import DataError

__all__ = [
    "read_lightgcn",
    "read_movielens",
    "read_pairs_tsv",
    "read_recbole_inter",
    "read_table",
    "read_users_dat",
]


def _read_lines(path: str | Path) -> tuple[Path, list[str], np.ndarray]:
    """Non-blank lines of a text file and their 1-based line numbers; missing/empty -> DataError."""
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found; check the path or place the file there", path=p)
    with open(p, encoding="utf-8", errors="replace", newline=None) as fh:
        raw = fh.read().splitlines()
    keep = [i for i, ln in enumerate(raw) if ln.strip()]
    if not keep:
        raise DataError("file is empty; it must hold at least one interaction", path=p)
    return p, [raw[i] for i in keep], np.asarray(keep, dtype=np.int64) + 1


def _to_ints(
    tokens: np.ndarray, token_line: np.ndarray, path: Path, what: str, allow_negative: bool = False
) -> np.ndarray:
    """Convert string tokens to int64; report the first bad token with its line."""
    try:
        out = tokens.astype(np.int64)
    except (ValueError, OverflowError):
        for tok, line in zip(tokens.tolist(), token_line.tolist(), strict=True):
            try:
                int(tok)
            except ValueError:
                raise DataError(
                    f"{what} {tok!r} is not an integer; {what}s in this format must be "
                    "non-negative integers",
                    path=path,
                    line=int(line),
                ) from None
        raise DataError(f"{what} out of the int64 range", path=path) from None
    if not allow_negative:
        neg = np.flatnonzero(out < 0)
        if len(neg):
            k = int(neg[0])
            raise DataError(
                f"{what} {int(out[k])} is negative; ids must be >= 0",
                path=path,
                line=int(token_line[k]),
            )
    return out


def _to_floats(tokens: np.ndarray, token_line: np.ndarray, path: Path, what: str) -> np.ndarray:
    try:
        return tokens.astype(np.float64)
    except ValueError:
        for tok, line in zip(tokens.tolist(), token_line.tolist(), strict=True):
            try:
                float(tok)
            except ValueError:
                raise DataError(
                    f"{what} {tok!r} is not a number", path=path, line=int(line)
                ) from None
        raise


def _split_fixed(
    path: str | Path, sep: str | None, ncols: Sequence[int], fmt: str
) -> tuple[Path, np.ndarray, np.ndarray, int]:
    """Split every line into fields; all lines must have the same count, one of `ncols`.

    Returns (path, tokens (n_lines, k) str array, line numbers, k).
    """
    p, lines, lineno = _read_lines(path)
    rows = [ln.split(sep) if sep is not None else ln.split() for ln in lines]
    if sep is not None:
        rows = [[t.strip() for t in r] for r in rows]
    counts = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    k = int(counts[0])
    expect = " or ".join(str(c) for c in ncols)
    if k not in ncols:
        raise DataError(
            f"expected {expect} fields ({fmt}), found {k}; fix this line or use the reader "
            "for this file's format",
            path=p,
            line=int(lineno[0]),
        )
    bad = np.flatnonzero(counts != k)
    if len(bad):
        b = int(bad[0])
        raise DataError(
            f"expected {k} fields like the first line ({fmt}), found {int(counts[b])}; "
            "fix or remove this line",
            path=p,
            line=int(lineno[b]),
        )
    tokens = np.asarray(list(chain.from_iterable(rows)), dtype=str).reshape(len(rows), k)
    return p, tokens, lineno, k


_PLAIN_CHARS = b"0123456789-\r\n"


def _fast_table(path: Path, sep: str, dtypes: dict[str, type]) -> pd.DataFrame | None:
    """Fast pandas parse of a clean headerless file; None on any problem (the caller then
    re-parses line by line to report the exact fault)."""
    if not path.is_file():
        return None
    # only digits, separators and newlines: anything else ("2.0", "x", " ") takes the slow,
    # precise path (pandas would accept "2.0" as an integer id)
    raw = path.read_bytes()
    if raw.translate(None, _PLAIN_CHARS + sep.encode()):
        return None
    # exactly one separator fewer than columns on every line (pandas would silently turn an
    # extra leading column into the index); blank lines or stray fields take the slow path
    n_lines = raw.count(b"\n") + (0 if raw.endswith(b"\n") else 1)
    if raw.count(sep.encode()) != (len(dtypes) - 1) * n_lines:
        return None
    try:
        df = pd.read_csv(path, sep=sep, header=None, names=list(dtypes), dtype=dtypes, engine="c")
    except (ValueError, TypeError, pd.errors.ParserError, pd.errors.EmptyDataError):
        return None
    if len(df) == 0 or df.isna().any().any():
        return None
    for col in ("user", "item"):
        if (df[col].to_numpy() < 0).any():
            return None
    return df


def read_pairs_tsv(path: str | Path) -> pd.DataFrame:
    """Read a ``user<TAB>item`` file (integer ids, no header) into columns user, item."""
    fast = _fast_table(Path(path), "\t", {"user": np.int64, "item": np.int64})
    if fast is not None:
        return fast
    p, tok, lineno, _ = _split_fixed(path, "\t", (2,), "user<TAB>item")
    return pd.DataFrame(
        {
            "user": _to_ints(tok[:, 0], lineno, p, "user id"),
            "item": _to_ints(tok[:, 1], lineno, p, "item id"),
        }
    )


def read_movielens(path: str | Path) -> pd.DataFrame:
    """Read MovieLens ratings: ``u.data`` (tab-separated) or ml-1m/10m ``ratings.dat`` (``::``).

    Columns: user, item, rating (float64), timestamp (int64).
    """
    p = Path(path)
    sep = "\t"
    if p.is_file():
        with open(p, encoding="utf-8", errors="replace") as fh:
            head = fh.readline()
        if "::" in head:
            sep = "::"
    fmt = "user::item::rating::timestamp" if sep == "::" else "user<TAB>item<TAB>rating<TAB>ts"
    if sep == "\t":
        dt = {"user": np.int64, "item": np.int64, "rating": np.float64, "timestamp": np.int64}
        fast = _fast_table(p, sep, dt)
        if fast is not None:
            return fast
    p, tok, lineno, _ = _split_fixed(p, sep, (4,), fmt)
    return pd.DataFrame(
        {
            "user": _to_ints(tok[:, 0], lineno, p, "user id"),
            "item": _to_ints(tok[:, 1], lineno, p, "item id"),
            "rating": _to_floats(tok[:, 2], lineno, p, "rating"),
            "timestamp": _to_ints(tok[:, 3], lineno, p, "timestamp", allow_negative=True),
        }
    )


def _read_counted_lists(path: str | Path, counted: bool) -> pd.DataFrame:
    """Shared parser for ``n i1 .. in`` (users.dat, line = user) and ``u i1 .. in`` (LightGCN)."""
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found; check the path or place the file there", path=p)
    with open(p, encoding="utf-8", errors="replace") as fh:
        raw = fh.read().splitlines()
    while raw and not raw[-1].strip():
        raw.pop()
    if not raw:
        raise DataError("file is empty; it must hold at least one line", path=p)
    rows = [ln.split() for ln in raw]
    lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
    lineno_rows = np.arange(1, len(rows) + 1, dtype=np.int64)
    if counted:
        blank = np.flatnonzero(lens == 0)
        if len(blank):
            raise DataError(
                "blank line; every line must start with the item count of that user "
                "(write 0 for a user without items)",
                path=p,
                line=int(blank[0]) + 1,
            )
    else:
        keep = lens > 0
        rows = [r for r, k in zip(rows, keep.tolist(), strict=True) if k]
        lineno_rows = lineno_rows[keep]
        lens = lens[keep]
    flat = np.asarray(list(chain.from_iterable(rows)), dtype=str)
    flat_line = np.repeat(lineno_rows, lens)
    what = "count/item id" if counted else "id"
    vals = _to_ints(flat, flat_line, p, what)
    starts = np.concatenate(([0], np.cumsum(lens)[:-1]))
    heads = vals[starts]
    is_item = np.ones(len(vals), dtype=bool)
    is_item[starts] = False
    items = vals[is_item]
    n_listed = lens - 1
    if counted:
        bad = np.flatnonzero(heads != n_listed)
        if len(bad):
            b = int(bad[0])
            raise DataError(
                f"count field says {int(heads[b])} items but the line lists {int(n_listed[b])}; "
                "fix the count (first number) or the item list",
                path=p,
                line=int(lineno_rows[b]),
            )
        users = np.repeat(lineno_rows - 1, n_listed)
    else:
        users = np.repeat(heads, n_listed)
    return pd.DataFrame({"user": users.astype(np.int64), "item": items.astype(np.int64)})


def read_users_dat(path: str | Path) -> pd.DataFrame:
    """Read a CiteULike ``users.dat``: line u (0-based) is ``n i1 ... in``.

    The user id is the 0-based line number; the count field must match the listed items.
    """
    return _read_counted_lists(path, counted=True)


def read_lightgcn(path: str | Path) -> pd.DataFrame:
    """Read a LightGCN ``train.txt``/``test.txt`` (Gowalla, Yelp2018, Amazon-book): ``u i i i``.

    Lines with a user but no items are allowed (the user has no pairs in this file).
    """
    return _read_counted_lists(path, counted=False)


_PD_LINE = re.compile(r"line (\d+)")


def _check_columns(df: pd.DataFrame, wanted: dict[str, str | None], path: Path) -> None:
    have = [str(c) for c in df.columns]
    for role, col in wanted.items():
        if col is not None and col not in df.columns:
            raise DataError(
                f"missing {role} column {col!r}; the file has columns: {', '.join(have)}. "
                f"Pass the right name as {role}_col",
                path=path,
            )


def read_table(
    path: str | Path,
    user_col: str,
    item_col: str,
    rating_col: str | None = None,
    time_col: str | None = None,
    sep: str | None = None,
) -> pd.DataFrame:
    """Read a CSV/TSV (with a header row) or Parquet file with the given column names.

    ``sep`` defaults to tab for ``.tsv``, comma otherwise. Ids keep their type (they may be
    strings). Returns columns user, item and rating/timestamp where requested.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError("file not found; check the path or place the file there", path=p)
    if p.stat().st_size == 0:
        raise DataError("file is empty; it must hold a header and at least one row", path=p)
    wanted = {"user": user_col, "item": item_col, "rating": rating_col, "time": time_col}
    if p.suffix.lower() in (".parquet", ".pq"):
        try:
            df = pd.read_parquet(p)
        except Exception as exc:  # pyarrow raises many types
            raise DataError(f"cannot read Parquet file: {exc}", path=p) from None
        first_line = None
    else:
        if sep is None:
            sep = "\t" if p.suffix.lower() in (".tsv", ".tab", ".inter") else ","
        try:
            df = pd.read_csv(p, sep=sep, dtype=str, keep_default_na=False, engine="c")
        except pd.errors.EmptyDataError:
            raise DataError(
                "file is empty; it must hold a header and at least one row", path=p
            ) from None
        except pd.errors.ParserError as exc:
            m = _PD_LINE.search(str(exc))
            raise DataError(
                f"wrong number of columns: {exc}; fix this line",
                path=p,
                line=int(m.group(1)) if m else None,
            ) from None
        first_line = 2  # header is line 1
    _check_columns(df, wanted, p)
    if len(df) == 0:
        raise DataError("file has a header but no rows", path=p)
    cols = {"user": user_col, "item": item_col}
    out = pd.DataFrame({k: df[c].to_numpy() for k, c in cols.items()})
    if first_line is not None:
        lineno = np.arange(len(df), dtype=np.int64) + first_line
        for role in ("user", "item"):
            vals = out[role].to_numpy().astype(str)
            empty = np.flatnonzero(vals == "")
            if len(empty):
                raise DataError(
                    f"empty {role} id (too few columns or a blank field); fix this line",
                    path=p,
                    line=int(lineno[empty[0]]),
                )
            out[role] = _maybe_int(vals)
        if rating_col is not None:
            out["rating"] = _to_floats(df[rating_col].to_numpy().astype(str), lineno, p, "rating")
        if time_col is not None:
            out["timestamp"] = _to_floats(
                df[time_col].to_numpy().astype(str), lineno, p, "timestamp"
            ).astype(np.int64)
    else:
        for role in ("user", "item"):
            if out[role].isna().any():
                raise DataError(f"{role} column {cols[role]!r} has missing values", path=p)
        if rating_col is not None:
            out["rating"] = df[rating_col].to_numpy(dtype=np.float64)
        if time_col is not None:
            out["timestamp"] = pd.to_numeric(df[time_col]).to_numpy().astype(np.int64)
    return out


def _maybe_int(vals: np.ndarray) -> np.ndarray:
    """Integer array if every token is an integer, else the strings (token ids)."""
    try:
        return vals.astype(np.int64)
    except (ValueError, OverflowError):
        return vals.astype(object)


def read_recbole_inter(path: str | Path) -> pd.DataFrame:
    """Read a RecBole atomic ``.inter`` file (tab-separated, header ``name:type`` fields).

    Uses ``user_id``, ``item_id`` and, where present, ``rating`` and ``timestamp``.
    """
    p, tok, lineno, k = _split_fixed_header(path)
    header = [h.split(":", 1)[0] for h in tok[0]]
    body, body_line = tok[1:], lineno[1:]
    if len(body) == 0:
        raise DataError("file has a header but no rows", path=p)
    idx = {h: i for i, h in enumerate(header)}
    for need in ("user_id", "item_id"):
        if need not in idx:
            raise DataError(
                f"missing column {need!r}; the header has: {', '.join(tok[0])}. "
                "A RecBole .inter header looks like user_id:token<TAB>item_id:token",
                path=p,
                line=1,
            )
    out = pd.DataFrame(
        {
            "user": _maybe_int(body[:, idx["user_id"]]),
            "item": _maybe_int(body[:, idx["item_id"]]),
        }
    )
    if "rating" in idx:
        out["rating"] = _to_floats(body[:, idx["rating"]], body_line, p, "rating")
    if "timestamp" in idx:
        out["timestamp"] = _to_floats(body[:, idx["timestamp"]], body_line, p, "timestamp").astype(
            np.int64
        )
    return out


def _split_fixed_header(path: str | Path) -> tuple[Path, np.ndarray, np.ndarray, int]:
    p, lines, lineno = _read_lines(path)
    k = len(lines[0].split("\t"))
    p, tok, lineno, k = _split_fixed(p, "\t", (k,), "as many fields as the header")
    return p, tok, lineno, k
