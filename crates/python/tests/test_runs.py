"""`actpatch.run`, `resume`, `read_run` and `compare`: the same run folder and tables
as the command line, `Model.patch` equal to the command line's cells, and Ctrl-C
leaving a run that `resume` finishes."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

import actpatch
from actpatch import _actpatch
from conftest import EXPERIMENTS, run_cli

# Columns that name the run rather than describe its results.
RUN_COLUMNS = ["run_id"]


def table_without_run(frame: pl.DataFrame) -> pl.DataFrame:
    return frame.drop([c for c in RUN_COLUMNS if c in frame.columns])


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> actpatch.Run:
    out = tmp_path_factory.mktemp("python-runs")
    return actpatch.run(EXPERIMENTS / "tiny.toml", out=out, progress=False)


def test_run_writes_the_command_lines_folder(tiny_run, cli, tmp_path):
    assert tiny_run.complete
    assert tiny_run.report_html.is_file()
    assert tiny_run.manifest["experiment"] == "tiny"
    done = run_cli(cli, "run", str(EXPERIMENTS / "tiny.toml"), "--out", str(tmp_path), "--quiet")
    assert done.returncode == 0, done.stderr
    cli_run = actpatch.read_run(done.stdout.strip())
    names = lambda run: sorted(p.name for p in run.path.iterdir())  # noqa: E731
    assert names(tiny_run) == names(cli_run)
    for table in ["cells", "baselines"]:
        ours, theirs = tiny_run.table(table), cli_run.table(table)
        assert ours is not None and theirs is not None, table
        assert table_without_run(ours).equals(table_without_run(theirs)), table
    assert tiny_run.edges is None  # no [circuit] section
    assert tiny_run.cells.to_pandas().shape == tiny_run.cells.shape


def test_patch_equals_the_command_lines_cells(tiny_run, gpt2):
    cells = tiny_run.cells.filter(
        (pl.col("pair") == "landmarks")
        & (pl.col("kind") == "resid_pre")
        & (pl.col("direction") == "denoising")
        & (pl.col("method") == "exact")
    )
    grid = gpt2.patch(
        "The Colosseum is in",
        "The Eiffel Tower is in",
        (" Rome", " Paris"),
        kind="resid_pre",
        metric="logit_diff",
    )
    assert grid.shape == (2, 8)
    assert cells.height == grid.size
    for row in cells.iter_rows(named=True):
        assert grid[row["layer"], row["position"]] == pytest.approx(
            row["patched_logit_diff"], abs=1e-6
        )


def test_head_grid_equals_the_command_lines_cells(tiny_run, gpt2):
    cells = tiny_run.cells.filter(
        (pl.col("pair") == "capital")
        & (pl.col("kind") == "head_out_by_pos")
        & (pl.col("direction") == "denoising")
    )
    grid = gpt2.patch(
        "The capital of France is",
        "The capital of Poland is",
        (" Paris", " Warsaw"),
        kind="head_out_by_pos",
        metric="normalized_logit_diff",
    )
    assert grid.shape == (2, 6, 4)  # [layer, pos, head], as TransformerLens
    for row in cells.iter_rows(named=True):
        assert grid[row["layer"], row["position"], row["head"]] == pytest.approx(
            row["normalized_logit_diff"], abs=1e-6
        )


def test_compare_a_run_with_itself(tiny_run, tmp_path):
    comparison = actpatch.compare(tiny_run, tiny_run.path, out=tmp_path / "cmp", figures=False)
    assert comparison.matched == tiny_run.cells.height
    assert comparison.max_abs == 0.0
    assert comparison.table.height == tiny_run.cells.height
    assert "matched" in comparison.markdown


def many_pairs_experiment(path: Path, n_pairs: int) -> Path:
    """The two golden pairs of the tiny fixture repeated: a run of a few seconds."""
    pairs = [
        ("The Colosseum is in", "The Eiffel Tower is in", " Rome", " Paris"),
        ("The capital of France is", "The capital of Poland is", " Paris", " Warsaw"),
    ]
    model = (EXPERIMENTS.parent / "tiny-gpt2").as_posix()
    lines = [
        '[experiment]\nname = "many"\n',
        f'[model]\npath = "{model}"\n',
        '[sweep]\nkinds = ["resid_pre", "attn_out", "head_out_by_pos", "head_pattern"]\n',
        "[validate]\nenabled = false\n",
        "[output]\nformats = []\n",
    ]
    for i in range(n_pairs):
        clean, corrupted, correct, incorrect = pairs[i % 2]
        lines.append(
            f'[[pairs]]\nname = "p{i}"\nconcept = "c{i % 2}"\nclean = "{clean}"\n'
            f'corrupted = "{corrupted}"\ncorrect = "{correct}"\nincorrect = "{incorrect}"\n'
        )
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def test_ctrl_c_stops_a_run_resumably(tmp_path):
    experiment = many_pairs_experiment(tmp_path / "many.toml", 300)
    out = tmp_path / "runs"
    sent = {}

    def interrupt_once_sweeping(done: int, total: int) -> None:
        # SIGINT as Ctrl-C sends it, once the sweep is under way (whatever the speed of
        # the machine): the interpreter's handler raises KeyboardInterrupt at its next
        # check, and the run must stop within a second.
        if done > 0 and "at" not in sent:
            sent["at"] = time.monotonic()
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        _actpatch.run(str(experiment), out=str(out), progress=interrupt_once_sweeping)
    stopped_after = time.monotonic() - sent["at"]
    assert stopped_after < 1.0, f"the run took {stopped_after:.2f} s to stop"
    (run_dir,) = list(out.iterdir())
    interrupted = actpatch.read_run(run_dir)
    assert not interrupted.complete
    assert interrupted.cells is None

    finished = actpatch.resume(run_dir, progress=False)
    assert finished.complete
    cells = finished.cells
    assert cells.select(pl.col("pair").n_unique()).item() == 300
    # Every copy of a pair has the same cells, whether swept before or after the stop.
    per_pair = cells.filter(pl.col("pair").is_in(["p0", "p298"])).sort(
        ["pair", "direction", "kind", "layer", "head", "position"]
    )
    first, last = per_pair.partition_by("pair", maintain_order=True)
    assert np.allclose(
        first["normalized_logit_diff"].to_numpy(),
        last["normalized_logit_diff"].to_numpy(),
        atol=1e-6,
    )


def test_progress_callback_sees_the_sweep(tmp_path, capsys):
    experiment = many_pairs_experiment(tmp_path / "some.toml", 40)
    run = actpatch.run(experiment, out=tmp_path / "runs", progress=True)
    assert run.complete
    err = capsys.readouterr().err
    assert "cells" in err
