"""`Model.patch` from Python against the command line's sweep of the same pair.

One SmolLM2-135M pair (experiments/smollm2/country_capitals.toml's France/Italy), the
`resid_pre` grid, denoising, the logit-difference metrics. The command line runs a
one-pair experiment file (no figures) `repeats` times; its manifest's `sweep_seconds`
is the pair's sweep (its two clean/corrupted passes included) and `validate_seconds`
the baselines. Python times `Model.patch` as a whole (tokenizing, baselines, both
passes, the sweep) on a model loaded once. Prints min/median/max of each and the ratio
of the medians.
"""

import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import actpatch

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
CLEAN, CORRUPTED, ANSWERS = "The capital of France is", "The capital of Italy is", (" Paris", " Rome")

EXPERIMENT = f"""
[experiment]
name = "bench_python"
[model]
path = "{MODEL.as_posix()}"
[sweep]
kinds = ["resid_pre"]
[output]
formats = []
[[pairs]]
name = "france-italy"
concept = "country capitals"
clean = "{CLEAN}"
corrupted = "{CORRUPTED}"
correct = "{ANSWERS[0]}"
incorrect = "{ANSWERS[1]}"
"""


def summary(name, values):
    print(
        f"{name:<44} min {min(values):.3f} s  median {statistics.median(values):.3f} s"
        f"  max {max(values):.3f} s"
    )
    return statistics.median(values)


def main(cli: str, repeats: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-python-"))
    experiment = work / "pair.toml"
    experiment.write_text(EXPERIMENT, encoding="utf-8")
    sweep, validate = [], []
    for _ in range(repeats):
        run_dir = subprocess.run(
            [cli, "run", str(experiment), "--out", str(work / "runs"), "--quiet"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        timings = json.loads((Path(run_dir) / "manifest.json").read_text())["timings"]
        sweep.append(timings["sweep_seconds"])
        validate.append(timings["validate_seconds"])

    model = actpatch.load_model(str(MODEL))
    model.patch(CLEAN, CORRUPTED, ANSWERS)  # warm-up, as the CLI's validation warms its run
    python = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.patch(CLEAN, CORRUPTED, ANSWERS, kind="resid_pre")
        python.append(time.perf_counter() - started)

    cli_sweep = summary("command line: sweep_seconds", sweep)
    cli_both = summary("command line: validate + sweep", [a + b for a, b in zip(validate, sweep)])
    ours = summary("python: Model.patch (baselines + sweep)", python)
    print(f"Model.patch / CLI sweep: {ours / cli_sweep:.3f}; / CLI validate+sweep: {ours / cli_both:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10)
