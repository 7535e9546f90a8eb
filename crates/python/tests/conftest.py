"""Shared fixtures of the Python package's tests (`just test-python`).

The tests read the repository's fixtures (tests/fixtures/: the tiny checkpoints and
their TransformerLens goldens) and drive the command line's binary for the runs the
package must reproduce (ACTPATCH_CLI, set by scripts/test-python.sh).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import actpatch

REPO = Path(__file__).resolve().parents[3]
FIXTURES = REPO / "tests" / "fixtures"
EXPERIMENTS = FIXTURES / "experiments"


def golden(fixture: str, name: str = "golden.json") -> dict:
    with open(FIXTURES / fixture / name, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="session")
def cli() -> str:
    """The `actpatch` binary of this checkout."""
    path = os.environ.get("ACTPATCH_CLI", str(REPO / "target" / "debug" / "actpatch"))
    if not Path(path).is_file():
        pytest.fail(f"no actpatch binary at {path}: run `cargo build -p actpatch-runner`")
    return path


def run_cli(cli: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([cli, *args], capture_output=True, text=True, check=False)


@pytest.fixture(scope="session")
def gpt2() -> actpatch.Model:
    return actpatch.load_model(str(FIXTURES / "tiny-gpt2"))


@pytest.fixture(scope="session")
def llama() -> actpatch.Model:
    return actpatch.load_model(str(FIXTURES / "tiny-llama"))


@pytest.fixture(scope="session")
def models(gpt2, llama) -> dict[str, actpatch.Model]:
    return {"tiny-gpt2": gpt2, "tiny-llama": llama}
