"""The notebooks' "Time and hardware" bullet and the README's time column agree with the
estimate of ``tools/notebook_times.py`` (recorded running times, no kernel runs)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from support import load_file

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def times():
    return load_file(REPO / "tools" / "notebook_times.py", "mmkd_notebook_times")


def test_every_main_notebook_has_recorded_running_times(times):
    names = {path.stem for path in times.main_notebooks()}
    assert len(names) == 10  # 01-10
    assert names <= set(times.recorded()["notebooks"])


def test_notebooks_and_readme_state_the_estimated_times(times):
    problems = times.disagreements()
    assert not problems, "run `python tools/notebook_times.py --write`:\n" + "\n".join(problems)


def test_a_notebook_that_grows_no_longer_agrees_until_rewritten(times, tmp_path):
    path = tmp_path / "03_zero_shot_by_modality.ipynb"
    shutil.copy(REPO / "notebooks" / path.name, path)
    readme = tmp_path / "README.md"
    shutil.copy(REPO / "README.md", readme)
    before = times.estimate(path).total
    notebook = nbformat.read(path, as_version=4)
    notebook.cells.insert(8, nbformat.v4.new_markdown_cell("More careful prose to read. " * 1000))
    nbformat.write(notebook, path)

    assert times.estimate(path).total[0] > before[0]
    no_guide = tmp_path / "INSTRUCTORS.md"
    assert len(times.disagreements([path], readme, no_guide)) == 2  # the bullet and the README row

    hardware = times.time_cell(nbformat.read(path, as_version=4)).source.split("- A **CPU")[1]
    times.write([path], readme, no_guide)
    assert times.disagreements([path], readme, no_guide) == []
    cell = times.time_cell(nbformat.read(path, as_version=4)).source
    assert cell.split("- A **CPU")[1] == hardware  # the other bullets are kept
    assert cell.count("- About **") == 1


def test_the_model_adds_its_parts(times):
    counts = times.Counts(words=1500, code_lines=90, code_cells=20)
    estimate = times.Estimate("x", counts, (20.0, 35.0), 2.0, (10, 15), "")
    assert estimate.total == (30, 50)  # 32 -> 30, 52 -> 50
    assert times.rounded_range(12.4, 12.6) == (10, 15)  # a range never collapses
