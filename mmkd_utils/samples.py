"""Real biomedical sample images in the repository's ``imgs/`` folder, so notebooks run offline.

Sources and licences: ``imgs/CREDITS.md``. Endoscopy, dermatology and OCT have no sample:
use :func:`mmkd_utils.demo.demo_images` for those. Introduced in notebook 02;
:func:`build_collection` (notebook 03) makes a labelled folder of both.
"""

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
from PIL import Image, ImageEnhance

from mmkd_utils.demo import DEMO_MODALITIES, demo_images
from mmkd_utils.errors import ArgumentError, SamplesNotFoundError, UnknownModalityError
from mmkd_utils.images.pipeline import check_count

#: The repository's ``imgs/`` folder, next to the ``mmkd_utils`` package.
IMGS = Path(__file__).resolve().parents[1] / "imgs"
#: Modalities of the published demo that no PyPI package ships an image of.
MISSING_MODALITIES = ("endoscopy", "dermatology", "OCT")
#: Folder of each sample or demo modality in :func:`build_collection`: the class names of the
#: ``"modality"`` prompt task (``mmkd_utils.prompts.modality_task()``); others keep their name.
LABELS = {"X-ray": "chest X-ray", "fundus": "fundus photograph", "pathology": "histopathology"}
LABELS |= {"dermatology": "dermoscopy"}
#: Columns of the table :func:`build_collection` returns.
COLLECTION_COLUMNS = ("path", "label", "original", "augmentation", "source")


class Sample(NamedTuple):
    """One sample image: its file name in ``imgs/`` and its modality.

    Example:
        >>> SAMPLES[0]
        Sample(file_name='xray_chest_pa.png', modality='X-ray')
    """

    file_name: str
    modality: str


#: The sample images, in the order :func:`sample_images` returns them.
SAMPLES = (
    Sample("xray_chest_pa.png", "X-ray"),
    Sample("ct_head.png", "CT"),
    Sample("ct_abdomen.png", "CT"),
    Sample("ct_small.png", "CT"),
    Sample("mri_shoulder.png", "MRI"),
    Sample("mri_head_sagittal.png", "MRI"),
    Sample("ultrasound_lymph_node_doppler.png", "ultrasound"),
    Sample("fundus_retina.png", "fundus"),
    Sample("pathology_ihc_colon.png", "pathology"),
)


def sample_images(modality: str | None = None) -> list[Path]:
    """Paths of the sample PNGs in ``imgs/``: all, or those of one modality (any case).

    Example:
        >>> [p.name for p in sample_images("mri")]
        ['mri_shoulder.png', 'mri_head_sagittal.png']
    """
    want = str(modality).lower()
    chosen = [s for s in SAMPLES if modality is None or s.modality.lower() == want]
    if not chosen:
        offline = want in {m.lower() for m in MISSING_MODALITIES}
        hint = " No offline sample exists for it: use mmkd_utils.demo.demo_images()." * offline
        known = ", ".join(dict.fromkeys(s.modality for s in SAMPLES))
        raise UnknownModalityError(f"No samples of {modality!r}: choose one of {known}.{hint}")
    found = [IMGS / s.file_name for s in chosen]
    if lacking := [p.name for p in found if not p.is_file()]:
        raise SamplesNotFoundError(
            f"{IMGS} lacks {', '.join(lacking)}: restore them with `git checkout -- imgs`, or "
            "clone the tutorial repository and `pip install -e .` from it."
        )
    return found


def _augment(img: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, str]:
    """A random copy and what was done: a crop of 70-90 % of each side scaled back up, a rotation
    of up to ±10°, brightness ±20 % (no mirroring: it swaps the patient's left and right)."""
    (w, h), scale = img.size, rng.uniform(0.7, 0.9)
    cw, ch = round(w * scale), round(h * scale)
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    angle, light = rng.uniform(-10, 10), rng.uniform(0.8, 1.2)
    copy = img.crop((left, top, left + cw, top + ch)).resize((w, h), Image.BICUBIC)
    copy = ImageEnhance.Brightness(copy.rotate(angle, Image.BILINEAR)).enhance(light)
    return copy, f"crop {scale * 100:.0f} %, rotated {angle:+.0f}°, brightness {light * 100:.0f} %"


def build_collection(
    root: str | os.PathLike,
    *,
    per_class: int = 6,
    include_demo: bool = True,
    seed: int = 0,
    size: int = 256,
) -> pd.DataFrame:
    """Write the sample (and demo) images to the new folder ``root``, a sub-folder per label
    (:data:`LABELS`), at most ``size`` pixels: ``<original>.png`` and random copies (crop,
    rotation, brightness; ``default_rng(seed)``) ``<original>__copyN.png``, the same number per
    original, ``per_class`` images or more per label. Built in a hidden folder, then renamed.
    Returns a row per file (:data:`COLLECTION_COLUMNS`), in ``embed_folder``'s order (by path).

    Example:
        >>> table = build_collection(tmp / "c", per_class=2, include_demo=False, size=32)
        >>> table.groupby("label").size().tolist(), table.loc[0, "augmentation"]
        ([3, 2, 2, 2, 2, 2], 'none')
    """
    root = Path(root).expanduser()
    per_class, size = check_count(per_class, "per_class", 6), check_count(size, "size", 256, 8)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ArgumentError(f"{root} exists and is not an empty folder: pass a new folder.")
    found = [(s.modality, p, p.stem, "imgs") for s, p in zip(SAMPLES, sample_images(), strict=True)]
    for modality, path in zip(DEMO_MODALITIES, demo_images(), strict=True) if include_demo else []:
        found.append((modality, path, f"demo_{path.stem}", "demo"))
    per_label = pd.Series([LABELS.get(f[0], f[0]) for f in found]).value_counts()
    rng, rows = np.random.default_rng(seed), []
    root.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))  # hidden, beside root
    try:
        for modality, path, original, source in found:
            label = LABELS.get(modality, modality)
            (work / label).mkdir(exist_ok=True)
            with Image.open(path) as img:
                small = img.convert("RGB")
            small.thumbnail((size, size))
            for i in range(math.ceil(per_class / per_label[label])):
                copy, how = _augment(small, rng) if i else (small, "none")
                name = f"{original}__copy{i}.png" if i else f"{original}.png"
                copy.save(work / label / name)
                rows.append((f"{label}/{name}", label, original, how, source))
        if root.exists():
            root.rmdir()
        os.replace(work, root)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    table = pd.DataFrame(sorted(rows), columns=COLLECTION_COLUMNS)  # by path, as embed_folder
    return table.assign(path=[str(root / path) for path in table.path])
