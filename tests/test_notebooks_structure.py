"""Every tutorial notebook follows the house layout (checked statically, nothing is run).

Also: the notebooks' test environment (``notebooks/conftest.py``) keeps every variable
the user has set and restores the others; no conftest or tool edits ``sys.path``.

Rules, for every ``notebooks/**/*.ipynb`` (hidden folders such as ``.ipynb_checkpoints``
are skipped):

* saved without outputs or execution counts;
* named ``NN_name.ipynb`` in ``notebooks/``, or ``NN_name_solutions.ipynb`` in
  ``notebooks/solutions/`` for an existing ``notebooks/NN_name.ipynb``;
* the first cell is markdown with a ``# `` title and an "Open in Colab" badge whose link
  points to the notebook's own path in the repository set in ``pyproject.toml``
  (``[project.urls] Repository``), as do the README's badges;
* one Colab setup cell, exactly as ``tools/set_repository.py`` writes it from that address
  and the notebook's entry in ``[tool.mmkd-notebooks.colab]``: the extras it needs (UMAP,
  pydicom-data files) and a clone of the repository when it reads the sample images;
* main notebooks: "Learning goals", "Prerequisites" and "Time and hardware" headings
  before the first code cell; "Summary", "What's next" and "Exercises" headings later;
  a link to their solutions notebook when one exists;
* exactly one code cell made only of imports, before any other code cell except the
  Colab setup cell (the one that mentions ``google.colab``); no imports and no
  ``%pip`` / ``!pip`` anywhere else;
* at least one cell marked for output checking (``# NBVAL_CHECK_OUTPUT`` or the
  ``nbval-check-output`` tag), with its expected output in the cell metadata;
* no machine-specific absolute paths (``/root/``, ``/home/``, ``/tmp/``, ``/work/``,
  ``/Users/``, ``C:\\Users``) in any cell.
"""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import nbformat
import pydicom
import pytest
from support import load_file

from mmkd_utils.demo import DEMO_IMAGE_NAMES

REPO = Path(__file__).resolve().parent.parent
NOTEBOOKS = REPO / "notebooks"
BADGE_RE = re.compile(
    r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    r"\(https://colab\.research\.google\.com/github/(?P<repo>[^/\s]+/[^/\s]+)/blob/"
    r"(?P<branch>[^/\s]+)/(?P<path>[^)\s]+)\)"
)
MAIN_NAME_RE = re.compile(r"^(\d{2})_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb$")
SOLUTION_NAME_RE = re.compile(r"^(?P<stem>\d{2}_[a-z0-9]+(?:_[a-z0-9]+)*)_solutions\.ipynb$")
OPENING_HEADINGS = ("Learning goals", "Prerequisites", "Time and hardware")
CLOSING_HEADINGS = ("Summary", "What's next", "Exercises")
CHECK_COMMENT = "NBVAL_CHECK_OUTPUT"
CHECK_TAG = "nbval-check-output"
ABSOLUTE_PATH_RE = re.compile(
    r"(?<![\w.~/-])/(?:root|home|tmp|work|Users)/|\b[A-Za-z]:\\\\?Users\\", re.IGNORECASE
)


def _load_tool(name: str):
    """``tools/<name>.py`` as a module, loaded from its file (no sys.path edit)."""
    return load_file(REPO / "tools" / f"{name}.py", f"mmkd_tool_{name}")


SET_REPOSITORY = _load_tool("set_repository")
with open(REPO / "pyproject.toml", "rb") as _file:
    PYPROJECT = SET_REPOSITORY.tomllib.load(_file)
#: "owner/name" of [project.urls] Repository (the one place the address is set), and what
#: each notebook's Colab setup cell installs ([tool.mmkd-notebooks.colab]).
COLAB_REPO, COLAB_TABLE = SET_REPOSITORY.read_settings(REPO)
#: Code that reads the sample images of imgs/ (the Colab cell must clone the repository).
USES_SAMPLES_RE = re.compile(r"\b(?:sample_images|bundled_images|SAMPLES|build_collection)\b|imgs/")
PYDICOM_OWN_FILES = {p.name for p in (Path(pydicom.__file__).parent / "data").rglob("*")}


