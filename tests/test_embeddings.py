"""Tests for :mod:`mmkd_utils.tasks.embeddings` (embed_folder and its on-disk cache)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import platformdirs
import pytest
import torch
from PIL import Image

import mmkd_utils
import mmkd_utils.images.pipeline as pipeline
from mmkd_utils import FolderEmbeddings, ImageLoadError, MMKDError, MMKDModel, SkippedImagesWarning
from mmkd_utils.images.pipeline import default_num_workers, usable_cpus
from mmkd_utils.tasks.embeddings import cache_folder, embed_folder

# --------------------------------------------------------------------------- helpers


def write_png(path: Path, seed: int) -> Path:
    """A small PNG whose pixels depend on ``seed``."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (24, 30, 3), dtype=np.uint8)).save(path)
    return path


def make_folder(root: Path, layout: dict[str, int], loose: int = 0) -> Path:
    """``root/<folder>/img<i>.png`` (``layout[folder]`` each) and ``loose`` images in root."""
    seed = 0
    for folder, count in layout.items():
        for i in range(count):
            write_png(root / folder / f"img{i}.png", seed := seed + 1)
    for i in range(loose):
        write_png(root / f"loose{i}.png", seed := seed + 1)
    return root


def entries(model: MMKDModel) -> list[Path]:
    return sorted(cache_folder(model).rglob("*.npy"))


@pytest.fixture
def spy(monkeypatch, tiny_model):
    """Counts decodes (``to_rgb`` in the image pipeline) and forward passes."""
    calls = {"decode": 0, "forward": 0, "rows": 0}
    real_to_rgb, real_encode = pipeline.to_rgb, MMKDModel.encode_pixels

    def counting_to_rgb(image):
        calls["decode"] += 1
        return real_to_rgb(image)

    def counting_encode(self, pixels):
        calls["forward"] += 1
        calls["rows"] += pixels.shape[0]
        return real_encode(self, pixels)

    monkeypatch.setattr(pipeline, "to_rgb", counting_to_rgb)
    monkeypatch.setattr(MMKDModel, "encode_pixels", counting_encode)
    return calls


def reset(calls: dict[str, int]) -> None:
    for k in calls:
        calls[k] = 0


# --------------------------------------------------------------------------- results


def test_embeddings_labels_and_order(tiny_model, tmp_path):
    root = make_folder(tmp_path / "data", {"b_class": 3, "a_class": 2}, loose=1)
    write_png(root / "a_class" / "nested" / "deep.png", 99)
    write_png(root / ".hidden" / "x.png", 98)
    write_png(root / "a_class" / ".secret.png", 97)
    (root / "a_class" / "notes.txt").write_text("not an image")

    result = embed_folder(tiny_model, root, batch_size=4, num_workers=0)

    assert mmkd_utils.embed_folder is embed_folder
    assert isinstance(result, FolderEmbeddings)
    rel = [p.relative_to(root).as_posix() for p in result.paths]
    assert rel == [
        "a_class/img0.png",
        "a_class/img1.png",
        "a_class/nested/deep.png",
        "b_class/img0.png",
        "b_class/img1.png",
        "b_class/img2.png",
        "loose0.png",
    ]
    assert result.labels == ["a_class"] * 3 + ["b_class"] * 3 + [None]
    assert len(result) == 7 and result.from_cache == 0 and result.skipped.empty
    assert result.embeddings.dtype == torch.float32
    assert result.embeddings.shape == (7, tiny_model.embed_dim)
    direct = tiny_model.encode_images(result.paths)
    torch.testing.assert_close(result.embeddings, direct, atol=1e-6, rtol=0)
    torch.testing.assert_close(result.embeddings.norm(dim=1), torch.ones(7))

    frame = result.to_frame()
    assert list(frame.columns) == ["path", "label"]
    assert frame["path"].tolist() == [str(p) for p in result.paths]
    assert frame["label"].tolist() == result.labels
    text = repr(result)
    assert "7 images" in text and "a_class" in text and "0 from cache" in text
    assert len(text) < 200


