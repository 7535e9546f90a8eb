"""Runs as Python objects: the folders the engine writes, read with polars."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Optional, Union

import polars as pl

from actpatch import _actpatch, _progress
from actpatch._actpatch import BadInput

PathLike = Union[str, "os.PathLike[str]"]


class Run:
    """A run folder: its tables as polars DataFrames, its manifest and report.

    Tables a run did not write (``concepts`` without concepts, ``edges`` without a
    ``[circuit]`` section, …) are ``None``. Call ``.to_pandas()`` on any table for
    pandas (needs pandas and pyarrow).
    """

    def __init__(self, path: PathLike) -> None:
        self.path = Path(path)
        if not (self.path / "manifest.json").is_file():
            raise BadInput(
                f"{self.path} is not a run folder (it has no manifest.json): give the "
                "folder `actpatch run` printed, e.g. results/landmarks/<run id>"
            )

    def __repr__(self) -> str:
        manifest = self.manifest
        return (
            f"Run({manifest.get('experiment')!r}, {manifest.get('status')}, "
            f"path={str(self.path)!r})"
        )

    @property
    def manifest(self) -> dict[str, Any]:
        """``manifest.json`` as a dict: model, files, options, timings, status."""
        with open(self.path / "manifest.json", encoding="utf-8") as f:
            return json.load(f)

    @property
    def complete(self) -> bool:
        """Whether the run finished (an interrupted run is finished by ``resume``)."""
        return self.manifest.get("status") == "complete"

    @property
    def report_html(self) -> Path:
        """The interactive report page."""
        return self.path / "report.html"

    @property
    def report_md(self) -> Path:
        """The markdown report."""
        return self.path / "report.md"

    def table(self, name: str) -> Optional[pl.DataFrame]:
        """The table ``<name>.parquet`` of the run, or ``None`` where it has none."""
        path = self.path / f"{name}.parquet"
        return pl.read_parquet(path) if path.is_file() else None

    @property
    def cells(self) -> Optional[pl.DataFrame]:
        """One row per (pair, direction, kind, method, layer, head, position)."""
        return self.table("cells")

    @property
    def baselines(self) -> Optional[pl.DataFrame]:
        """One row per pair: tokens, logit differences, validation outcome."""
        return self.table("baselines")

    @property
    def concepts(self) -> Optional[pl.DataFrame]:
        """Per concept and cell: mean effect with bootstrap intervals."""
        return self.table("concepts")

    @property
    def attribution(self) -> Optional[pl.DataFrame]:
        """Each approximate method against exact patching."""
        return self.table("attribution")

    @property
    def edges(self) -> Optional[pl.DataFrame]:
        """Edge scores of a ``[circuit]`` run, per method (and pair)."""
        return self.table("edges")

    @property
    def circuits(self) -> Optional[pl.DataFrame]:
        """Faithfulness curves of a ``[circuit]`` run, with CPR/CMD."""
        return self.table("circuits")


class Comparison:
    """The outputs of ``compare``: ``table`` (``compare.parquet``), ``markdown`` and
    the summary numbers (``matched``, ``max_abs``, ``mean_abs``, ``exceeding``)."""

    def __init__(self, summary: dict[str, Any]) -> None:
        self.path = Path(summary["out_dir"])
        self.matched: int = summary["matched"]
        self.only_a: int = summary["only_a"]
        self.only_b: int = summary["only_b"]
        self.max_abs: float = summary["max_abs"]
        self.mean_abs: float = summary["mean_abs"]
        self.exceeding: Optional[int] = summary["exceeding"]

    def __repr__(self) -> str:
        return (
            f"Comparison(matched={self.matched}, max_abs={self.max_abs:.3e}, "
            f"path={str(self.path)!r})"
        )

    @property
    def table(self) -> pl.DataFrame:
        """Every cell of either run with A, B and B − A."""
        return pl.read_parquet(self.path / "compare.parquet")

    @property
    def markdown(self) -> str:
        """``compare.md``."""
        return (self.path / "compare.md").read_text(encoding="utf-8")


def _watched(call, desc: str, progress: bool, *args, **kwargs):
    bar = _progress.bar(desc) if progress else None
    try:
        return call(*args, progress=bar.update if bar else None, **kwargs)
    finally:
        if bar is not None:
            bar.close()


def run(
    experiment: PathLike,
    out: Optional[PathLike] = None,
    *,
    progress: bool = True,
    no_validate: bool = False,
    model_path: Optional[PathLike] = None,
    device: Optional[str] = None,
    max_batch_mib: int = 1024,
    run_id: Optional[str] = None,
    naive: bool = False,
) -> Run:
    """Runs an experiment file as ``actpatch run`` does and returns the :class:`Run`.

    The same folder (``out``/<run id>, default the file's ``[output] dir``), tables,
    figures and report as the command line. The overrides are the command line's
    flags: ``no_validate`` (sweep pairs that fail validation), ``model_path`` (a local
    folder or .gguf instead of ``[model]``), ``device`` (``cpu``, ``cuda:0``),
    ``max_batch_mib``, ``run_id``, ``naive`` (no fast path). ``progress=False``
    silences the bar. Ctrl-C stops the sweep (KeyboardInterrupt) and leaves the folder
    for :func:`resume`.
    """
    path = _watched(
        _actpatch.run,
        "actpatch run",
        progress,
        os.fspath(experiment),
        out=None if out is None else os.fspath(out),
        no_validate=no_validate,
        model_path=None if model_path is None else os.fspath(model_path),
        device=device,
        max_batch_mib=max_batch_mib,
        run_id=run_id,
        naive=naive,
    )
    return Run(path)


def resume(run_dir: PathLike, *, progress: bool = True) -> Run:
    """Finishes an interrupted run folder (``actpatch run --resume``)."""
    path = _watched(_actpatch.resume, "actpatch resume", progress, os.fspath(run_dir))
    return Run(path)


def read_run(path: PathLike) -> Run:
    """A finished (or merged) run folder as a :class:`Run`."""
    return Run(path)


def compare(
    a: Union[PathLike, Run],
    b: Union[PathLike, Run],
    out: Optional[PathLike] = None,
    *,
    by_depth: bool = False,
    fail_above: Optional[float] = None,
    figures: bool = True,
) -> Comparison:
    """Compares run ``a`` with run ``b`` (folders, ``cells.parquet`` files or
    :class:`Run`) as ``actpatch compare``; ``by_depth`` matches layers on relative
    depth (runs of two models), ``fail_above`` counts cells whose |B − A| exceeds it
    (``Comparison.exceeding``)."""
    a_path = a.path if isinstance(a, Run) else a
    b_path = b.path if isinstance(b, Run) else b
    summary = _actpatch.compare_runs(
        os.fspath(a_path),
        os.fspath(b_path),
        out=None if out is None else os.fspath(out),
        by_depth=by_depth,
        fail_above=fail_above,
        figures=figures,
    )
    return Comparison(summary)