def _all_notebooks() -> list[Path]:
    found = sorted(NOTEBOOKS.rglob("*.ipynb"))
    return [
        p for p in found if not any(part.startswith(".") for part in p.relative_to(NOTEBOOKS).parts)
    ]


ALL_NOTEBOOKS = _all_notebooks()


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def _is_solution(path: Path) -> bool:
    return path.parent == NOTEBOOKS / "solutions"


def _headings(text: str) -> list[str]:
    """Markdown ATX headings of a cell, without the leading #'s (and trailing #'s)."""
    out = []
    for line in text.splitlines():
        match = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            out.append(match.group(1).strip())
    return out


def _heading_matches(heading: str, wanted: str) -> bool:
    """'Exercises' matches 'Exercises' and '5. Exercises'; case and apostrophe style ignored."""
    norm = lambda s: re.sub(r"^[\d.\s]+", "", s).replace("’", "'").strip().lower()  # noqa: E731
    return norm(heading) == wanted.lower()


def _python_source(source: str) -> str:
    """Cell source as plain Python: IPython magics and shell escapes become ``pass``-like."""
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        lines = [re.sub(r"^(\s*)[%!].*$", r"\1pass", line) for line in source.splitlines()]
        return "\n".join(lines)
    return TransformerManager().transform_cell(source)


def _parse(path: Path, index: int, source: str) -> ast.Module:
    try:
        return ast.parse(_python_source(source))
    except SyntaxError as err:
        pytest.fail(f"{_rel(path)} cell {index}: not valid Python ({err.msg}, line {err.lineno})")


def _is_setup_cell(source: str) -> bool:
    return "google.colab" in source


def _is_imports_cell(tree: ast.Module) -> bool:
    return bool(tree.body) and all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in tree.body)


def _has_import(tree: ast.Module) -> bool:
    return any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree))


def _is_checked(cell: nbformat.NotebookNode) -> bool:
    tags = cell.get("metadata", {}).get("tags", [])
    if isinstance(tags, list) and CHECK_TAG in tags:
        return True
    return any(
        line.strip().lstrip("#").strip() == CHECK_COMMENT
        for line in cell.source.splitlines()
        if line.strip().startswith("#")
    )


notebook_param = pytest.mark.parametrize(
    "path", ALL_NOTEBOOKS, ids=[_rel(p) for p in ALL_NOTEBOOKS]
)
main_param = pytest.mark.parametrize(
    "path",
    [p for p in ALL_NOTEBOOKS if not _is_solution(p)],
    ids=[_rel(p) for p in ALL_NOTEBOOKS if not _is_solution(p)],
)


def test_there_are_notebooks():
    assert ALL_NOTEBOOKS, f"no notebooks found under {_rel(NOTEBOOKS)}/"


@notebook_param
def test_saved_without_outputs(path):
    nb = _read(path)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        assert not cell.get("outputs"), (
            f"{_rel(path)} cell {index}: has saved outputs; clear all outputs before "
            "committing (e.g. `jupyter nbconvert --clear-output --inplace`)."
        )
        assert cell.get("execution_count") is None, (
            f"{_rel(path)} cell {index}: has execution count {cell.execution_count}; clear "
            "all outputs before committing."
        )


@notebook_param
def test_file_name(path):
    rel = path.relative_to(NOTEBOOKS)
    if _is_solution(path):
        match = SOLUTION_NAME_RE.match(path.name)
        assert match, (
            f"{_rel(path)}: solutions notebooks are named NN_name_solutions.ipynb "
            "(two digits, lower-case words joined by _)."
        )
        main = NOTEBOOKS / f"{match.group('stem')}.ipynb"
        assert main.is_file(), f"{_rel(path)}: there is no notebook {_rel(main)} it solves."
    else:
        assert len(rel.parts) == 1, (
            f"{_rel(path)}: notebooks live in notebooks/ (tutorials) or notebooks/solutions/ "
            "(solutions), not in other folders."
        )
        assert MAIN_NAME_RE.match(path.name), (
            f"{_rel(path)}: notebooks are named NN_name.ipynb (two digits, lower-case words "
            "joined by _), e.g. 01_quickstart.ipynb."
        )
        assert not path.stem.endswith("_solutions"), (
            f"{_rel(path)}: solutions notebooks belong in notebooks/solutions/."
        )