def test_pattern_narrows_the_images(tiny_model, tmp_path):
    root = make_folder(tmp_path / "data", {"x": 1, "y": 1}, loose=1)
    write_png(root / "x" / "photo.jpg", 50)

    pngs = embed_folder(tiny_model, root, pattern="**/*.png", num_workers=0)
    rel = [p.relative_to(root).as_posix() for p in pngs.paths]
    assert rel == ["loose0.png", "x/img0.png", "y/img0.png"]
    only_x = embed_folder(tiny_model, root, pattern="x/*", num_workers=0)
    assert [p.name for p in only_x.paths] == ["img0.png", "photo.jpg"]
    assert set(only_x.labels) == {"x"}
    top = embed_folder(tiny_model, root, pattern="*.png", num_workers=0)
    assert [p.name for p in top.paths] == ["loose0.png"] and top.labels == [None]
    with pytest.raises(ImageLoadError, match=r"matching '\*\*/\*\.dcm'"):
        embed_folder(tiny_model, root, pattern="**/*.dcm")


# --------------------------------------------------------------------------- the cache


def test_warm_run_decodes_nothing_and_runs_no_forward_pass(tiny_model, tmp_path, spy):
    root = make_folder(tmp_path / "data", {"a": 3, "b": 3})
    cold = embed_folder(tiny_model, root, batch_size=4, num_workers=0)
    assert spy == {"decode": 6, "forward": 2, "rows": 6}
    assert len(entries(tiny_model)) == 6
    assert cache_folder(tiny_model).parent == mmkd_utils.config.cache_dir() / "embeddings"

    reset(spy)
    warm = embed_folder(tiny_model, root, batch_size=4, num_workers=0)
    assert spy == {"decode": 0, "forward": 0, "rows": 0}
    assert warm.from_cache == 6 and "6 from cache" in repr(warm)
    assert warm.paths == cold.paths and warm.labels == cold.labels
    assert torch.equal(warm.embeddings, cold.embeddings)


def test_changed_file_is_embedded_again_and_only_it(tiny_model, tmp_path, spy):
    root = make_folder(tmp_path / "data", {"a": 3, "b": 2})
    embed_folder(tiny_model, root, num_workers=0)
    changed = root / "b" / "img1.png"
    write_png(changed, 1234)  # same name, new pixels

    reset(spy)
    result = embed_folder(tiny_model, root, num_workers=0)
    assert spy["decode"] == 1 and spy["rows"] == 1
    assert result.from_cache == 4
    torch.testing.assert_close(
        result.embeddings, tiny_model.encode_images(result.paths), atol=1e-6, rtol=0
    )
    # A renamed (moved) file is found again by its content.
    changed.rename(root / "a" / "moved.png")
    reset(spy)
    assert embed_folder(tiny_model, root, num_workers=0).from_cache == 5
    assert spy["decode"] == 0


def test_identical_files_are_decoded_once(tiny_model, tmp_path, spy):
    root = make_folder(tmp_path / "data", {"a": 2})
    (root / "b").mkdir()
    (root / "b" / "copy.png").write_bytes((root / "a" / "img0.png").read_bytes())
    result = embed_folder(tiny_model, root, num_workers=0)
    assert spy["decode"] == 2 and len(result) == 3
    assert torch.equal(result.embeddings[0], result.embeddings[2])


def test_interrupted_run_resumes(tiny_model, tmp_path, spy, monkeypatch):
    root = make_folder(tmp_path / "data", {"a": 3, "b": 3})
    counting = MMKDModel.encode_pixels

    def crash_on_second_batch(self, pixels):
        if spy["forward"] == 1:
            raise RuntimeError("simulated crash")
        return counting(self, pixels)

    monkeypatch.setattr(MMKDModel, "encode_pixels", crash_on_second_batch)
    with pytest.raises(RuntimeError, match="simulated crash"):
        embed_folder(tiny_model, root, batch_size=2, num_workers=0)
    assert len(entries(tiny_model)) == 2  # the first batch was cached before the crash

    monkeypatch.setattr(MMKDModel, "encode_pixels", counting)
    reset(spy)
    result = embed_folder(tiny_model, root, batch_size=2, num_workers=0)
    assert spy["decode"] == 4 and spy["rows"] == 4 and spy["forward"] == 2
    assert result.from_cache == 2 and len(result) == 6
    torch.testing.assert_close(
        result.embeddings, tiny_model.encode_images(result.paths), atol=1e-6, rtol=0
    )


