"""A sharded run's cells/ folder (hive layout, cells/shard=i-of-n/part-0.parquet) read
as one table by polars and duckdb holds exactly the merged cells.parquet's rows.

Usage: check_shards.py RUN_DIR SHARDS
"""

import sys
from pathlib import Path

import duckdb
import polars as pl


def main() -> None:
    run_dir, shards = Path(sys.argv[1]), int(sys.argv[2])
    merged = pl.read_parquet(run_dir / "cells.parquet")
    keys = ["pair", "direction", "kind", "layer", "head", "position"]

    by_polars = pl.scan_parquet(run_dir / "cells" / "**" / "*.parquet", hive_partitioning=True).collect()
    by_duckdb = duckdb.sql(
        f"SELECT * FROM read_parquet('{run_dir}/cells/*/*.parquet', hive_partitioning = true)"
    ).pl()
    for tool, table in [("polars", by_polars), ("duckdb", by_duckdb)]:
        assert table["shard"].n_unique() == shards, (tool, table["shard"].unique().to_list())
        assert table.height == merged.height, (tool, table.height, merged.height)
        cells = table.drop("shard").select(merged.columns).sort(keys, nulls_last=False)
        want = merged.sort(keys, nulls_last=False)
        assert cells.equals(want), f"{tool}: the shards' cells differ from cells.parquet"
        print(f"check_shards: {tool} reads {shards} shards' {table.height} cells as one table = cells.parquet")


if __name__ == "__main__":
    main()