@notebook_param
def test_title_and_colab_badge(path):
    nb = _read(path)
    assert nb.cells, f"{_rel(path)}: the notebook is empty."
    first = nb.cells[0]
    assert first.cell_type == "markdown", f"{_rel(path)} cell 0: must be a markdown title cell."
    lines = [line for line in first.source.splitlines() if line.strip()]
    assert lines and lines[0].startswith("# "), (
        f"{_rel(path)} cell 0: must start with a '# ' title line."
    )
    badge = BADGE_RE.search(first.source)
    assert badge, f"{_rel(path)} cell 0: has no 'Open In Colab' badge."
    assert badge.group("repo") == COLAB_REPO, (
        f"{_rel(path)} cell 0: the Colab badge points to repository {badge.group('repo')}, "
        f"expected {COLAB_REPO}."
    )
    assert badge.group("path") == _rel(path), (
        f"{_rel(path)} cell 0: the Colab badge opens {badge.group('path')}, not this "
        f"notebook ({_rel(path)})."
    )
    assert badge.group("branch") == "main", f"{_rel(path)} cell 0: the badge is not on main."


def _needed_extras(code: str) -> set[str]:
    """Extras the code needs: ``umap`` for UMAP maps, ``samples`` for pydicom-data's files."""
    needed = {"umap"} if re.search(r"method\s*=\s*[\"']umap[\"']", code) else set()
    files = re.findall(r"get_testdata_file\(\s*[\"']([^\"']+)[\"']", code)
    return needed | ({"samples"} if set(files) - PYDICOM_OWN_FILES else set())


def test_colab_table_has_one_entry_per_notebook():
    numbers = {p.name[:2] for p in ALL_NOTEBOOKS}
    assert set(COLAB_TABLE) == numbers, (
        "pyproject.toml [tool.mmkd-notebooks.colab] needs exactly one entry per notebook "
        f"number: has {sorted(COLAB_TABLE)}, notebooks {sorted(numbers)}."
    )
    extras = set(PYPROJECT["project"]["optional-dependencies"])
    for number, entry in COLAB_TABLE.items():
        assert set(entry["extras"]) <= extras, f"{number}: unknown extras {entry['extras']}"


@notebook_param
def test_colab_setup_cell_installs_what_the_notebook_needs(path):
    nb = _read(path)
    setup = [c.source for c in nb.cells if c.cell_type == "code" and _is_setup_cell(c.source)]
    assert len(setup) == 1, f"{_rel(path)}: needs exactly one Colab setup cell."
    entry = COLAB_TABLE[path.name[:2]]
    expected = SET_REPOSITORY.setup_cell(COLAB_REPO, entry["extras"], entry["clone"])
    assert setup[0] == expected, (
        f"{_rel(path)}: the Colab setup cell is not the one pyproject.toml asks for; run "
        f"python tools/set_repository.py {_rel(path)}"
    )
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code" and c.source != setup[0])
    assert f"https://github.com/{COLAB_REPO}" in setup[0]
    assert entry["clone"] == bool(USES_SAMPLES_RE.search(code)), (
        f"{_rel(path)}: clone must be true exactly when the notebook reads imgs/ "
        f"(it is {entry['clone']})."
    )
    missing = _needed_extras(code) - set(entry["extras"])
    assert not missing, f"{_rel(path)}: its Colab setup cell must install the extras {missing}."
    for extra in entry["extras"]:
        assert re.search(rf"\[[^\]]*\b{extra}\b[^\]]*\]", setup[0]), (extra, setup[0])


