"""Refresh the expected output of the cells marked ``# NBVAL_CHECK_OUTPUT``.

Runs each notebook on the tiny test model (the same environment as the tests, set by
``notebooks/conftest.py``) and stores the standard output of every marked cell in the
cell's metadata under ``mmkd_expected_output``. The notebooks stay free of outputs.
Review the diff before committing: a marked cell's output must not depend on weights.

Usage (from the repository root)::

    python tools/update_expected_outputs.py [notebook.ipynb ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

HERE = Path(__file__).resolve().parent.parent / "notebooks"
sys.path.insert(0, str(HERE))
import conftest  # noqa: E402  (sets the test environment on import)

MARKER = "# NBVAL_CHECK_OUTPUT"


def stdout_of(cell: nbformat.NotebookNode) -> str:
    """The concatenated stdout stream text of an executed cell."""
    return "".join(
        out.get("text", "")
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stdout"
    )


def update(path: Path) -> int:
    """Execute ``path`` and store the marked cells' stdout; return how many were marked."""
    original = nbformat.read(path, as_version=4)
    executed = nbformat.read(path, as_version=4)
    NotebookClient(
        executed,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
    ).execute()
    count = 0
    for cell, run in zip(original.cells, executed.cells, strict=True):
        if cell.cell_type == "code" and cell.source.lstrip().startswith(MARKER):
            cell.metadata[conftest.EXPECTED_KEY] = stdout_of(run)
            count += 1
    nbformat.write(original, path)
    return count


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv] or sorted(HERE.glob("**/*.ipynb"))
    for path in paths:
        print(f"{path}: {update(path)} checked cells updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
