"""Shared fixtures: the tiny upstream checkpoint, an isolated cache, no network."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest
from support import (
    TINY,
    TINY_CHECKPOINT,
    TINY_TEXT,
    LocalServer,
    unimed_bytes,
    write_biomedclip_stand_in,
)

import mmkd_utils.model.registry as registry
from mmkd_utils.config import ENV_VARS

# Tests never reach the Hugging Face hub: everything they need is in tests/fixtures.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# huggingface_hub read HF_HUB_OFFLINE when it was imported (by mmkd_utils, before this file
# ran): without this line a hub request waits for network timeouts instead of failing at once.
huggingface_hub.constants.HF_HUB_OFFLINE = True


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path_factory, monkeypatch):
    """Every test gets its own empty cache and no MMKD_* variables from the caller."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MMKD_HOME", str(tmp_path_factory.mktemp("mmkd_home")))


@pytest.fixture(scope="session")
def fresh_imports() -> dict:
    """Facts about importing mmkd_utils in a fresh interpreter (tests/fresh_imports.py)."""
    script = Path(__file__).with_name("fresh_imports.py")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def reference():
    """The outputs the original MMKD-CLIP code produced for the tiny checkpoint."""
    with np.load(TINY / "reference_outputs.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """The tiny model, loaded once for the session (first load, from the .pth)."""
    from mmkd_utils import load_model

    mp = pytest.MonkeyPatch()
    mp.setenv("MMKD_HOME", str(tmp_path_factory.mktemp("session_home")))
    try:  # only while loading: a leaked MMKD_HOME would reach the notebooks' kernels
        model = load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    finally:
        mp.undo()
    yield model


@pytest.fixture
def server():
    """A local HTTP server (``tests/support.py``) for the download code; stopped after."""
    with LocalServer() as srv:
        yield srv


@pytest.fixture(scope="session")
def three_models(tiny_model, tmp_path_factory):
    """The three registered models on their stand-ins, loaded once."""
    unimed = tmp_path_factory.mktemp("unimed_cmp") / registry.UNIMED_FILE
    unimed.write_bytes(unimed_bytes())
    biomedclip = write_biomedclip_stand_in(tmp_path_factory.mktemp("biomedclip_cmp"))
    mp = pytest.MonkeyPatch()
    mp.setenv("MMKD_HOME", str(tmp_path_factory.mktemp("cmp_home")))
    try:
        tiny_model.model_name = "mmkd-clip-b16"
        return {
            "mmkd-clip-b16": tiny_model,
            "unimed-clip-b16": registry.load_registered(
                "unimed-clip-b16", source=unimed, text_encoder=TINY_TEXT, device="cpu"
            ),
            "biomedclip": registry.load_registered(
                "biomedclip", source=str(biomedclip), text_encoder=TINY_TEXT, device="cpu"
            ),
        }
    finally:
        mp.undo()
