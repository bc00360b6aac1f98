"""Refresh the expected output of the notebook cells marked ``# NBVAL_CHECK_OUTPUT``.

Runs each notebook as ``notebooks/test_notebooks.py`` does (on the tiny test model, in
the environment of ``notebooks/conftest.py``) and stores the standard output of every
marked cell in the cell's metadata under ``mmkd_expected_output``. The notebooks stay
free of outputs. Review the diff before committing: a marked cell's output must not
depend on the weights.

Usage (from the repository root)::

    python tools/update_expected_outputs.py [notebook.ipynb ...]
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import nbformat

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def load(name: str):
    """``notebooks/<name>.py`` as a module, loaded from its file (no sys.path edit)."""
    spec = importlib.util.spec_from_file_location(
        f"mmkd_notebooks_{name}", NOTEBOOKS / f"{name}.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    environment, runner = load("conftest"), load("test_notebooks")
    paths = [Path(a).resolve() for a in argv] or runner.NOTEBOOK_PATHS
    with environment.notebook_environment():
        for path in paths:
            notebook = nbformat.read(path, as_version=4)
            count = 0
            for index, cell, stdout in runner.run_notebook(path):
                if runner.is_checked(cell):
                    notebook.cells[index].metadata[runner.EXPECTED_KEY] = stdout
                    count += 1
            nbformat.write(notebook, path)
            print(f"{path.relative_to(NOTEBOOKS.parent)}: {count} checked cells updated")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
