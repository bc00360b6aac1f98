"""The environment the notebooks run in under pytest: the tiny test model, offline.

``test_notebooks.py`` runs every notebook top to bottom in a fresh Jupyter kernel. The
kernels inherit this process's environment, so ``pytest_configure`` sets the variables
below before any kernel starts — for the test session only (``pytest_unconfigure``
restores them) and only those you have NOT set yourself (yours are kept and named in
the report header):

* ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` = 1: never contact the Hugging Face hub.
* ``MMKD_CHECKPOINT`` / ``MMKD_TEXT_ENCODER``: the tiny checkpoint and tokenizer in
  ``tests/fixtures/tiny_upstream`` (random weights: the notebooks run but do not
  reproduce the published demo, and say so).
* ``MMKD_UNIMED_CHECKPOINT`` / ``MMKD_BIOMEDCLIP`` (notebook 07): tiny stand-ins for
  UniMed-CLIP and BiomedCLIP, from ``tests/support.py`` (random weights too).
* ``MMKD_HOME``: a fresh temporary cache folder, removed at the end. When ``medmnist`` is
  installed it holds synthetic MedMNIST+ files in the real layout (``medmnist/<flag>_224.npz``,
  ``tests/support.py``) for notebook 08's datasets, where its default ``root=None`` looks.
* ``MMKD_DEMO_IMAGES``: the published images in ``<repo>/../shared/reference/demo_images``
  when that folder exists (as in CI); otherwise nine small generated stand-ins under the
  published names (``demo_images()`` then warns that they differ, which is expected).
* ``MPLBACKEND`` = Agg: no display needed.

The kernels also inherit ``OMP_NUM_THREADS=1`` from the root ``conftest.py`` (one torch
thread each: two notebooks run at a time, and two threads each made them fight for the
cores; one exercise took 42 s instead of 1.4 s on a busy machine).

With ``MMKD_NOTEBOOK_REAL=1`` only ``MPLBACKEND`` is set: the notebooks then use the
released weights (downloaded unless ``MMKD_CHECKPOINT`` etc. point to local files).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "fixtures" / "tiny_upstream"
SHARED_DEMO_IMAGES = REPO.parent / "shared" / "reference" / "demo_images"

#: The notebooks are run by test_notebooks.py (a plain pytest test), not collected as files.
collect_ignore_glob = ["*.ipynb"]

#: Notebook 08's datasets and image size, and images per class in (train, val, test) of the
#: synthetic files written for it: enough for every shot of its few-shot curve to run.
MEDMNIST_FLAGS = ("pneumoniamnist", "breastmnist", "dermamnist", "pathmnist", "retinamnist")
MEDMNIST_FLAGS += ("chestmnist",)
MEDMNIST_SIZE, MEDMNIST_COUNTS = 224, (8, 3, 3)

#: Published demo image names, with the PIL mode the stand-in gets (as the originals).
_STAND_INS = {
    "xray.png": "L",
    "fundus.jpeg": "RGB",
    "pathology.jpeg": "RGB",
    "endoscopy.jpg": "RGB",
    "ct.jpg": "L",
    "mri.jpg": "RGB",
    "ultrasound.png": "L",
    "dermatology.jpeg": "RGB",
    "oct.jpg": "RGB",
}


@functools.cache
def load_support():
    """``tests/support.py`` (the registry stand-ins), loaded from its file: no sys.path edit."""
    spec = importlib.util.spec_from_file_location(
        "mmkd_test_support", REPO / "tests" / "support.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _stand_in_images(folder: Path) -> Path:
    """Nine small images under the published names (not the published pixels)."""
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:96, 0:128]
    for i, (name, mode) in enumerate(_STAND_INS.items()):
        ring = ((x - 64) ** 2 + (y - 48) ** 2 < (12 + 3 * i) ** 2) * 120
        gray = ((x * (i + 1) + y * 2 + ring) % 256).astype(np.uint8)
        if mode == "L":
            img = Image.fromarray(gray, mode="L")
        else:
            img = Image.fromarray(np.stack([gray, gray[::-1], np.roll(gray, 20 * i, 1)], -1))
        img.save(folder / name)
    return folder


def _variables(temp: Callable[[str], Path]) -> dict[str, Callable[[], str]]:
    """Each test variable and how to make its value (called only when it is needed)."""
    if os.environ.get("MMKD_NOTEBOOK_REAL", "").strip().lower() in {"1", "true", "yes"}:
        return {"MPLBACKEND": lambda: "Agg"}
    demo = SHARED_DEMO_IMAGES
    return {
        "HF_HUB_OFFLINE": lambda: "1",
        "TRANSFORMERS_OFFLINE": lambda: "1",
        "MMKD_CHECKPOINT": lambda: str(TINY / "checkpoint.pt"),
        "MMKD_TEXT_ENCODER": lambda: str(TINY / "tiny-biomedbert"),
        "MMKD_HOME": lambda: str(_home(temp("home"))),
        "MMKD_UNIMED_CHECKPOINT": lambda: str(_unimed_stand_in(temp("unimed"))),
        "MMKD_BIOMEDCLIP": lambda: str(
            load_support().write_biomedclip_stand_in(
                temp("biomedclip"), text_name=str(TINY / "tiny-biomedbert")
            )
        ),
        "MMKD_DEMO_IMAGES": lambda: str(demo if demo.is_dir() else _stand_in_images(temp("demo"))),
        "MPLBACKEND": lambda: "Agg",
    }


def _home(folder: Path) -> Path:
    """The cache folder, with synthetic MedMNIST+ files for notebook 08 (if medmnist is there)."""
    if importlib.util.find_spec("medmnist"):
        for flag in MEDMNIST_FLAGS:
            load_support().write_medmnist(folder / "medmnist", flag, MEDMNIST_SIZE, MEDMNIST_COUNTS)
    return folder


def _unimed_stand_in(folder: Path) -> Path:
    path = folder / "unimed-clip-vit-b16.pt"
    path.write_bytes(load_support().unimed_bytes())
    return path


@contextlib.contextmanager
def notebook_environment() -> Iterator[list[str]]:
    """Set the test variables you have not set; yield the names of those you had set."""
    patch, folders = pytest.MonkeyPatch(), []

    def temp(name: str) -> Path:
        folders.append(Path(tempfile.mkdtemp(prefix=f"mmkd_nb_{name}_")))
        return folders[-1]

    kept = []
    try:
        for name, make in _variables(temp).items():
            if name in os.environ:
                kept.append(name)
            else:
                patch.setenv(name, make())
        yield kept
    finally:
        patch.undo()
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)


_SESSION = contextlib.ExitStack()
_KEPT: list[str] = []


def pytest_configure(config: pytest.Config) -> None:
    _KEPT[:] = _SESSION.enter_context(notebook_environment())


def pytest_unconfigure(config: pytest.Config) -> None:
    _SESSION.close()


def pytest_report_header(config: pytest.Config) -> list[str]:
    kept = ", ".join(f"{n}={os.environ[n]}" for n in _KEPT if n.startswith("MMKD_"))
    return [f"notebooks: your {kept} (kept)"] if kept else []
