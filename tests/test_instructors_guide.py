"""Every relative link of notebooks/INSTRUCTORS.md reaches a file, and every #anchor a heading."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

GUIDE = Path(__file__).resolve().parent.parent / "notebooks" / "INSTRUCTORS.md"
LINK = re.compile(r"\]\(([^)\s]+)\)")
#: Anchors of sections that other changes of issue 15 add: skipped (not failed) until they land.
AWAITED = {"../README.md#running-a-class"}


def anchors(markdown: Path) -> set[str]:
    """GitHub's anchors for the headings of a markdown file (code blocks left out)."""
    text = re.sub(r"```.*?```", "", markdown.read_text(encoding="utf-8"), flags=re.S)
    headings = re.findall(r"^#+ +(.+?) *$", text, flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def relative_links() -> list[str]:
    links = LINK.findall(GUIDE.read_text(encoding="utf-8"))
    return sorted({link for link in links if not re.match(r"[a-z]+:", link)})


def test_the_guide_links_to_every_main_notebook():
    linked = {link for link in relative_links() if link.endswith(".ipynb")}
    assert linked == {p.name for p in GUIDE.parent.glob("[0-9][0-9]_*.ipynb")}


@pytest.mark.parametrize("link", relative_links())
def test_link_resolves(link):
    target, _, anchor = link.partition("#")
    path = (GUIDE.parent / target).resolve() if target else GUIDE
    assert path.exists(), f"{link}: no such file"
    if anchor and anchor not in anchors(path):
        if link in AWAITED:
            pytest.skip(f"{link}: the section is added by another change of issue 15")
        pytest.fail(f"{link}: no heading with this anchor in {path.name}")


def test_anchors_follow_github():
    assert anchors(GUIDE) >= {
        "a-probability-near-10-is-the-model-sure",
        "why-do-t-sne-and-umap-maps-cluster-by-modality",
        "preparing-the-room",
    }
