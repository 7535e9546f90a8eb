"""Type stubs of the extension module (the Rust side of the package)."""

from os import PathLike
from typing import Any, Callable, Optional

import numpy as np
import numpy.typing as npt

__version__: str

class Error(Exception):
    """Every error actpatch raises."""

class BadInput(Error):
    """An input that cannot be used: experiment file, prompt, answer, hook name, run folder."""

class ModelError(Error):
    """A model that cannot be loaded or run."""

class RunError(Error):
    """A run that could not finish; what it finished is kept for actpatch.resume."""

class InternalError(Error):
    """A bug in actpatch (a Rust panic): please report it with the message."""

class Model:
    """A language model with TransformerLens's hook points (see ``load_model``)."""

    @property
    def cfg(self) -> dict[str, Any]:
        """n_layers, d_model, n_heads, n_kv_heads, d_head, d_mlp, n_ctx, d_vocab, architecture."""
    @property
    def hook_names(self) -> list[str]:
        """Every hook name of the model, in forward order."""
    def to_tokens(self, text: str, prepend_bos: bool = True) -> npt.NDArray[np.int64]:
        """Token ids ``[1, pos]``, BOS prepended."""
    def to_str_tokens(self, text: str, prepend_bos: bool = True) -> list[str]:
        """The tokens of ``text`` as strings."""
    def to_single_token(self, text: str) -> int:
        """The id of a one-token string such as ``" Paris"``."""
    def run_with_cache(
        self,
        prompt: str,
        names: Optional[list[str]] = None,
        prepend_bos: bool = True,
    ) -> tuple[npt.NDArray[np.float32], dict[str, npt.NDArray[np.float32]]]:
        """``(logits [1, pos, d_vocab], {hook name: activation with batch axis 1})``."""
    def baselines(
        self, clean: str, corrupted: str, answers: tuple[str, str]
    ) -> dict[str, float]:
        """``clean_logit_diff`` and ``corrupted_logit_diff`` of the pair."""
    def patch(
        self,
        clean: str,
        corrupted: str,
        answers: tuple[str, str],
        kind: str = "resid_pre",
        metric: str = "logit_diff",
        direction: str = "denoising",
        positions: Optional[list[int]] = None,
        align: str = "strict",
        max_batch_mib: int = 1024,
    ) -> npt.NDArray[np.float32]:
        """One pair's grid of ``metric`` over every cell of ``kind``."""

def load_model(
    path_or_id: str, device: str = "cpu", revision: Optional[str] = None
) -> Model:
    """A local folder, a .gguf file or a hub id."""

def run(
    experiment: str | PathLike[str],
    out: Optional[str] = None,
    progress: Optional[Callable[[int, int], Any]] = None,
    no_validate: bool = False,
    model_path: Optional[str] = None,
    device: Optional[str] = None,
    max_batch_mib: int = 1024,
    run_id: Optional[str] = None,
    naive: bool = False,
) -> str: ...
def resume(
    run_dir: str | PathLike[str], progress: Optional[Callable[[int, int], Any]] = None
) -> str: ...
def compare_runs(
    a: str,
    b: str,
    out: Optional[str] = None,
    by_depth: bool = False,
    fail_above: Optional[float] = None,
    figures: bool = True,
) -> dict[str, Any]: ...
