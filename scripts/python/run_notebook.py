"""Executes a notebook with nbclient (as `just test-python` does in CI) from its own
folder, failing on the first cell that raises; prints each cell's wall time."""

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def main(path: str) -> int:
    notebook_path = Path(path).resolve()
    notebook = nbformat.read(notebook_path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=900,
        kernel_name="python3",
        resources={"metadata": {"path": str(notebook_path.parent)}},
    )
    started = time.monotonic()
    client.execute()
    print(f"{notebook_path.name}: every cell ran in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
