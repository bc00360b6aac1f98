"""Tests of mmkd_utils.demo against a local HTTP server (no network needed)."""

from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path

import pytest
from support import SHARED_DEMO

from mmkd_utils import demo
from mmkd_utils.demo import (
    DEMO_IMAGE_NAMES,
    DEMO_MODALITIES,
    DEMO_PROMPTS,
    DEMO_SHA256,
    demo_image_dir,
    demo_images,
)
from mmkd_utils.errors import DownloadError

#: The published demo images, kept next to the repository (never committed to it).
REFERENCE_IMAGES = SHARED_DEMO
needs_reference = pytest.mark.skipif(
    not (REFERENCE_IMAGES / "SHA256SUMS").is_file(),
    reason=f"reference demo images not found at {REFERENCE_IMAGES}",
)


def _stand_ins(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in DEMO_IMAGE_NAMES:
        (folder / name).write_bytes(b"stand-in for " + name.encode())
    return folder


def test_constants_line_up():
    assert DEMO_IMAGE_NAMES[0] == "xray.png" and DEMO_IMAGE_NAMES[-1] == "oct.jpg"
    assert len(DEMO_IMAGE_NAMES) == len(DEMO_PROMPTS) == len(DEMO_MODALITIES) == 9
    assert set(DEMO_SHA256) == set(DEMO_IMAGE_NAMES)
    assert DEMO_PROMPTS[0].startswith("This X-ray") and "OCT" in DEMO_PROMPTS[8]
    assert DEMO_MODALITIES[4] == "CT" and "CT scan" in DEMO_PROMPTS[4]
    assert demo.DEMO_COMMIT in demo.DEMO_BASE_URL and demo.DEMO_BASE_URL.endswith("/imgs/")


@needs_reference
def test_hashes_match_published_sha256sums():
    lines = (REFERENCE_IMAGES / "SHA256SUMS").read_text().split("\n")
    published = {name: digest for digest, name in (line.split() for line in lines if line)}
    assert published == DEMO_SHA256


@needs_reference
def test_downloads_nine_images_in_order_then_uses_cache(server, tmp_path):
    for name in DEMO_IMAGE_NAMES:
        server.set(f"/imgs/{name}", (REFERENCE_IMAGES / name).read_bytes())
    paths = demo_images(base_url=server.url("/imgs/"))
    assert [p.name for p in paths] == list(DEMO_IMAGE_NAMES)
    assert all(p.parent == Path(os.environ["MMKD_HOME"]) / "demo_images" for p in paths)
    assert demo_image_dir() == paths[0].parent
    for p in paths:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == DEMO_SHA256[p.name]
    seen = len(server.requests)
    assert seen == 9
    assert demo_images(base_url=server.url("/no-such-folder")) == paths
    assert len(server.requests) == seen  # second call never contacted the server


def test_corrupted_image_is_refused(server, tmp_path):
    for name in DEMO_IMAGE_NAMES:
        server.set(f"/imgs/{name}", b"not the published image")
    with pytest.raises(DownloadError) as info:
        demo_images(base_url=server.url("/imgs"))  # no trailing slash: one is added
    assert server.url("/imgs/xray.png") in str(info.value)
    assert DEMO_SHA256["xray.png"] in str(info.value)
    assert not (demo_image_dir() / "xray.png").exists()


def test_env_folder_with_stand_ins_warns_per_file(tmp_path, monkeypatch):
    folder = _stand_ins(tmp_path / "mine")
    monkeypatch.setenv("MMKD_DEMO_IMAGES", str(folder))
    with pytest.warns(UserWarning, match="published demo") as record:
        paths = demo_images()
    assert paths == [folder / name for name in DEMO_IMAGE_NAMES]
    messages = [str(w.message) for w in record]
    for name in DEMO_IMAGE_NAMES:
        assert any(str(folder / name) in m for m in messages), name


@needs_reference
def test_env_folder_with_published_images_is_silent(monkeypatch):
    monkeypatch.setenv("MMKD_DEMO_IMAGES", str(REFERENCE_IMAGES))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        paths = demo_images()
    assert [p.name for p in paths] == list(DEMO_IMAGE_NAMES)


def test_missing_file_in_env_folder_names_it(tmp_path, monkeypatch):
    folder = _stand_ins(tmp_path / "mine")
    (folder / "mri.jpg").unlink()
    monkeypatch.setenv("MMKD_DEMO_IMAGES", str(folder))
    with pytest.raises(DownloadError) as info:
        demo_images()
    message = str(info.value)
    assert "mri.jpg" in message and str(folder) in message
    assert "MMKD_DEMO_IMAGES" in message
    assert "xray.png" not in message.split("lacks")[1].split(".")[0]


def test_folder_argument_wins_over_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MMKD_DEMO_IMAGES", str(tmp_path / "does-not-exist"))
    folder = _stand_ins(tmp_path / "arg")
    with pytest.warns(UserWarning):
        paths = demo_images(folder)
    assert paths[0] == folder / "xray.png"


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(DownloadError, match="does not exist") as info:
        demo_images(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(info.value)