def test_readme_colab_badges_open_this_repository():
    links = re.findall(
        r"https://colab\.research\.google\.com/github/([^/\s)]+/[^/\s)]+)/blob/main/([^)\s]+)",
        (REPO / "README.md").read_text(encoding="utf-8"),
    )
    mains = {_rel(p) for p in ALL_NOTEBOOKS if not _is_solution(p)}
    assert {target for _, target in links} >= mains, "README: a notebook has no Colab badge."
    for repo, target in links:
        assert repo == COLAB_REPO, f"README: a Colab badge opens {repo}, not {COLAB_REPO}."
        assert (REPO / target).is_file(), f"README: a Colab badge opens a missing {target}."


def test_set_repository_rewrites_badge_and_setup_cell(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    copy = folder / "04_embedding_maps.ipynb"
    nb = _read(NOTEBOOKS / copy.name)
    nb.cells[0].source = nb.cells[0].source.replace(COLAB_REPO, "someone/elsewhere")
    nb.cells = [c for c in nb.cells if not _is_setup_cell(c.source)]
    nbformat.write(nb, copy)
    table = {"04": {"extras": ["umap"], "clone": True}}
    fixed = SET_REPOSITORY.update_notebook(copy, "me/course", table, root=tmp_path)
    badge = BADGE_RE.search(fixed.cells[0].source)
    assert (badge.group("repo"), badge.group("path")) == ("me/course", _rel(NOTEBOOKS / copy.name))
    setup = [c for c in fixed.cells if c.cell_type == "code" and _is_setup_cell(c.source)]
    assert setup[0] is next(c for c in fixed.cells if c.cell_type == "code")  # first code cell
    assert "git clone -q --depth 1 https://github.com/me/course\n" in setup[0].source
    assert '%pip install -q "./course[umap]"' in setup[0].source
    nbformat.write(fixed, copy)
    assert SET_REPOSITORY.update_notebook(copy, "me/course", table, root=tmp_path) is None


@main_param
def test_required_headings(path):
    nb = _read(path)
    first_code = next((i for i, c in enumerate(nb.cells) if c.cell_type == "code"), len(nb.cells))
    opening = [
        h for c in nb.cells[:first_code] if c.cell_type == "markdown" for h in _headings(c.source)
    ]
    for wanted in OPENING_HEADINGS:
        assert any(_heading_matches(h, wanted) for h in opening), (
            f"{_rel(path)} cells 0-{first_code - 1}: no '## {wanted}' heading before the "
            "first code cell."
        )
    everywhere = [h for c in nb.cells if c.cell_type == "markdown" for h in _headings(c.source)]
    for wanted in CLOSING_HEADINGS:
        assert any(_heading_matches(h, wanted) for h in everywhere), (
            f"{_rel(path)}: no '## {wanted}' heading in any markdown cell."
        )


@main_param
def test_links_its_solutions(path):
    solutions = NOTEBOOKS / "solutions" / f"{path.stem}_solutions.ipynb"
    if not solutions.is_file():
        pytest.skip(f"{_rel(path)} has no solutions notebook")
    nb = _read(path)
    target = f"solutions/{solutions.name}"
    assert any(c.cell_type == "markdown" and target in c.source for c in nb.cells), (
        f"{_rel(path)}: no markdown cell links its solutions notebook ({target})."
    )


@notebook_param
def test_one_imports_cell(path):
    nb = _read(path)
    imports_cells, setup_cells = [], []
    first_other = None
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tree = _parse(path, index, cell.source)
        if _is_setup_cell(cell.source):
            setup_cells.append(index)
        elif _is_imports_cell(tree):
            imports_cells.append(index)
        else:
            if first_other is None:
                first_other = index
            assert not _has_import(tree), (
                f"{_rel(path)} cell {index}: has an import statement; move every import into "
                "the notebook's single imports cell."
            )
            assert not re.search(r"^\s*[%!]\s*pip\b", cell.source, re.MULTILINE), (
                f"{_rel(path)} cell {index}: installs packages; only the Colab setup cell may."
            )
    assert len(setup_cells) <= 1, (
        f"{_rel(path)} cells {setup_cells}: more than one Colab setup cell."
    )
    assert len(imports_cells) == 1, (
        f"{_rel(path)}: expected exactly one code cell made only of imports, found "
        f"{len(imports_cells)} (cells {imports_cells})."
    )
    assert first_other is None or imports_cells[0] < first_other, (
        f"{_rel(path)} cell {imports_cells[0]}: the imports cell must come before the first "
        f"other code cell (cell {first_other})."
    )


@notebook_param
def test_has_output_checked_cell(path):
    nb = _read(path)
    checked = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and _is_checked(c)]
    assert checked, (
        f"{_rel(path)}: no cell is marked for output checking; add '# {CHECK_COMMENT}' (or the "
        f"tag '{CHECK_TAG}') to a cell whose output does not depend on the weights."
    )