def test_corrupt_entries_are_recomputed_not_returned(tiny_model, tmp_path, spy):
    root = make_folder(tmp_path / "data", {"a": 4})
    first = embed_folder(tiny_model, root, num_workers=0)
    files = entries(tiny_model)
    size = files[0].stat().st_size
    files[0].write_bytes(files[0].read_bytes()[: size // 2])  # truncated
    np.save(files[1], np.zeros(3, dtype=np.float32))  # wrong shape
    np.save(files[2], np.full(tiny_model.embed_dim, 7, dtype=np.float32))  # not unit length
    files[3].write_bytes(b"PK\x03\x04 not a .npy file")  # a zip header, say
    assert not list(cache_folder(tiny_model).rglob("*.tmp"))

    reset(spy)
    result = embed_folder(tiny_model, root, num_workers=0)
    assert spy["decode"] == 4 and result.from_cache == 0
    torch.testing.assert_close(result.embeddings, first.embeddings, atol=1e-6, rtol=0)
    assert [f.stat().st_size for f in entries(tiny_model)] == [size] * 4  # rewritten


def test_another_model_fingerprint_does_not_reuse_entries(tiny_model, tmp_path, spy, monkeypatch):
    root = make_folder(tmp_path / "data", {"a": 3})
    embed_folder(tiny_model, root, num_workers=0)
    before = cache_folder(tiny_model)

    monkeypatch.setattr(tiny_model, "_fingerprint", "f" * 64)
    reset(spy)
    result = embed_folder(tiny_model, root, num_workers=0)
    assert spy["decode"] == 3 and result.from_cache == 0
    assert cache_folder(tiny_model) != before
    assert cache_folder(tiny_model).name == "f" * 16 and len(entries(tiny_model)) == 3


def test_unwritable_cache_warns_and_gives_correct_results(tiny_model, tmp_path, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("MMKD_HOME", str(blocker / "home"))
    root = make_folder(tmp_path / "data", {"a": 3})
    with pytest.warns(UserWarning, match="Could not write to the embedding cache") as caught:
        result = embed_folder(tiny_model, root, batch_size=2, num_workers=0)
    assert sum("embedding cache" in str(w.message) for w in caught) == 1  # warned once
    torch.testing.assert_close(
        result.embeddings, tiny_model.encode_images(result.paths), atol=1e-6, rtol=0
    )


def test_read_only_home_caches_in_the_user_cache_but_a_given_folder_is_kept(
    tiny_model, tmp_path, monkeypatch
):
    kit, user_cache = tmp_path / "kit", tmp_path / "user_cache"
    kit.mkdir()
    monkeypatch.setenv("MMKD_HOME", str(kit))
    monkeypatch.setattr(platformdirs, "user_cache_dir", lambda *args: str(user_cache))
    assert cache_folder(tiny_model).parent == kit / "embeddings"  # writable: the home
    real_access = os.access
    monkeypatch.setattr(
        os, "access", lambda path, mode: Path(path) != kit and real_access(path, mode)
    )
    assert cache_folder(tiny_model).parent == user_cache / "embeddings"
    assert cache_folder(tiny_model, cache=kit).parent == kit  # given: never redirected
    root = make_folder(tmp_path / "data", {"a": 2})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "could not write" warning
        embed_folder(tiny_model, root, num_workers=0)
    assert len(list((user_cache / "embeddings").rglob("*.npy"))) == 2
    assert not (kit / "embeddings").exists()


def test_cache_false_and_cache_folder(tiny_model, tmp_path, spy):
    root = make_folder(tmp_path / "data", {"a": 2})
    home = mmkd_utils.config.cache_dir()
    for _ in range(2):
        assert embed_folder(tiny_model, root, num_workers=0, cache=False).from_cache == 0
    assert spy["decode"] == 4
    assert not (home / "embeddings").exists()

    own = tmp_path / "my_cache"
    embed_folder(tiny_model, root, num_workers=0, cache=own)
    assert len(list(own.rglob("*.npy"))) == 2
    assert (own / tiny_model.fingerprint[:16]).is_dir()
    assert embed_folder(tiny_model, root, num_workers=0, cache=str(own)).from_cache == 2
    assert not (home / "embeddings").exists()
    with pytest.raises(ValueError, match="cache="):
        embed_folder(tiny_model, root, cache=3)


# --------------------------------------------------------------------------- workers and errors


def test_worker_processes_give_the_same_result(tiny_model, tmp_path):
    root = make_folder(tmp_path / "data", {"a": 2, "b": 2})
    (root / "a" / "broken.png").write_bytes(b"not an image")
    results = []
    for workers in (0, 2):
        with pytest.warns(SkippedImagesWarning, match="broken.png"):
            results.append(
                embed_folder(
                    tiny_model,
                    root,
                    batch_size=2,
                    num_workers=workers,
                    on_error="skip",
                    cache=False,
                )
            )
    zero, two = results
    assert zero.paths == two.paths and len(two) == 4
    assert torch.equal(zero.embeddings, two.embeddings)
    assert zero.skipped.equals(two.skipped) and len(two.skipped) == 1


def test_failing_workers_fall_back_to_this_process(tiny_model, tmp_path, monkeypatch):
    root = make_folder(tmp_path / "data", {"a": 3})
    real_loader = pipeline.image_loader

    class Broken:
        def __iter__(self):
            raise RuntimeError("worker start failed")

    def loader(images, preprocess, *, num_workers=0, **kwargs):
        if num_workers:
            return Broken()
        return real_loader(images, preprocess, num_workers=num_workers, **kwargs)

    monkeypatch.setattr(pipeline, "image_loader", loader)
    with pytest.warns(UserWarning, match="worker start failed"):
        result = embed_folder(tiny_model, root, batch_size=2, num_workers=2, cache=False)
    torch.testing.assert_close(
        result.embeddings, tiny_model.encode_images(result.paths), atol=1e-6, rtol=0
    )


def test_default_num_workers():
    assert default_num_workers(10, 32) == 0
    assert default_num_workers(64, 32) == min(4, usable_cpus())


def test_bad_image_raise_and_skip(tiny_model, tmp_path, spy):
    root = make_folder(tmp_path / "data", {"a": 3})
    bad = root / "a" / "img1.png"
    bad.write_bytes(b"\x89PNG truncated")

    with pytest.raises(ImageLoadError, match=r"img1\.png.*on_error='skip'"):
        embed_folder(tiny_model, root, num_workers=0)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = embed_folder(tiny_model, root, num_workers=0, on_error="skip")
    skipped_warnings = [w for w in caught if issubclass(w.category, SkippedImagesWarning)]
    assert len(skipped_warnings) == 1
    assert skipped_warnings[0].message.failures[0][:2] == (1, str(bad))
    assert [p.name for p in result.paths] == ["img0.png", "img2.png"]
    assert list(result.skipped.columns) == ["path", "reason"]
    assert result.skipped["path"].tolist() == [str(bad)]
    assert "img1.png" in result.skipped["reason"].iloc[0]
    assert "1 skipped" in repr(result)
    # The bad file is never cached; the good ones are.
    assert len(entries(tiny_model)) == 2
    with pytest.raises(ValueError, match="on_error"):
        embed_folder(tiny_model, root, on_error="ignore")


def test_no_readable_image_is_an_error(tiny_model, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    (root / "x.png").write_bytes(b"nope")
    with pytest.raises(ImageLoadError, match="None of the 1 images"):
        embed_folder(tiny_model, root, on_error="skip")


def test_folder_errors_name_the_root_and_say_what_to_do(tiny_model, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(ImageLoadError, match=r"nowhere does not exist: check the path"):
        embed_folder(tiny_model, missing)
    a_file = write_png(tmp_path / "one.png", 1)
    with pytest.raises(ImageLoadError, match=r"one\.png is a file, not a folder"):
        embed_folder(tiny_model, a_file)
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "readme.txt").write_text("no images here")
    with pytest.raises(MMKDError, match=r"No image files under .*empty.*Check the folder"):
        embed_folder(tiny_model, empty)
    with pytest.raises(ValueError, match="num_workers"):
        embed_folder(tiny_model, tmp_path, num_workers=-1)


@pytest.mark.parametrize("asked", [0, 2, None])
def test_num_workers_reaches_the_pipeline_with_the_cache_on(
    tiny_model, tmp_path, monkeypatch, asked
):
    """The worker count the caller asks for (or the default) is the one used, cache or not."""
    root = make_folder(tmp_path / "data", {"a": 3})
    real, seen = pipeline.image_batches, []

    def spy(images, preprocess, **kwargs):
        seen.append(kwargs["num_workers"])
        return real(images, preprocess, **kwargs)

    monkeypatch.setattr(pipeline, "image_batches", spy)
    embed_folder(tiny_model, root, batch_size=2, num_workers=asked, cache=tmp_path / "cache")
    assert seen == [asked]
