"""Repository hygiene: lint, no machine paths, no large files, no published demo images."""

from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from mmkd_utils.demo import DEMO_SHA256

ROOT = Path(__file__).resolve().parents[1]
TEXT_SUFFIXES = {".py", ".ipynb", ".md", ".yml", ".yaml", ".toml", ".cfg", ".txt", ""}


def _tracked_files() -> list[Path]:
    """Files git tracks (or, outside a git checkout, every file but caches)."""
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split("\n")
        return [ROOT / f for f in out if f and (ROOT / f).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv-ci", "__pycache__", ".pytest_cache", ".hypothesis"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.parts)]


def test_ruff_is_clean():
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.skip("ruff is not installed (it comes with the dev extra)")
    out = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_no_absolute_machine_paths():
    pattern = re.compile(r"[\"' (](/root|/home/[a-z]+|/tmp|/work)/")
    offenders = []
    for path in _tracked_files():
        if path.suffix not in TEXT_SUFFIXES or path.name == "test_hygiene.py":
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        offenders += [f"{path.relative_to(ROOT)}: {m.group(0)}" for m in pattern.finditer(text)]
    assert not offenders, offenders


def test_no_large_files():
    big = [
        f"{p.relative_to(ROOT)} ({p.stat().st_size} bytes)"
        for p in _tracked_files()
        if p.stat().st_size > 5_000_000
    ]
    assert not big, big


def test_published_demo_images_are_not_in_the_repository():
    published = set(DEMO_SHA256.values())
    found = [
        str(p.relative_to(ROOT))
        for p in _tracked_files()
        if p.suffix.lower() in {".png", ".jpg", ".jpeg"}
        and hashlib.sha256(p.read_bytes()).hexdigest() in published
    ]
    assert not found, f"download these at run time instead of committing them: {found}"
