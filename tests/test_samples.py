"""The committed sample images in imgs/: reproducible, credited, small, RGB, shown right.

The rebuild is a maintainer tool, ``tools/rebuild_samples.py``; it is imported here from
its path (it is not part of the package).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import load_file

from mmkd_utils import samples
from mmkd_utils.demo import DEMO_MODALITIES
from mmkd_utils.errors import MMKDError, SamplesNotFoundError, UnknownModalityError
from mmkd_utils.prompts import modality_task
from mmkd_utils.samples import SAMPLES, sample_images

ROOT = Path(__file__).resolve().parents[1]
IMGS = ROOT / "imgs"
rebuild = load_file(ROOT / "tools" / "rebuild_samples.py", "rebuild_samples")
build_samples, check_samples, main = rebuild.build_samples, rebuild.check_samples, rebuild.main
credits_markdown, SOURCES = rebuild.credits_markdown, rebuild.SOURCES


def _missing_sources() -> list[str]:
    """Source packages that are not importable here."""
    modules = sorted({s.module for s in SOURCES.values()})
    return [m for m in modules if importlib.util.find_spec(m) is None]


needs_sources = pytest.mark.skipif(
    bool(_missing_sources()),
    reason=(
        f"sample source packages not installed ({', '.join(_missing_sources())}); "
        'install them with pip install -e ".[samples]"'
    ),
)


def _committed_pngs() -> set[str]:
    return {p.name for p in IMGS.glob("*.png")}


# --- reproducibility -------------------------------------------------------------------


@needs_sources
def test_rebuild_reproduces_committed_images_pixel_for_pixel():
    assert check_samples(IMGS) == []


@needs_sources
def test_rebuild_is_deterministic_and_atomic(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    assert main(["--rebuild", "--out", str(first)]) == 0
    written = build_samples(second)
    assert [p.name for p in written] == [s.file_name for s in SAMPLES]
    for name in [s.file_name for s in SAMPLES] + ["CREDITS.md"]:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    # Only the final files are left: no temporary files from the atomic write.
    assert sorted(p.name for p in first.iterdir()) == sorted(
        [s.file_name for s in SAMPLES] + ["CREDITS.md"]
    )
    # Saved with no metadata chunks (no time stamp, no text, no ICC profile).
    for path in written:
        with Image.open(path) as img:
            assert not {"tIME", "tEXt", "iTXt", "zTXt", "iCCP"} & _png_chunks(path), path
            assert img.info.keys() <= {"dpi"}, (path, img.info.keys())


def _png_chunks(path: Path) -> set[str]:
    """The chunk types of a PNG file."""
    data = path.read_bytes()
    pos, types = 8, set()
    while pos < len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        types.add(data[pos + 4 : pos + 8].decode("ascii"))
        pos += 12 + length
    return types


@needs_sources
def test_check_reports_differences_and_exits_1(tmp_path, capsys):
    build_samples(tmp_path)
    assert main(["--check", "--out", str(tmp_path)]) == 0
    # Change one pixel, delete one file, add an unknown one, edit CREDITS.
    xray = tmp_path / "xray_chest_pa.png"
    with Image.open(xray) as img:
        changed = img.copy()
    changed.putpixel((0, 0), (255, 0, 0))
    changed.save(xray, format="PNG")
    (tmp_path / "ct_small.png").unlink()
    Image.new("RGB", (4, 4)).save(tmp_path / "extra.png")
    (tmp_path / "CREDITS.md").write_text("edited\n", encoding="utf-8")
    problems = check_samples(tmp_path)
    assert any(p.startswith("xray_chest_pa.png: 1 pixels differ") for p in problems), problems
    assert "ct_small.png: missing" in problems
    assert any(p.startswith("extra.png") for p in problems)
    assert any(p.startswith("CREDITS.md") for p in problems)
    capsys.readouterr()
    assert main(["--check", "--out", str(tmp_path)]) == 1
    assert "ct_small.png: missing" in capsys.readouterr().out


def test_missing_source_package_is_a_clear_error(tmp_path, monkeypatch, capsys):
    name = SAMPLES[0].file_name
    fake = SOURCES[name]._replace(module="no_such_sample_package_xyz")
    with pytest.raises(rebuild.SampleSourceError, match=r"pip install -e \"\.\[samples\]\""):
        rebuild.render(name, fake)
    monkeypatch.setitem(SOURCES, name, fake)
    assert main(["--check", "--out", str(tmp_path)]) == 2
    assert "not installed" in capsys.readouterr().err


@pytest.mark.skipif(importlib.util.find_spec("skimage") is None, reason="scikit-image missing")
def test_changed_source_file_is_refused():
    name = SAMPLES[-1].file_name
    with pytest.raises(rebuild.SampleSourceError, match="SHA-256"):
        rebuild.render(name, SOURCES[name]._replace(sha256="0" * 64))


def test_sources_and_samples_must_list_the_same_files(monkeypatch):
    monkeypatch.setattr(
        rebuild, "SOURCES", {s.file_name: SOURCES[s.file_name] for s in SAMPLES[1:]}
    )
    with pytest.raises(rebuild.SampleSourceError, match=SAMPLES[0].file_name):
        credits_markdown()


# --- the committed files ---------------------------------------------------------------


def test_every_png_has_a_credits_entry_and_vice_versa():
    credited = set(re.findall(r"^## `([^`]+\.png)`$", (IMGS / "CREDITS.md").read_text(), re.M))
    table = {s.file_name for s in SAMPLES}
    assert len(table) == len(SAMPLES), "file names in SAMPLES must be unique"
    assert _committed_pngs() == table
    assert credited == table


def test_credits_file_equals_credits_markdown():
    assert (IMGS / "CREDITS.md").read_text(encoding="utf-8") == credits_markdown()


def test_credits_name_modalities_without_offline_source():
    text = credits_markdown()
    for modality in ("endoscopy", "dermatology", "OCT"):
        assert modality in text
    assert "mmkd_utils.demo.demo_images()" in text


def test_table_entries_are_complete():
    assert [s.file_name for s in SAMPLES] == list(SOURCES)
    for s in SAMPLES:
        assert s.modality in DEMO_MODALITIES, s
        assert re.fullmatch(r"[a-z0-9_]+\.png", s.file_name), s.file_name
        src = SOURCES[s.file_name]
        for field in src._fields:
            if field != "window":
                assert getattr(src, field), (s.file_name, field)
        assert re.fullmatch(r"[0-9a-f]{64}", src.sha256), s.file_name


def test_images_are_rgb_and_at_most_512_px():
    for path in sorted(IMGS.glob("*.png")):
        with Image.open(path) as img:
            assert img.mode == "RGB", (path.name, img.mode)
            assert max(img.size) <= rebuild.MAX_SIDE, (path.name, img.size)


def test_folder_is_at_most_3_mb():
    total = sum(p.stat().st_size for p in IMGS.iterdir() if p.is_file())
    assert total <= rebuild.MAX_TOTAL_BYTES, total


def test_xray_is_displayed_with_lungs_dark():
    """RG1_UNCR.dcm is MONOCHROME1 (high values are dark): it must be shown inverted.

    The lungs hold air and absorb few X-rays, so on a correctly displayed radiograph
    they are dark, while the column of spine, mediastinum and heart in the middle
    absorbs most and is bright. A missed (or doubled) MONOCHROME1 inversion swaps the
    two. The check compares mean brightness of boxes given as fractions of the image
    size (so it does not depend on the exact pixel size): each lung field (upper-mid
    thirds, left and right) must be clearly darker than the central column.
    """
    with Image.open(IMGS / "xray_chest_pa.png") as img:
        grey = np.asarray(img.convert("L"), dtype=np.float64)
    h, w = grey.shape

    def box(x0: float, x1: float, y0: float, y1: float) -> float:
        return float(grey[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)].mean())

    centre = box(0.45, 0.55, 0.25, 0.60)
    right_lung = box(0.18, 0.35, 0.25, 0.55)  # the patient's right is on the image's left
    left_lung = box(0.65, 0.82, 0.25, 0.55)
    assert right_lung + 30 < centre, (right_lung, centre)
    assert left_lung + 30 < centre, (left_lung, centre)


def test_abdomen_ct_is_displayed_anterior_up_liver_on_the_left():
    """explicit_VR-UN.dcm is stored upside down (ImageOrientationPatient 1,0,0,0,-1,0).

    In the radiological display the spine and the scanner table are at the bottom, so the
    bone-white pixels of the central band (vertebra, table) lie in the lower half; the liver
    (the patient's right) fills the viewer's left, brighter than the gas-filled bowel and the
    spleen on the right. A missed flip puts the spine at the top; a mirror swaps the sides.
    """
    with Image.open(IMGS / "ct_abdomen.png") as img:
        grey = np.asarray(img.convert("L"), dtype=np.float64)
    h, w = grey.shape
    rows, _ = np.nonzero(grey[:, int(0.4 * w) : int(0.6 * w)] >= 250)
    assert rows.mean() > 0.55 * h, rows.mean() / h  # upside down: about 0.36
    liver = grey[int(0.4 * h) : int(0.6 * h), int(0.25 * w) : int(0.4 * w)].mean()
    other_side = grey[int(0.4 * h) : int(0.6 * h), int(0.6 * w) : int(0.75 * w)].mean()
    assert liver > other_side + 20, (liver, other_side)


# --- sample_images ---------------------------------------------------------------------


def test_sample_images_by_modality():
    assert [p.name for p in sample_images("CT")] == [
        "ct_head.png",
        "ct_abdomen.png",
        "ct_small.png",
    ]
    assert sample_images("ct") == sample_images("CT")
    assert all(p.is_file() and p.parent == IMGS for p in sample_images())
    assert [p.name for p in sample_images()] == [s.file_name for s in SAMPLES]


def test_sample_images_unknown_modality():
    with pytest.raises(UnknownModalityError, match="demo_images"):
        sample_images("endoscopy")
    with pytest.raises(MMKDError, match="choose one of"):
        sample_images("PET")


def test_sample_images_without_repository(monkeypatch, tmp_path):
    monkeypatch.setattr(samples, "IMGS", tmp_path / "imgs")
    with pytest.raises(SamplesNotFoundError, match="[Cc]lone") as info:
        sample_images()
    assert isinstance(info.value, MMKDError)


# --- build_collection ------------------------------------------------------------------


def _fake_demo(folder: Path) -> list[Path]:
    """Nine small stand-ins for the published demo images, under their names."""
    folder.mkdir()
    paths = []
    for i, modality in enumerate(DEMO_MODALITIES):
        paths.append(folder / f"{modality.lower()}.png")
        Image.new("RGB", (90, 60), (20 * i, 100, 200)).save(paths[-1])
    return paths


def test_collection_folders_are_the_modality_task_classes(tmp_path, monkeypatch):
    monkeypatch.setattr(samples, "demo_images", lambda: _fake_demo(tmp_path / "demo"))
    table = samples.build_collection(tmp_path / "c", size=64)
    assert list(table.columns) == list(samples.COLLECTION_COLUMNS)
    folders = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert folders == sorted(modality_task().class_names)  # all nine, named as the task's classes
    assert sorted(table["label"].unique()) == folders
    files = sorted(
        p.relative_to(tmp_path / "c").as_posix() for p in (tmp_path / "c").rglob("*.png")
    )
    relative = [Path(p).relative_to(tmp_path / "c").as_posix() for p in table["path"]]
    assert relative == files  # one row per file, in embed_folder's order (sorted by path)
    per_original = table.groupby("original").size()
    for _, group in table.groupby("label"):
        counts = per_original[group["original"].unique()]
        assert len(group) >= 6 and counts.nunique() == 1  # every original the same number
        assert (counts.iloc[0] - 1) * counts.size < 6  # one image fewer each would be too few
    assert set(table["source"]) == {"imgs", "demo"} and table["original"].nunique() == 18
    firsts = table[table["augmentation"] == "none"]
    assert len(firsts) == 18 and firsts["path"].map(lambda p: "__copy" not in p).all()
    for path in table["path"]:
        with Image.open(path) as img:
            assert img.mode == "RGB" and max(img.size) <= 64


def test_collection_is_deterministic_for_a_seed(tmp_path):
    a = samples.build_collection(tmp_path / "a", include_demo=False, per_class=4, size=48)
    b = samples.build_collection(tmp_path / "b", include_demo=False, per_class=4, size=48)
    c = samples.build_collection(tmp_path / "c", include_demo=False, per_class=4, size=48, seed=1)
    assert a["augmentation"].tolist() == b["augmentation"].tolist() != c["augmentation"].tolist()
    for x, y in zip(a["path"], b["path"], strict=True):
        assert Path(x).read_bytes() == Path(y).read_bytes()
    copies = a[a["augmentation"] != "none"]
    assert copies["augmentation"].str.match(r"crop \d+ %, rotated [+-]\d+°, brightness \d+ %").all()
    assert a["label"].value_counts().to_dict() == {
        "CT": 6,
        "MRI": 4,
        "chest X-ray": 4,
        "fundus photograph": 4,
        "histopathology": 4,
        "ultrasound": 4,
    }  # CT: 3 originals x 2 images; one original: itself and 3 copies


def test_collection_refuses_a_non_empty_root_and_bad_arguments(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(MMKDError, match="not an empty folder") as info:
        samples.build_collection(tmp_path / "full", include_demo=False)
    assert isinstance(info.value, ValueError)
    assert sorted(p.name for p in (tmp_path / "full").iterdir()) == ["keep.txt"]
    (tmp_path / "empty").mkdir()  # an empty folder is fine
    assert len(samples.build_collection(tmp_path / "empty", include_demo=False, size=16))
    for bad in ({"per_class": 0}, {"size": 2}, {"per_class": 2.5}):
        with pytest.raises(MMKDError, match=next(iter(bad))):
            samples.build_collection(tmp_path / "new", include_demo=False, **bad)


def test_a_failed_collection_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
    calls = []

    def failing(img, rng):
        calls.append(1)
        if len(calls) == 5:
            raise OSError("disk full")
        return img, "copy"

    monkeypatch.setattr(samples, "_augment", failing)
    with pytest.raises(OSError, match="disk full"):
        samples.build_collection(tmp_path / "c", include_demo=False)
    assert list(tmp_path.iterdir()) == []  # neither root nor the hidden work folder
