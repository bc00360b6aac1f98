"""Write the repository's address into the notebooks' Colab badges and setup cells, and the README.

The address is set in one place, ``[project.urls] Repository`` in ``pyproject.toml``. What
each notebook's Colab setup cell installs is the table ``[tool.mmkd-notebooks.colab]`` there:
the extras of mmkd-utils the notebook needs, and ``clone = true`` when it reads the sample
images in ``imgs/`` (then the cell clones the repository and installs the package from the
clone). A notebook and its solutions share the entry of their number. This tool rewrites:

* in the first cell of every notebook, the "Open in Colab" badge (added after the title if
  missing), pointing to the notebook's own path on the branch ``main``;
* the Colab setup cell (the code cell that mentions ``google.colab``; added before the first
  code cell if missing);
* the Colab badges of ``README.md``.

``tests/test_notebooks_structure.py`` checks the notebooks and the README against the same
two settings.

Usage (from the repository root)::

    python tools/set_repository.py                 # every notebook and the README
    python tools/set_repository.py notebooks/01_quickstart.ipynb README.md   # only these
    python tools/set_repository.py --check         # write nothing; exit 1 if out of date
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO_ROOT = Path(__file__).resolve().parent.parent
BRANCH = "main"
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
#: An "Open in Colab" badge (any repository, branch and path).
BADGE_RE = re.compile(
    r"\[!\[Open In Colab\]\(https://colab\.research\.google\.com/assets/colab-badge\.svg\)\]"
    r"\(https://colab\.research\.google\.com/github/[^)\s]+\)"
)
#: The repository part of a Colab link to a notebook of this project (as in the README).
COLAB_LINK_RE = re.compile(
    r"(https://colab\.research\.google\.com/github/)[^/\s)]+/[^/\s)]+(/blob/[^/\s)]+/notebooks/)"
)
GITHUB_URL_RE = re.compile(r"^https://github\.com/(?P<repo>[\w.-]+/[\w.-]+?)(?:\.git)?/?$")


def read_settings(root: Path = REPO_ROOT) -> tuple[str, dict[str, dict]]:
    """``("owner/name", {notebook number: {"extras": [...], "clone": bool}})`` from pyproject."""
    with open(root / "pyproject.toml", "rb") as file:
        pyproject = tomllib.load(file)
    url = pyproject["project"]["urls"]["Repository"]
    match = GITHUB_URL_RE.match(url)
    if not match:
        raise SystemExit(
            f"pyproject.toml: [project.urls] Repository = {url!r} is not a GitHub repository "
            "address (https://github.com/OWNER/NAME), which Colab needs to open notebooks."
        )
    return match.group("repo"), pyproject["tool"]["mmkd-notebooks"]["colab"]


def notebook_number(path: Path) -> str:
    """The two digits a notebook's (or its solutions') file name starts with."""
    return path.name[:2]


def badge(repo: str, rel_path: str) -> str:
    """The "Open in Colab" badge of the notebook at ``rel_path`` (from the repository root)."""
    target = f"https://colab.research.google.com/github/{repo}/blob/{BRANCH}/{rel_path}"
    return f"[![Open In Colab]({BADGE_IMAGE})]({target})"


def setup_cell(repo: str, extras: list[str], clone: bool) -> str:
    """The source of the Colab setup cell: install mmkd-utils (with ``extras``) on Colab only."""
    name = repo.split("/")[1]
    wanted = f"[{','.join(extras)}]" if extras else ""
    if not clone:
        return (
            "# On Google Colab only: install the helper package "
            "(locally it is already installed).\n"
            "import sys\n\n"
            'if "google.colab" in sys.modules:\n'
            f'    %pip install -q "mmkd-utils{wanted} @ git+https://github.com/{repo}"'
        )
    package = f'"./{name}{wanted}"' if extras else f"./{name}"
    return (
        "# On Google Colab only: get the repository (this notebook uses its sample images in\n"
        "# imgs/) and install the helper package from it. "
        "Locally everything is already installed.\n"
        "import sys\n\n"
        'if "google.colab" in sys.modules:\n'
        f"    !git clone -q --depth 1 https://github.com/{repo}\n"
        f"    %pip install -q {package}\n"
        f'    sys.path.insert(0, "{name}")  # import mmkd_utils from the clone, next to imgs/'
    )


def update_notebook(
    path: Path, repo: str, table: dict[str, dict], root: Path = REPO_ROOT
) -> nbformat.NotebookNode | None:
    """The notebook with its badge and setup cell rewritten, or None if they are up to date."""
    rel_path = path.resolve().relative_to(root.resolve()).as_posix()
    entry = table.get(notebook_number(path))
    if entry is None:
        raise SystemExit(
            f"{rel_path}: pyproject.toml [tool.mmkd-notebooks.colab] has no entry "
            f'"{notebook_number(path)}"; add one (extras and clone).'
        )
    notebook = nbformat.read(path, as_version=4)
    before = nbformat.writes(notebook)
    first = notebook.cells[0]
    if BADGE_RE.search(first.source):
        first.source = BADGE_RE.sub(lambda _: badge(repo, rel_path), first.source, count=1)
    else:
        title, _, rest = first.source.partition("\n")
        first.source = f"{title}\n\n{badge(repo, rel_path)}\n{rest}".rstrip("\n")
    source = setup_cell(repo, list(entry["extras"]), bool(entry["clone"]))
    setup = [c for c in notebook.cells if c.cell_type == "code" and "google.colab" in c.source]
    if setup:
        setup[0].source = source
    else:
        code = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"]
        notebook.cells.insert(code[0] if code else len(notebook.cells), new_code_cell(source))
    return None if nbformat.writes(notebook) == before else notebook


def update_readme(path: Path, repo: str) -> str | None:
    """The README's text with its Colab links pointing to ``repo``, or None if they already do."""
    text = path.read_text(encoding="utf-8")
    new = COLAB_LINK_RE.sub(lambda m: f"{m.group(1)}{repo}{m.group(2)}", text)
    return None if new == text else new


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks and/or README.md")
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    repo, table = read_settings()
    found = sorted((REPO_ROOT / "notebooks").rglob("*.ipynb"))
    every = [p for p in found if ".ipynb_checkpoints" not in p.parts]
    paths = [p.resolve() for p in args.paths] or [*every, REPO_ROOT / "README.md"]
    stale = []
    for path in paths:
        if path.suffix == ".md":
            new = update_readme(path, repo)
            if new is not None and not args.check:
                path.write_text(new, encoding="utf-8")
        else:
            new = update_notebook(path, repo, table)
            if new is not None and not args.check:
                nbformat.write(new, path)
        if new is not None:
            stale.append(path.relative_to(REPO_ROOT).as_posix())
    verb = "out of date" if args.check else "updated"
    for name in stale:
        print(f"{name}: {verb}")
    print(f"{len(stale)} of {len(paths)} files {verb} (repository {repo}).")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
