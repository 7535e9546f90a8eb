"""Reads every table of an actpatch run with pandas, pyarrow, polars and duckdb, checks
that all four see the same rows, then writes cells.parquet back from each tool after a
filter and checks that `actpatch compare` accepts it with every value unchanged.

Usage: check_tables.py ACTPATCH RUN_DIR WORK_DIR   (run by scripts/test-interop.sh)
"""

import math
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

PASSED, FAILED = [], []


def check(name, ok, detail=""):
    (PASSED if ok else FAILED).append(name)
    print(f"{'ok  ' if ok else 'FAIL'} {name}{'' if ok else ': ' + str(detail)}")


def canonical(value):
    """One value as all four tools should agree on it: numbers as float, NaN and
    missing as None, sequences as lists."""
    if value is None:
        return None
    if isinstance(value, (np.ndarray, list, tuple, pa.Array)):
        return [canonical(v) for v in list(value)]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return None if math.isnan(float(value)) else float(value)
    if value is pd.NA:
        return None
    return str(value)


def rows_of(records):
    return [tuple(canonical(v) for v in r) for r in records]


def string_views(schema):
    """Fields whose type is, or holds, a string view."""
    found = []

    def walk(name, t):
        if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
            found.append(name)
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_list_view(t):
            walk(name + ".item", t.value_type)
        elif pa.types.is_struct(t):
            for f in t:
                walk(name + "." + f.name, f.type)

    for field in schema:
        walk(field.name, field.type)
    return found


def read_everywhere(path):
    """The table's rows as read by each tool, with its column names."""
    table = pq.read_table(path)
    check(f"{path.name}: pyarrow reads no string views", not string_views(table.schema), string_views(table.schema))
    check(
        f"{path.name}: schema version key kept",
        b"actpatch.schema_version" in (pq.read_metadata(path).metadata or {}),
    )
    frame = pd.read_parquet(path)
    polars_frame = pl.read_parquet(path)
    duck = duckdb.connect().execute(f"SELECT * FROM read_parquet('{path}')")
    columns = table.column_names
    seen = {
        "pyarrow": (columns, rows_of(zip(*[table.column(c).to_pylist() for c in columns]))),
        "pandas": (list(frame.columns), rows_of(frame.itertuples(index=False))),
        "polars": (polars_frame.columns, rows_of(polars_frame.iter_rows())),
        "duckdb": ([d[0] for d in duck.description], rows_of(duck.fetchall())),
    }
    ref_cols, ref_rows = seen["pyarrow"]
    check(f"{path.name}: has rows", len(ref_rows) > 0)
    for tool, (cols, rows) in seen.items():
        check(f"{path.name}: {tool} reads {len(ref_rows)} rows", len(rows) == len(ref_rows), len(rows))
        check(f"{path.name}: {tool} sees the same columns", cols == ref_cols, cols)
        check(f"{path.name}: {tool} sees the same values", rows == ref_rows, next(
            (f"row {i}: {a} != {b}" for i, (a, b) in enumerate(zip(rows, ref_rows)) if a != b), "lengths differ"))
    return frame


def compare(actpatch, run_dir, cells, out):
    return subprocess.run(
        [actpatch, "compare", str(run_dir), str(cells), "--out", str(out), "--fail-above", "0", "--no-figures"],
        capture_output=True,
        text=True,
    )


def written_back_is_accepted(actpatch, run_dir, work, tool, write, kind, n_all):
    path = work / f"cells-{tool}.parquet"
    n = write(path)
    out = work / f"compare-{tool}"
    result = compare(actpatch, run_dir, path, out)
    check(f"cells.parquet filtered to {kind} and written by {tool}: compare exits 0", result.returncode == 0, result.stderr)
    if result.returncode != 0:
        return
    joined = pd.read_parquet(out / "compare.parquet")
    counts = joined["status"].value_counts().to_dict()
    check(
        f"{tool}: {n} cells matched, {n_all - n} only in A, none only in B",
        counts.get("matched", 0) == n and counts.get("only_a", 0) == n_all - n and "only_b" not in counts,
        counts,
    )
    matched = joined[joined["status"] == "matched"]
    check(f"{tool}: every matched value unchanged", float(matched["abs_diff"].max()) == 0.0, matched["abs_diff"].max())
    check(f"{tool}: compare.html written", (out / "compare.html").is_file())
    read_everywhere(out / "compare.parquet")
    return result


def main():
    actpatch, run_dir, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    tables = sorted(run_dir.glob("*.parquet"))
    check("run has cells.parquet and baselines.parquet", {"cells.parquet", "baselines.parquet"} <= {t.name for t in tables})
    frames = {t.name: read_everywhere(t) for t in tables}
    cells = frames["cells.parquet"]
    n_all = len(cells)
    source = run_dir / "cells.parquet"
    present = set(cells["kind"])

    def pick(preferred):
        """`preferred` when the run has that kind, else the first kind it has."""
        return preferred if preferred in present else sorted(present)[0]

    kinds = {tool: pick(k) for tool, k in [("pandas", "resid_pre"), ("polars", "attn_out"), ("pyarrow", "head_out"), ("duckdb", "mlp_out")]}

    def by_pandas(path):
        part = cells[cells["kind"] == kinds["pandas"]]
        part.to_parquet(path)  # the filtered index is written as a column
        return len(part)

    def by_polars(path):
        part = pl.read_parquet(source).filter(pl.col("kind") == kinds["polars"])
        part.write_parquet(path)
        return part.height

    def by_pyarrow(path):
        table = pq.read_table(source)
        part = table.filter(pa.compute.equal(table["kind"], kinds["pyarrow"]))
        pq.write_table(part, path)
        return part.num_rows

    def by_duckdb(path):
        kind = kinds["duckdb"]
        con = duckdb.connect()
        con.execute(f"COPY (SELECT * FROM read_parquet('{source}') WHERE kind = '{kind}') TO '{path}' (FORMAT parquet)")
        return con.execute(f"SELECT count(*) FROM read_parquet('{path}')").fetchall()[0][0]

    result = written_back_is_accepted(actpatch, run_dir, work, "pandas", by_pandas, kinds["pandas"], n_all)
    check(
        "pandas: the missing version key is reported as a note",
        result is not None and "actpatch.schema_version" in result.stderr,
        result.stderr if result else "",
    )
    written_back_is_accepted(actpatch, run_dir, work, "polars", by_polars, kinds["polars"], n_all)
    written_back_is_accepted(actpatch, run_dir, work, "pyarrow", by_pyarrow, kinds["pyarrow"], n_all)
    written_back_is_accepted(actpatch, run_dir, work, "duckdb", by_duckdb, kinds["duckdb"], n_all)

    broken = cells[cells["kind"] == "resid_pre"].copy()
    broken["layer"] = broken["layer"].astype(str)
    broken.to_parquet(work / "cells-broken.parquet")
    result = compare(actpatch, run_dir, work / "cells-broken.parquet", work / "compare-broken")
    check(
        "a text `layer` column is refused (exit 2) naming the column and the type",
        result.returncode == 2 and "`layer`" in result.stderr and "uint32" in result.stderr,
        (result.returncode, result.stderr),
    )

    versions = f"pandas {pd.__version__}, pyarrow {pa.__version__}, polars {pl.__version__}, duckdb {duckdb.__version__}"
    print(f"read with {versions}")
    print(f"interop: {len(PASSED)} passed, {len(FAILED)} failed")
    sys.exit(1 if FAILED else 0)


if __name__ == "__main__":
    main()
