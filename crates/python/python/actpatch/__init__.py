"""actpatch: activation patching and circuit discovery for language models.

The same engine as the ``actpatch`` command line, from Python:

>>> import actpatch
>>> run = actpatch.run("experiments/smollm2/country_capitals.toml")   # doctest: +SKIP
>>> run.cells.filter(run.cells["kind"] == "resid_pre")              # doctest: +SKIP
>>> model = actpatch.load_model("models/SmolLM2-135M-Instruct.Q4_1.gguf")  # doctest: +SKIP
>>> grid = model.patch("The capital of France is", "The capital of Italy is",
...                    answers=(" Paris", " Rome"), kind="resid_pre")     # doctest: +SKIP

- :func:`run` / :func:`resume` / :func:`read_run` give a :class:`Run`: its tables as
  polars DataFrames (``.cells``, ``.baselines``, ``.concepts``, ``.attribution``,
  ``.edges``, ``.circuits``; ``.to_pandas()`` on any of them), ``.manifest``,
  ``.path`` and ``.report_html``.
- :func:`load_model` gives a :class:`Model`: ``to_tokens``, ``run_with_cache`` (numpy
  arrays keyed by TransformerLens hook names) and ``patch`` (one pair's grid, the same
  numbers as the command line's cells).
- :func:`compare` compares two runs as ``actpatch compare``.

Every error is an :class:`Error`: :class:`BadInput`, :class:`ModelError`,
:class:`RunError`, :class:`InternalError`. Ctrl-C stops a run or a sweep and raises
KeyboardInterrupt; an interrupted run's folder is finished by :func:`resume`.
"""

from actpatch._actpatch import (
    BadInput,
    Error,
    InternalError,
    Model,
    ModelError,
    RunError,
    __version__,
    load_model,
)
from actpatch._runs import Comparison, Run, compare, read_run, resume, run

__all__ = [
    "BadInput",
    "Comparison",
    "Error",
    "InternalError",
    "Model",
    "ModelError",
    "Run",
    "RunError",
    "__version__",
    "compare",
    "load_model",
    "read_run",
    "resume",
    "run",
]
