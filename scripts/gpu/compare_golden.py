#!/usr/bin/env python3
"""Checks one actpatch run of a fixture experiment against the fixture's golden values.

    compare_golden.py RUN_DIR FIXTURE_DIR [--tol 1e-4]

RUN_DIR is a run folder (cells.parquet, baselines.parquet); FIXTURE_DIR is
tests/fixtures/tiny-gpt2 or tests/fixtures/tiny-llama. The references are the fixture's
`golden.json` (TransformerLens 2.15 and Hugging Face transformers, CPU, f32) and, where
the checkout has it, `golden_extra.json` (its `exact_denoising` grids; the same
direction as the runner's default sweep). Checked:

- each pair's clean and corrupted logit differences (baselines.parquet);
- every cell of every patch kind that has a golden grid: its normalized logit
  difference, indexed as TransformerLens's `patching` module returns the grid.

For each kind it prints the cells checked and the largest |actpatch - golden|; a kind
with no grid in any reference is listed as unchecked. Exit status: 0 when every checked
value is within --tol and at least one cell was checked; 1 otherwise; 2 on bad input.

Needs numpy and pyarrow (both in the GPU image's python3 and in most data stacks).
"""

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

# Runner kind -> (TransformerLens grid name, the cell columns that index it).
GRIDS = {
    "resid_pre": ("resid_pre", ("layer", "position")),
    "resid_mid": ("resid_mid", ("layer", "position")),
    "resid_post": ("resid_post", ("layer", "position")),
    "attn_out": ("attn_out", ("layer", "position")),
    "mlp_out": ("mlp_out", ("layer", "position")),
    "head_out_by_pos": ("head_z_by_pos", ("layer", "position", "head")),
    "head_out": ("head_z_all_pos", ("layer", "head")),
    "head_pattern": ("head_pattern_all_pos", ("layer", "head")),
}


def references(fixture_dir):
    """(label, {pair: {grid name: nested list}}) for each golden file present."""
    found = []
    golden = json.loads((fixture_dir / "golden.json").read_text())
    found.append(("golden.json", {p: v["grids"] for p, v in golden["pairs"].items()}))
    extra_path = fixture_dir / "golden_extra.json"
    if extra_path.is_file():
        extra = json.loads(extra_path.read_text())
        found.append(
            (
                "golden_extra.json exact_denoising",
                {p: v["grids"]["exact_denoising"] for p, v in extra["pairs"].items()},
            )
        )
    return golden, found


def grid_value(grid, index):
    for i in index:
        grid = grid[i]
    return math.nan if grid is None else float(grid)


def check_baselines(run_dir, golden, tol):
    """Largest |Δ| of the pairs' clean/corrupted logit differences, and how many."""
    table = pq.read_table(run_dir / "baselines.parquet").to_pylist()
    worst, checked = 0.0, 0
    for row in table:
        want = golden["pairs"].get(row["pair"])
        if want is None:
            continue
        for key in ("clean_logit_diff", "corrupted_logit_diff"):
            if row[key] is None:
                print(f"  baselines: {row['pair']} has no {key} (validation failed?)")
                return math.inf, checked
            worst = max(worst, abs(row[key] - want[key]))
            checked += 1
    verdict = "ok" if checked and worst <= tol else "FAIL"
    print(f"  {'baselines':<18} {checked:>5} values  max |Δ| {worst:.2e}  {verdict}")
    return worst, checked


def check_cells(run_dir, refs, tol):
    """Per kind and reference: cells checked and the largest |Δ|. Returns (ok, checked)."""
    cells = pq.read_table(run_dir / "cells.parquet").to_pylist()
    kinds = sorted({c["kind"] for c in cells})
    ok, total = True, 0
    for kind in kinds:
        rows = [c for c in cells if c["kind"] == kind]
        spec = GRIDS.get(kind)
        checked_any = False
        for label, grids in refs:
            if spec is None:
                break
            name, axes = spec
            got, want = [], []
            for c in rows:
                grid = grids.get(c["pair"], {}).get(name)
                if grid is None or any(c[a] is None for a in axes):
                    continue
                value = grid_value(grid, [c[a] for a in axes])
                if math.isnan(value):
                    continue
                got.append(c["normalized_logit_diff"])
                want.append(value)
            if not got:
                continue
            delta = np.abs(np.asarray(got) - np.asarray(want))
            worst = float(delta.max())
            verdict = "ok" if worst <= tol else "FAIL"
            ok &= worst <= tol
            total += len(got)
            checked_any = True
            print(f"  {kind:<18} {len(got):>5} cells   max |Δ| {worst:.2e}  {verdict}  ({label})")
        if not checked_any:
            print(f"  {kind:<18} {len(rows):>5} cells   no golden grid in this checkout: unchecked")
    return ok, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="an actpatch run folder")
    parser.add_argument("fixture_dir", type=Path, help="tests/fixtures/tiny-gpt2 or tiny-llama")
    parser.add_argument("--tol", type=float, default=1e-4, help="largest |Δ| allowed (1e-4)")
    args = parser.parse_args()
    for path in (args.run_dir / "cells.parquet", args.fixture_dir / "golden.json"):
        if not path.is_file():
            print(f"compare_golden: {path} not found", file=sys.stderr)
            return 2

    golden, refs = references(args.fixture_dir)
    print(f"{args.run_dir} against {args.fixture_dir.name} (tolerance {args.tol:g}):")
    baseline_worst, baseline_n = check_baselines(args.run_dir, golden, args.tol)
    cells_ok, cells_n = check_cells(args.run_dir, refs, args.tol)
    ok = cells_ok and cells_n > 0 and baseline_n > 0 and baseline_worst <= args.tol
    print(f"  => {'PASS' if ok else 'FAIL'}: {cells_n} cells and {baseline_n} baselines checked")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
