"""Names the docstring examples of ``mmkd_utils`` can use (``python -m pytest`` runs them).

Every example runs for real, on the tiny test model in ``tests/fixtures/tiny_upstream``
(random weights: shapes and types are meaningful, the numbers are not). Each example
gets, with nothing to import:

* ``clip``: the tiny model, loaded once (an :class:`~mmkd_utils.MMKDModel`);
* ``tiny_checkpoint``, ``tiny_text_encoder``: paths of its checkpoint and tokenizer;
* ``imgs``: the repository's ``imgs/`` folder; ``xray``: its chest X-ray (a path);
* ``tmp``: a new empty folder (a ``Path``) for examples that write files;
* ``medmnist_root``: a folder of synthetic 28-pixel MedMNIST files in the real layout
  (``breastmnist``, ``pathmnist``, ``chestmnist``; ``tests/support.py``).

Only the package's modules are read for examples (not tests/, notebooks/ or tools/).

The test session runs torch on one thread (``OMP_NUM_THREADS=1``, inherited by the
notebook kernels, Ray's workers and every subprocess) unless you set ``OMP_NUM_THREADS``
yourself or run the notebooks on the released weights (``MMKD_NOTEBOOK_REAL=1``): the tiny
model's operations are too small to share, and threads spinning for work made the suite
take nearly twice the CPU time on 2 cores.
While an example runs, ``MMKD_HOME`` is a fresh temporary folder, the other ``MMKD_*``
variables are unset and the Hugging Face hub is offline, for that example only.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch
from _pytest.doctest import DoctestItem, DoctestModule

from mmkd_utils.config import ENV_VARS

REPO = Path(__file__).resolve().parent
TINY = REPO / "tests" / "fixtures" / "tiny_upstream"
_MODEL: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    """One torch thread for the session and its subprocesses, unless you chose a number."""
    real = os.environ.get("MMKD_NOTEBOOK_REAL", "").strip().lower() in {"1", "true", "yes"}
    if "OMP_NUM_THREADS" not in os.environ and not real:  # the released weights: all cores
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


@pytest.hookimpl(wrapper=True)
def pytest_collect_file(file_path, parent):
    """``--doctest-modules`` reads the package's examples only, not the tests' own files."""
    collected = yield
    if file_path.name == "medmnist.py" and not importlib.util.find_spec("medmnist"):
        return []  # the optional extra is not installed: its module cannot be imported
    if file_path.name == "scale.py" and not importlib.util.find_spec("faiss"):
        return []  # the scale extra is not installed: its examples need pyarrow and faiss
    if REPO / "mmkd_utils" in file_path.parents:
        return collected
    return [c for c in collected if not isinstance(c, DoctestModule)]


def _medmnist_root(factory) -> Path:
    """Synthetic MedMNIST files, written once per session (only if medmnist is installed)."""
    if "medmnist" not in _MODEL:
        root = factory.mktemp("medmnist")
        if importlib.util.find_spec("medmnist"):
            name = "mmkd_test_support"
            spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "support.py")
            support = sys.modules[name] = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(support)
            for flag in ("breastmnist", "pathmnist", "chestmnist"):
                support.write_medmnist(root, flag)
        _MODEL["medmnist"] = root
    return _MODEL["medmnist"]


@pytest.fixture(autouse=True)
def _doctest_names(request, doctest_namespace, tmp_path, tmp_path_factory, monkeypatch):
    """For docstring examples only: the names above, an empty cache and no network."""
    if not isinstance(request.node, DoctestItem):
        yield
        return
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MMKD_HOME", str(tmp_path / "mmkd_home"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    if "clip" not in _MODEL:
        from mmkd_utils import load_model

        _MODEL["clip"] = load_model(
            TINY / "checkpoint.pt", text_encoder=TINY / "tiny-biomedbert", device="cpu"
        )
    (tmp_path / "work").mkdir()
    doctest_namespace.update(
        clip=_MODEL["clip"],
        tiny_checkpoint=str(TINY / "checkpoint.pt"),
        tiny_text_encoder=str(TINY / "tiny-biomedbert"),
        imgs=REPO / "imgs",
        xray=str(REPO / "imgs" / "xray_chest_pa.png"),
        tmp=tmp_path / "work",
        medmnist_root=_medmnist_root(tmp_path_factory),
    )
    yield
