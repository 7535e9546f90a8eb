"""The guide's table of attribution accuracy on SmolLM2 (docs/src/methods/attribution.md), from a run's attribution.parquet.

    python3 scripts/data/attribution_table.py results/smollm2_attribution/<run id>/attribution.parquet

Prints, per method: the median Pearson and Spearman correlation with exact over the
(pair, direction, kind) rows, the mean recall of the exact top 10, the false negatives
summed over rows next to the large cells (|exact| >= 0.1), the mean sign agreement, the
largest |error|, and the mean seconds and forward-pass equivalents per pair and
direction; then false negatives and median Pearson per kind. Needs pandas and pyarrow.
"""

import sys

import pandas as pd


def main(path: str) -> None:
    rows = pd.read_parquet(path)
    by_method = rows.groupby("method", sort=False)
    table = pd.DataFrame(
        {
            "Pearson (median)": by_method["pearson"].median(),
            "Spearman (median)": by_method["spearman"].median(),
            "recall@10 (mean)": by_method["recall_top10"].mean(),
            "false negatives": by_method["false_negatives"].sum(),
            "large cells": by_method["large_cells"].sum(),
            "sign agreement (mean)": by_method["sign_agreement"].mean(),
            "max |error|": by_method["max_abs_error"].max(),
            "seconds per pair and direction": by_method["seconds"].mean(),
            "passes": by_method["passes"].mean(),
        }
    )
    print(f"{rows['pair'].nunique()} pairs, {rows['direction'].nunique()} directions, "
          f"{rows['kind'].nunique()} kinds, {len(rows)} rows\n")
    print("| method | Pearson (median) | Spearman (median) | recall@10 (mean) "
          "| false negatives / large cells | sign agreement (mean) | max \\|error\\| |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for method, r in table.iterrows():
        print(f"| `{method}` | {r['Pearson (median)']:.2f} | {r['Spearman (median)']:.2f} "
              f"| {r['recall@10 (mean)']:.2f} | {int(r['false negatives'])} / {int(r['large cells'])} "
              f"| {r['sign agreement (mean)']:.2f} | {r['max |error|']:.2f} |")
    print("\nper method, mean per pair and direction: seconds, forward-pass equivalents")
    print(table[["seconds per pair and direction", "passes"]].to_string(float_format="%.2f"))
    exact = rows.groupby("kind", sort=False)["exact_seconds"].mean()
    print("\nexact sweep, mean seconds per pair and direction, by kind")
    print(exact.to_string(float_format="%.2f"))
    print("\nfalse negatives per kind (summed over pairs and directions)")
    print(rows.pivot_table(index="kind", columns="method", values="false_negatives",
                           aggfunc="sum", sort=False).to_string())
    print("\nmedian Pearson per kind")
    print(rows.pivot_table(index="kind", columns="method", values="pearson",
                           aggfunc="median", sort=False).to_string(float_format="%.3f"))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
