"""Every notebook runs top to bottom in a fresh kernel; its checked cells print what they should.

Each notebook is executed cell by cell in a new Jupyter kernel started in the notebook's
folder (``jupyter_client``; the environment comes from ``conftest.py``). A cell that
raises fails the test. A cell marked ``# NBVAL_CHECK_OUTPUT`` (or tagged
``nbval-check-output``) must print exactly the text stored in its metadata under
``mmkd_expected_output``: only weight-independent output (file names, counts, labels) is
checked. The notebooks are committed without outputs; after a deliberate change,
``python tools/update_expected_outputs.py`` refreshes that metadata.

The selected notebooks run two at a time (``MMKD_NOTEBOOK_JOBS``, default 2), each test
waiting for its own: much of a notebook's time is its kernel starting and importing
torch, single-threaded work that the second core can do beside another notebook's cells.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
from jupyter_client.manager import KernelManager

NOTEBOOKS = Path(__file__).resolve().parent
NOTEBOOK_PATHS = sorted(  # hidden folders such as .ipynb_checkpoints are skipped
    p for p in NOTEBOOKS.rglob("*.ipynb") if not any(part.startswith(".") for part in p.parts)
)
EXPECTED_KEY = "mmkd_expected_output"
CELL_TIMEOUT = 600  # seconds
JOBS = int(os.environ.get("MMKD_NOTEBOOK_JOBS", "2"))
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def is_checked(cell: nbformat.NotebookNode) -> bool:
    """Whether the cell's output is checked (the marker and tag that nbval uses too)."""
    tags = cell.get("metadata", {}).get("tags", [])
    return "# NBVAL_CHECK_OUTPUT" in cell.source or "nbval-check-output" in tags


class ThisPython(KernelSpecManager):
    """The kernel runs this interpreter, whatever kernels other environments installed."""

    def get_kernel_spec(self, kernel_name: str) -> KernelSpec:
        argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        return KernelSpec(argv=argv, display_name="Python (tests)", language="python")


def run_notebook(path: Path) -> list[tuple[int, nbformat.NotebookNode, str]]:
    """Run the code cells of ``path`` in a fresh kernel: (index, cell, standard output) each.

    Stops with a test failure (the cell, its source and its traceback) at the first
    cell that raises.
    """
    notebook = nbformat.read(path, as_version=4)
    manager = KernelManager(kernel_name="python3", kernel_spec_manager=ThisPython())
    manager.start_kernel(cwd=str(path.parent))
    client = manager.client()
    client.start_channels()
    results = []
    try:
        client.wait_for_ready(timeout=60)
        for index, cell in enumerate(notebook.cells):
            if cell.cell_type != "code":
                continue
            stdout: list[str] = []
            error: list[str] = []

            def collect(msg: dict, stdout=stdout, error=error) -> None:
                content = msg["content"]
                if msg["msg_type"] == "stream" and content["name"] == "stdout":
                    stdout.append(content["text"])
                elif msg["msg_type"] == "error":
                    error.append("\n".join(content["traceback"]))

            reply = client.execute_interactive(
                cell.source, timeout=CELL_TIMEOUT, output_hook=collect, allow_stdin=False
            )
            if reply["content"]["status"] != "ok":
                trace = _ANSI.sub("", "\n".join(error))
                pytest.fail(f"{path.name} cell {index} raised:\n{cell.source}\n\n{trace}")
            results.append((index, cell, "".join(stdout)))
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return results


@pytest.fixture(scope="session")
def notebook_runs(request: pytest.FixtureRequest) -> Iterator[dict[Path, Future]]:
    """Every selected notebook, started in test order on ``JOBS`` threads: path -> its run."""
    test = test_notebook_runs_and_prints_the_expected_output.__name__
    items = [i for i in request.session.items if getattr(i, "originalname", "") == test]
    pool = ThreadPoolExecutor(max_workers=max(1, JOBS), thread_name_prefix="notebook")
    try:
        yield {
            i.callspec.params["path"]: pool.submit(run_notebook, i.callspec.params["path"])
            for i in items
        }
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # a stopped session runs no more


@pytest.mark.parametrize(
    "path", NOTEBOOK_PATHS, ids=[p.relative_to(NOTEBOOKS).as_posix() for p in NOTEBOOK_PATHS]
)
def test_notebook_runs_and_prints_the_expected_output(path: Path, notebook_runs) -> None:
    for index, cell, stdout in notebook_runs[path].result():
        if is_checked(cell):
            expected = cell.metadata.get(EXPECTED_KEY)
            assert stdout == expected, f"{path.name} cell {index}:\n{cell.source}"
