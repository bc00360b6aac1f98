"""Run the tutorial notebooks under pytest (nbval) on the tiny test model, offline.

``python -m pytest notebooks/ --nbval-lax`` executes every notebook top to bottom in a
fresh Jupyter kernel; a cell fails the run only if it raises (``--nbval-lax``), and only
cells marked ``# NBVAL_CHECK_OUTPUT`` would have their output compared.

The kernels inherit this process's environment, so the variables below are set when
pytest imports this file, before any kernel starts. They are always set (the caller's
values are overridden) so that the run is hermetic:

* ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` = 1: never contact the Hugging Face hub.
* ``MMKD_CHECKPOINT`` / ``MMKD_TEXT_ENCODER``: the tiny checkpoint and tokenizer in
  ``tests/fixtures/tiny_upstream`` (random weights: the notebooks run but do not
  reproduce the published demo, and say so).
* ``MMKD_UNIMED_CHECKPOINT`` / ``MMKD_BIOMEDCLIP`` (notebook 07): stand-ins for
  UniMed-CLIP and BiomedCLIP, written at import time into temporary folders: the tiny
  checkpoint with perturbed weights and NumPy scalars beside them (as in the published
  UniMed-CLIP file), and a tiny open_clip model (timm ``test_vit`` + the tiny BERT) in
  BiomedCLIP's folder layout. Random weights, like the tiny checkpoint.
* ``MMKD_HOME``: a fresh temporary cache folder, removed when pytest exits.
* ``MMKD_DEMO_IMAGES``: the published images in ``<repo>/../shared/reference/demo_images``
  when that folder exists (as in CI); otherwise nine small generated stand-ins under the
  published names, in a temporary folder. ``demo_images()`` then warns that they are not
  the published files, which is expected.
* ``MPLBACKEND`` = Agg: no display needed.

Checked cells: notebooks are committed without outputs, and nbval compares only cells
that carry a reference output. A cell marked ``# NBVAL_CHECK_OUTPUT`` therefore keeps
its expected standard output in its metadata (``"mmkd_expected_output"``), which the
hook below hands to nbval as the reference. Only weight-independent output (file names,
counts, labels) is checked. ``python tools/update_expected_outputs.py`` refreshes
that metadata after a deliberate change.

To run the notebooks against the real weights instead, set ``MMKD_NOTEBOOK_REAL=1``:
nothing is overridden then (only ``MPLBACKEND`` defaults to Agg when unset), so the
released weights are downloaded unless ``MMKD_CHECKPOINT`` etc. point to local files.

When ``tests/`` runs in the same session these variables are visible there too;
``tests/conftest.py`` resets the ``MMKD_*`` ones for every test.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY = REPO / "tests" / "fixtures" / "tiny_upstream"
SHARED_DEMO_IMAGES = REPO.parent / "shared" / "reference" / "demo_images"

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


def _real_run_requested() -> bool:
    return os.environ.get("MMKD_NOTEBOOK_REAL", "").strip().lower() in {"1", "true", "yes"}


def _temp_dir(prefix: str) -> Path:
    """A fresh temporary folder, deleted when the pytest process exits."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def _make_stand_in_images(folder: Path) -> None:
    """Write nine small images under the published names (not the published pixels)."""
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


def _support():
    """``tests/support.py``: the stand-ins the unit tests use for the registry's models."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    import support

    return support


def _make_unimed_stand_in(folder: Path) -> Path:
    """The tiny checkpoint, weights perturbed, with NumPy scalars as UniMed-CLIP's file."""
    path = folder / "unimed-clip-vit-b16.pt"
    path.write_bytes(_support().unimed_bytes())
    return path


def _make_biomedclip_stand_in(folder: Path) -> Path:
    """A tiny open_clip model in BiomedCLIP's layout: config, weights, tokenizer files."""
    text = str(TINY / "tiny-biomedbert")
    return _support().write_biomedclip_stand_in(folder, text_name=text)


def _set_test_environment() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["MMKD_CHECKPOINT"] = str(TINY / "checkpoint.pt")
    os.environ["MMKD_TEXT_ENCODER"] = str(TINY / "tiny-biomedbert")
    os.environ["MMKD_HOME"] = str(_temp_dir("mmkd_nb_home_"))
    os.environ["MMKD_UNIMED_CHECKPOINT"] = str(_make_unimed_stand_in(_temp_dir("mmkd_nb_unimed_")))
    os.environ["MMKD_BIOMEDCLIP"] = str(_make_biomedclip_stand_in(_temp_dir("mmkd_nb_bmc_")))
    os.environ["MPLBACKEND"] = "Agg"
    if SHARED_DEMO_IMAGES.is_dir():
        os.environ["MMKD_DEMO_IMAGES"] = str(SHARED_DEMO_IMAGES)
    else:
        # Stand-ins: demo_images() warns that they differ from the published files.
        folder = _temp_dir("mmkd_nb_images_")
        _make_stand_in_images(folder)
        os.environ["MMKD_DEMO_IMAGES"] = str(folder)


#: Cell metadata key holding a checked cell's expected standard output.
EXPECTED_KEY = "mmkd_expected_output"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each ``# NBVAL_CHECK_OUTPUT`` cell its reference output from the metadata."""
    import nbformat

    for item in items:
        cell = getattr(item, "cell", None)
        if cell is None or EXPECTED_KEY not in cell.get("metadata", {}):
            continue
        text = cell.metadata[EXPECTED_KEY]
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        cell.execution_count = 1


if _real_run_requested():
    os.environ.setdefault("MPLBACKEND", "Agg")
else:
    _set_test_environment()
