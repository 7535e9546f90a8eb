"""Ranks sender heads of a run's path patching by their mean effect over the passing
pairs, and writes the top ones as JSON (what make_ioi_experiments.py reads for SmolLM2).

Effect = mean normalized logit difference minus the unpatched value (0 when denoising,
1 when noising); heads are ranked by its absolute value.

Usage: python3 rank_path_heads.py RUN_DIR [--receivers logits] [--direction noising]
                                  [--top 3] [--write scripts/data/ioi_smollm2_top_heads.json]
"""
import argparse
import json
import os

import pandas as pd


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir")
    ap.add_argument("--receivers", default="logits")
    ap.add_argument("--direction", default="noising")
    ap.add_argument("--top", type=int, default=3)
    ap.add_argument("--write")
    args = ap.parse_args()
    cells = pd.read_parquet(os.path.join(args.run_dir, "cells.parquet"))
    cells = cells[(cells["kind"] == "path") & (cells["receivers"] == args.receivers)
                  & (cells["direction"] == args.direction) & cells["pair_valid"]]
    unpatched = 1.0 if args.direction == "noising" else 0.0
    cells = cells.assign(effect=cells["normalized_logit_diff"] - unpatched)
    means = cells.groupby(["layer", "head"])["effect"].agg(["mean", "std", "count"]).reset_index()
    means = means.reindex(means["mean"].abs().sort_values(ascending=False).index)
    print(means.head(12).to_string(index=False))
    top = [{"head": f"{int(r['layer'])}.{int(r['head'])}", "mean": float(r["mean"]), "pairs": int(r["count"])}
           for _, r in means.head(args.top).iterrows()]
    if args.write:
        run = os.path.basename(os.path.normpath(args.run_dir))
        json.dump({"run": f"run {run} ({args.direction}, receivers {args.receivers})", "heads": top},
                  open(args.write, "w"), indent=1)
        print("wrote", args.write)


if __name__ == "__main__":
    main()
