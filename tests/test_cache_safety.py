"""The cache never loses a good file: full disks, corrupt downloads, unwritable folders,
failed loads, and two processes converting the same checkpoint at the same moment."""

from __future__ import annotations

import builtins
import errno
import hashlib
import importlib
import multiprocessing
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from support import CHECKPOINT_BYTES, TINY, TINY_CHECKPOINT, TINY_TEXT, dead_url

import mmkd_utils
from mmkd_utils import (
    CheckpointError,
    DownloadError,
    TextEncoderError,
    embed_folder,
    load_model,
)
from mmkd_utils import download as dl
from mmkd_utils.config import default_checkpoint_path
from mmkd_utils.demo import DEMO_IMAGE_NAMES, demo_image_dir, demo_images
from mmkd_utils.download import download_checkpoint, download_url
from mmkd_utils.model.loading import converted_folder

PAYLOAD = os.urandom(3 * 1024 * 1024 + 77)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _snapshot(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below ``folder``, by relative path."""
    return {
        p.relative_to(folder).as_posix(): _sha(p.read_bytes())
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _text_error(clip, reference) -> float:
    prompts = [str(p) for p in reference["prompts"]]
    expected = torch.from_numpy(reference["text_features"])
    return float((clip.encode_texts(prompts) - expected).abs().max())


# --------------------------------------------------------------------------- a full disk


class _FillingDisk:
    """``open`` for gdown's download module whose written files hold at most ``room`` bytes."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __call__(self, file, mode="r", *args, **kwargs):
        handle = builtins.open(file, mode, *args, **kwargs)
        if "w" not in mode and "a" not in mode:
            return handle
        room, real_write = self, handle.write

        def write(data):
            if room.room < len(data):
                real_write(bytes(data[: room.room]))  # what fitted is on the disk
                room.room = 0
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            room.room -= len(data)
            return real_write(data)

        handle.write = write
        return handle


def test_full_disk_during_download(server, tmp_path, monkeypatch):
    server.set("/f.bin", PAYLOAD)
    dest = tmp_path / "f.bin"
    dest.write_bytes(b"old good copy")
    with monkeypatch.context() as m, pytest.raises(DownloadError) as info:
        # gdown writes the file: its module's ``open`` fills the disk.
        m.setattr(
            importlib.import_module("gdown.download"),
            "open",
            _FillingDisk(room=1_500_000),
            raising=False,
        )
        download_url(server.url("/f.bin"), dest, sha256=_sha(PAYLOAD))
    message = str(info.value)
    assert "disk is full" in message and str(dest) in message
    assert "Free some disk space" in message and "MMKD_HOME" in message
    assert dest.read_bytes() == b"old good copy"  # the good copy is untouched
    assert [p.name for p in tmp_path.iterdir() if ".part" in p.name] == []  # nothing half-written
    # Space was freed: the next run works.
    assert download_url(server.url("/f.bin"), dest, sha256=_sha(PAYLOAD)) == dest
    assert dest.read_bytes() == PAYLOAD


def test_full_disk_during_checkpoint_download(monkeypatch, tmp_path):
    """gdown writes the weights itself: its OSError becomes the same clear error."""
    import gdown

    def fill_the_disk(*, output, **kwargs):
        with open(output + "a1b2c3d4.part", "wb") as f:  # gdown's own partial file
            f.write(CHECKPOINT_BYTES[:1000])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(gdown, "download", fill_the_disk)
    dest = tmp_path / "MMKD_B16.pth"
    dest.write_bytes(CHECKPOINT_BYTES)
    with pytest.raises(DownloadError, match="disk is full") as info:
        download_checkpoint(dest, url=dead_url(), force=True)
    assert str(dest) in str(info.value)
    assert dest.read_bytes() == CHECKPOINT_BYTES
    assert sorted(p.name for p in tmp_path.iterdir() if ".part" in p.name) == []


# --------------------------------------------------------------------------- unwritable caches


@pytest.fixture
def stand_in_demo(server, monkeypatch):
    """The demo images as stand-ins on the local server, with matching SHA-256."""
    for name in DEMO_IMAGE_NAMES:
        data = b"stand-in for " + name.encode()
        server.set(f"/imgs/{name}", data)
        monkeypatch.setitem(mmkd_utils.demo.DEMO_SHA256, name, _sha(data))
    return server.url("/imgs/")


def test_demo_images_with_mmkd_home_below_a_file(stand_in_demo, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("MMKD_HOME cannot be created below a file")
    monkeypatch.setenv("MMKD_HOME", str(blocker / "home"))
    with pytest.raises(DownloadError) as info:
        demo_images(base_url=stand_in_demo)
    message = str(info.value)
    assert str(demo_image_dir()) in message and "MMKD_HOME" in message


def test_demo_images_in_a_read_only_cache(stand_in_demo, monkeypatch):
    """As root chmod does not stop writes, so renaming into place is refused instead."""

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    with monkeypatch.context() as m, pytest.raises(DownloadError) as info:
        m.setattr(dl.os, "replace", refuse)
        demo_images(base_url=stand_in_demo)
    message = str(info.value)
    assert str(demo_image_dir() / "xray.png") in message and "writable" in message
    assert not (demo_image_dir() / "xray.png").exists()
    assert [p.name for p in demo_images(base_url=stand_in_demo)] == list(DEMO_IMAGE_NAMES)


def test_demo_images_where_no_lock_file_can_be_created(stand_in_demo, monkeypatch):
    class RefusedLock:
        def __init__(self, path):
            self.lock_file = path

        def acquire(self):
            raise PermissionError(errno.EACCES, "Permission denied", self.lock_file)

    monkeypatch.setattr(dl, "FileLock", RefusedLock)
    with pytest.raises(DownloadError) as info:
        demo_images(base_url=stand_in_demo)
    message = str(info.value)
    assert "xray.png.lock" in message and "writable" in message and "MMKD_HOME" in message
    assert not (demo_image_dir() / "xray.png").exists()


def test_embeddings_in_a_read_only_cache(tiny_model, tmp_path, monkeypatch):
    from PIL import Image

    import mmkd_utils.tasks.embeddings as emb

    root = tmp_path / "data"
    root.mkdir()
    for i in range(3):
        Image.new("RGB", (20, 16), (40 * i, 90, 200)).save(root / f"img{i}.png")

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(emb.os, "replace", refuse)
    with pytest.warns(UserWarning, match="Could not write to the embedding cache") as caught:
        result = embed_folder(tiny_model, root, batch_size=1, num_workers=0)
    assert sum("embedding cache" in str(w.message) for w in caught) == 1
    torch.testing.assert_close(
        result.embeddings, tiny_model.encode_images(result.paths), atol=1e-6, rtol=0
    )
    folder = emb.cache_folder(tiny_model)
    assert not folder.exists() or not [p for p in folder.rglob("*") if p.is_file()]


# --------------------------------------------------------------------------- converted copies


def test_failed_loads_never_delete_a_good_converted_copy(tmp_path, monkeypatch, reference):
    load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    folder = converted_folder(TINY_CHECKPOINT, TINY_TEXT)
    before = _snapshot(folder)

    # A text encoder folder without a config: the load fails, the copy of the other stays.
    (tmp_path / "no_config").mkdir()
    with pytest.raises(TextEncoderError):
        load_model(TINY_CHECKPOINT, text_encoder=tmp_path / "no_config", device="cpu")
    assert _snapshot(folder) == before

    # The cached copy cannot be read for a reason outside it (here: the text config):
    # the rebuild fails the same way, and the copy is put back, not deleted.
    import mmkd_utils.model.loading as loading

    def broken(source, *args):
        raise TextEncoderError(f"cannot read {source}")

    with monkeypatch.context() as m:
        m.setattr(loading, "load_text_encoder", broken)
        with pytest.warns(UserWarning, match="could not be used"), pytest.raises(TextEncoderError):
            load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    assert _snapshot(folder) == before
    assert [p.name for p in folder.parent.iterdir() if ".broken" in p.name] == []

    # And the copy still loads, without reading the .pth.
    def no_pth(path):
        raise AssertionError("the .pth was read although a converted copy exists")

    monkeypatch.setattr(loading, "read_checkpoint", no_pth)
    clip = load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
    assert _text_error(clip, reference) <= 1e-5


def _convert_in_process(home: str, barrier, results) -> None:
    """Child process: wait for the other one, then load (and convert) the tiny checkpoint."""
    os.environ["MMKD_HOME"] = home
    os.environ["HF_HUB_OFFLINE"] = os.environ["TRANSFORMERS_OFFLINE"] = "1"
    try:
        barrier.wait(timeout=120)
        clip = load_model(TINY_CHECKPOINT, text_encoder=TINY_TEXT, device="cpu")
        with np.load(TINY / "reference_outputs.npz") as ref:
            prompts = [str(p) for p in ref["prompts"]]
            diff = np.abs(clip.encode_texts(prompts).numpy() - ref["text_features"]).max()
        results.put(("ok", float(diff)))
    except BaseException as err:  # reported to the parent
        results.put(("error", f"{type(err).__name__}: {err}"))


def test_two_processes_convert_the_same_checkpoint(tmp_path, monkeypatch, reference):
    home = tmp_path / "shared_home"
    monkeypatch.setenv("MMKD_HOME", str(home))
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [
        ctx.Process(target=_convert_in_process, args=(str(home), barrier, results))
        for _ in range(2)
    ]
    for p in procs:
        p.start()
    try:
        outcomes = [results.get(timeout=240) for _ in procs]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():  # pragma: no cover - only on a hang
                p.kill()
    assert [status for status, _ in outcomes] == ["ok", "ok"], outcomes
    assert all(diff <= 1e-5 for _, diff in outcomes)
    entries = sorted(p.name for p in (home / "converted").iterdir())
    folders = [name for name in entries if (home / "converted" / name).is_dir()]
    assert folders == [converted_folder(TINY_CHECKPOINT, TINY_TEXT).name]
    assert [n for n in entries if n not in folders and not n.endswith(".lock")] == []
    clip = load_model(home / "converted" / folders[0], device="cpu")  # valid on its own
    assert _text_error(clip, reference) <= 1e-5


# --------------------------------------------------------------------------- corrupt checkpoint


@pytest.fixture
def drive(server, monkeypatch):
    """The released weights' URL served by the local server (the tiny checkpoint)."""
    server.set("/MMKD_B16.pth", CHECKPOINT_BYTES)
    monkeypatch.setattr("mmkd_utils.config.DRIVE_URL", server.url("/MMKD_B16.pth"))
    return server


def _corrupt_default() -> tuple[Path, bytes]:
    path = default_checkpoint_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    bad = CHECKPOINT_BYTES[: len(CHECKPOINT_BYTES) // 2]
    path.write_bytes(bad)
    return path, bad


def test_corrupt_cached_checkpoint_is_set_aside_and_fetched_again(drive, reference):
    path, bad = _corrupt_default()
    with pytest.warns(UserWarning, match="is corrupt.*moved to .*MMKD_B16.pth.corrupt"):
        clip = load_model(text_encoder=TINY_TEXT, device="cpu")
    assert _text_error(clip, reference) <= 1e-5
    assert path.read_bytes() == CHECKPOINT_BYTES
    assert path.with_name("MMKD_B16.pth.corrupt").read_bytes() == bad  # kept, not deleted
    assert len(drive.hits("/MMKD_B16.pth")) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_model(text_encoder=TINY_TEXT, device="cpu")  # now simply the cached file
    assert len(drive.hits("/MMKD_B16.pth")) == 1

    path.write_bytes(b"<!DOCTYPE html><html>quota</html>")  # corrupt again: a second name
    with pytest.warns(UserWarning, match=r"MMKD_B16.pth.2.corrupt"):
        load_model(text_encoder=TINY_TEXT, device="cpu")
    assert path.with_name("MMKD_B16.pth.corrupt").read_bytes() == bad


def test_corrupt_cached_checkpoint_offline_keeps_the_file(monkeypatch):
    monkeypatch.setattr("mmkd_utils.config.DRIVE_URL", dead_url("/MMKD_B16.pth"))
    path, bad = _corrupt_default()
    with pytest.warns(UserWarning, match="is corrupt"), pytest.raises(DownloadError) as info:
        load_model(text_encoder=TINY_TEXT, device="cpu")
    assert str(path) in str(info.value)
    assert path.with_name("MMKD_B16.pth.corrupt").read_bytes() == bad
    assert not path.exists()


@pytest.mark.parametrize("how", ["argument", "MMKD_CHECKPOINT"])
def test_a_checkpoint_the_user_named_is_never_replaced(drive, monkeypatch, how):
    path, bad = _corrupt_default()
    if how == "MMKD_CHECKPOINT":
        monkeypatch.setenv("MMKD_CHECKPOINT", str(path))
    with pytest.raises(CheckpointError, match="MMKD_B16.pth"):
        load_model(path if how == "argument" else None, text_encoder=TINY_TEXT, device="cpu")
    assert path.read_bytes() == bad
    assert not path.with_name("MMKD_B16.pth.corrupt").exists()
    assert drive.hits("/MMKD_B16.pth") == []


def test_corrupt_cached_checkpoint_in_a_read_only_cache(monkeypatch, drive):
    path, bad = _corrupt_default()

    def refuse(src, dst):
        raise PermissionError(errno.EACCES, "Permission denied", str(dst))

    monkeypatch.setattr(dl.os, "replace", refuse)
    with pytest.raises(CheckpointError) as info:
        load_model(text_encoder=TINY_TEXT, device="cpu")
    message = str(info.value)
    assert str(path) in message and "could not be moved aside" in message
    assert "Delete it" in message and "MMKD_HOME" in message
    assert path.read_bytes() == bad


def test_checkpoint_downloaded_by_another_process_meanwhile_is_not_set_aside(drive, monkeypatch):
    """Only the very file that failed is moved: a newer one (same name) is left alone."""
    path, _ = _corrupt_default()
    seen = dl.file_identity(path)
    path.write_bytes(CHECKPOINT_BYTES)  # replaced by "another process"
    os.utime(path, ns=(1, 1))
    assert dl.set_aside(path, seen) is None
    assert path.read_bytes() == CHECKPOINT_BYTES
    assert dl.set_aside(path, dl.file_identity(path)) == path.with_name("MMKD_B16.pth.corrupt")