@notebook_param
def test_checked_cells_carry_their_expected_output(path):
    """notebooks/test_notebooks.py compares a marked cell's output with its metadata."""
    nb = _read(path)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or not _is_checked(cell):
            continue
        expected = cell.metadata.get("mmkd_expected_output")
        assert isinstance(expected, str) and expected.strip(), (
            f"{_rel(path)} cell {index}: marked for output checking but has no "
            "'mmkd_expected_output' metadata; run python tools/update_expected_outputs.py"
        )


@notebook_param
def test_no_absolute_paths(path):
    nb = _read(path)
    for index, cell in enumerate(nb.cells):
        match = ABSOLUTE_PATH_RE.search(cell.source)
        assert not match, (
            f"{_rel(path)} cell {index}: contains the machine-specific path "
            f"{match.group(0)!r}...; use paths relative to the notebook, the cache folder "
            "(MMKD_HOME) or the package's helpers."
        )


# --------------------------------------------------------------------------- the harness


def _load_notebooks_conftest():
    return load_file(NOTEBOOKS / "conftest.py", "mmkd_nb_conftest")


def test_notebook_environment_keeps_what_the_user_set_and_restores_the_rest(tmp_path, monkeypatch):
    monkeypatch.delenv("MMKD_NOTEBOOK_REAL", raising=False)
    monkeypatch.setenv("MMKD_HOME", str(tmp_path / "mine"))
    for name in ("MMKD_CHECKPOINT", "MMKD_BIOMEDCLIP", "MMKD_DEMO_IMAGES", "MPLBACKEND"):
        monkeypatch.delenv(name, raising=False)
    conftest = _load_notebooks_conftest()
    assert os.environ["MMKD_HOME"] == str(tmp_path / "mine")  # importing changes nothing
    assert "MMKD_CHECKPOINT" not in os.environ
    with conftest.notebook_environment() as kept:
        assert "MMKD_HOME" in kept
        assert os.environ["MMKD_HOME"] == str(tmp_path / "mine")
        assert Path(os.environ["MMKD_CHECKPOINT"]) == conftest.TINY / "checkpoint.pt"
        biomedclip = Path(os.environ["MMKD_BIOMEDCLIP"])
        assert (biomedclip / "open_clip_config.json").is_file()
        demo = Path(os.environ["MMKD_DEMO_IMAGES"])
        assert set(DEMO_IMAGE_NAMES) <= {p.name for p in demo.iterdir()}  # all nine
        assert os.environ["MPLBACKEND"] == "Agg"
    assert os.environ["MMKD_HOME"] == str(tmp_path / "mine")
    for name in ("MMKD_CHECKPOINT", "MMKD_BIOMEDCLIP", "MMKD_DEMO_IMAGES", "MPLBACKEND"):
        assert name not in os.environ
    assert not biomedclip.exists()  # the session's temporary folders are removed
    if not conftest.SHARED_DEMO_IMAGES.is_dir():
        assert not demo.exists()


def test_no_conftest_or_tool_edits_sys_path():
    files = [*REPO.glob("**/conftest.py"), *REPO.glob("tools/*.py")]
    for path in files:
        if ".venv" in path.parts or ".git" in path.parts:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        uses = [
            node.lineno
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr == "path"
            and isinstance(node.value, ast.Name)
            and node.value.id == "sys"
        ]
        assert not uses, f"{_rel(path)} lines {uses}: uses sys.path"
