"""Reference values for actpatch-concepts' bootstrap (crates/concepts/tests/bootstrap.rs).

An independent implementation with numpy (its own generator, PCG64, not actpatch's
ChaCha8): percentile bootstrap intervals of the mean with 400,000 draws, so that the
endpoints are known to about ±0.002 and a Rust run with as many draws must land within
0.01 of them whatever its random stream. Two cases: plain resampling of 30 pairs, and
grouped resampling (templates with replacement, then pairs within each chosen template)
of 30 pairs in 5 templates of unequal size. Also the ratio of sums, exactly.

    python scripts/reference/bootstrap_reference.py > crates/concepts/tests/data/bootstrap_reference.json
"""

import json

import numpy as np

DRAWS = 400_000
LEVEL = 0.95


def data():
    # A fixed, skewed sample: no randomness needed to rebuild it.
    i = np.arange(30)
    values = 0.4 + 0.5 * np.sin(1.7 * i) + 0.3 * (i % 7 == 0)
    groups = np.array([k for k, size in enumerate([3, 9, 5, 8, 5]) for _ in range(size)])
    # Baselines for the ratio of sums: ld_clean, ld_corrupted, patched ld.
    clean = 2.0 + (i % 5)
    corrupted = -1.0 + 0.1 * (i % 3)
    patched = corrupted + values * (clean - corrupted)
    return values, groups, clean, corrupted, patched


def interval(means):
    tail = (1 - LEVEL) / 2
    return [float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))]


def plain(values, rng):
    n = len(values)
    picks = rng.integers(0, n, size=(DRAWS, n))
    return interval(values[picks].mean(axis=1))


def grouped(values, groups, rng):
    members = [np.flatnonzero(groups == g) for g in np.unique(groups)]
    means = np.empty(DRAWS)
    for d in range(DRAWS):
        chosen = rng.integers(0, len(members), size=len(members))
        picked = np.concatenate(
            [members[g][rng.integers(0, len(members[g]), size=len(members[g]))] for g in chosen]
        )
        means[d] = values[picked].mean()
    return interval(means)


def main():
    values, groups, clean, corrupted, patched = data()
    rng = np.random.default_rng(20260101)
    out = {
        "draws": DRAWS,
        "level": LEVEL,
        "values": values.tolist(),
        "groups": groups.tolist(),
        "clean_logit_diff": clean.tolist(),
        "corrupted_logit_diff": corrupted.tolist(),
        "patched_logit_diff": patched.tolist(),
        "mean": float(values.mean()),
        "plain_interval": plain(values, rng),
        "grouped_interval": grouped(values, groups, rng),
        "ratio_of_sums": float((patched - corrupted).sum() / (clean - corrupted).sum()),
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
