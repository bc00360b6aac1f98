"""Rebuild or check the sample images in ``imgs/`` from files that ship in PyPI packages.

A maintainer tool, not part of the package learners import. The PNG files in ``imgs/``
(listed in :data:`mmkd_utils.samples.SAMPLES`) are made from test and sample files inside
``pydicom-data``, ``pydicom``, ``scikit-image`` and ``matplotlib``; :data:`SOURCES` says,
for each, which file (checked by SHA-256), its licence and provenance, and how it is
converted (DICOM through :func:`mmkd_utils.load_image`). ``imgs/CREDITS.md`` is rendered
from the same table. From the repository root::

    pip install -e ".[samples]"
    python tools/rebuild_samples.py --check     # exit code 1 if imgs/ differs
    python tools/rebuild_samples.py --rebuild   # rewrite imgs/ and imgs/CREDITS.md
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

from mmkd_utils import load_image, to_rgb
from mmkd_utils.errors import MMKDError
from mmkd_utils.samples import MISSING_MODALITIES, SAMPLES

#: The repository's ``imgs/`` folder (next to this ``tools/`` folder).
IMGS = Path(__file__).resolve().parents[1] / "imgs"
#: Longest side of a sample PNG; larger sources are downscaled (Lanczos, aspect kept).
MAX_SIDE = 512
#: Upper bound for the whole ``imgs/`` folder, in bytes.
MAX_TOTAL_BYTES = 3_000_000
#: Name of the credits file written next to the PNGs.
CREDITS_NAME = "CREDITS.md"
#: The command that remakes ``imgs/``.
REBUILD_COMMAND = "python tools/rebuild_samples.py --rebuild"
#: The pip command that installs the source packages (the ``samples`` extra).
INSTALL_COMMAND = 'pip install -e ".[samples]"'


class SampleSourceError(MMKDError, RuntimeError):
    """A source package is not installed, or its file is not the one the samples came from."""


class Source(NamedTuple):
    """Where one sample image comes from and how it is turned into an RGB PNG.

    ``module`` is the import name of the installed package folder that holds
    ``original`` (``pydicom-data`` installs the folder ``data_store``). ``reader`` is
    ``"dicom"`` (:func:`mmkd_utils.load_image` with ``window``: a name from
    :data:`mmkd_utils.images.WINDOWS`, ``(centre, width)``, or None for the file's own),
    ``"image"`` (a JPEG or PNG file, also through ``load_image``) or ``"raw_be_u16"``
    (headerless gzip'ed big-endian uint16). ``conversion`` says in words how the PNG was made.
    """

    shows: str
    package: str
    version: str
    module: str
    original: str
    sha256: str
    licence: str
    provenance: str
    reader: str
    window: str | tuple[float, float] | None
    conversion: str

    @property
    def source(self) -> str:
        """The original file as ``package version: module/original``."""
        return f"{self.package} {self.version}: {self.module}/{self.original}"


_PYDICOM_README = "pydicom's `data/test_files/README.txt`"
_PYDICOM_DATA_LICENCE = (
    "Distributed in pydicom-data under its MIT licence (`LICENSE`: Copyright (c) 2020 "
    "Dicom in Python). The pydicom test-file notes say of these files: “I believe there "
    "is no restriction on using any of these files in this manner.”"
)
_NEMA_WG04 = "From ftp://medical.nema.org/MEDICAL/Dicom/DataSets/WG04"

#: Where each sample of :data:`mmkd_utils.samples.SAMPLES` comes from, by file name.
SOURCES: dict[str, Source] = {
    "xray_chest_pa.png": Source(
        shows=(
            "Chest radiograph (computed radiography, CR), posteroanterior (PA) view. Several "
            "rounded opacities in both lungs: not an example of a normal chest."
        ),
        package="pydicom-data",
        version="1.0.0",
        module="data_store",
        original="data/RG1_UNCR.dcm",
        sha256="946f28f48b9fbf360196a9b835c8fce83b0c654bf85a5107663c8a61df02e498",
        licence=_PYDICOM_DATA_LICENCE,
        provenance=(
            f"{_PYDICOM_README}, `RG1_*.dcm`: “JPEG2000, JPEG2000Lossless and uncompressed "
            f"versions; unsigned 16-bit/15-bit with windowing; {_NEMA_WG04}” (the DICOM "
            "WG04 compression test set); this is the uncompressed version."
        ),
        reader="dicom",
        window=None,
        conversion=(
            "The file's own window (centre 15000, width 30000; 15 bits stored). "
            "MONOCHROME1, so inverted after the window: lungs dark, bone white. No "
            "ImageOrientationPatient (a projection image): kept in stored order, which its "
            "PatientOrientation (L, F) says is the usual display, the patient's right on the "
            "viewer's left. Downscaled 1841×1955 → 482×512."
        ),
    ),
    "ct_head.png": Source(
        shows=(
            "Axial CT of the head (series “5/5mm Plain”). The hemispheres are visibly "
            "asymmetric: not an example of a normal brain."
        ),
        package="pydicom-data",
        version="1.0.0",
        module="data_store",
        original="data/693_UNCR.dcm",
        sha256="cc4cdd599231922ecf63de2ddacf03d51c4588805c9154c2eef1ff49c23b32be",
        licence=_PYDICOM_DATA_LICENCE,
        provenance=(
            f"{_PYDICOM_README}, `693_*.dcm`: “Regression datasets for issue #693; "
            "JPEG2000, JPEG2000Lossless and uncompressed versions; Mismatch between "
            "BitsStored and sample bit depth”; this is the uncompressed version."
        ),
        reader="dicom",
        window="brain",
        conversion=(
            "Rescaled to HU, named window `brain` (centre 40, width 80). Stored already in "
            "radiological order (ImageOrientationPatient rows to the patient's left, columns "
            "to the back): anterior up. 512×512."
        ),
    ),
    "ct_abdomen.png": Source(
        shows=(
            "Axial contrast-enhanced CT of the upper abdomen at the level of the kidneys "
            "(study “Pancreas”)."
        ),
        package="pydicom-data",
        version="1.0.0",
        module="data_store",
        original="data/explicit_VR-UN.dcm",
        sha256="28c4a61022d7dbebec97e2f1bbdad0ed097bee2c62727c26a3f3720248c9c6e7",
        licence=_PYDICOM_DATA_LICENCE,
        provenance=(
            f"{_PYDICOM_README}, `explicit_VR-UN.dcm`: “taken from test data in issue "
            "#968; original image taken from https://www.cancerimagingarchive.net, (freely "
            "available de-identified datasets)”."
        ),
        reader="dicom",
        window="abdomen",
        conversion=(
            "Rescaled to HU, named window `abdomen` (centre 40, width 400); the file has no "
            "window of its own. Its ImageOrientationPatient (1, 0, 0, 0, −1, 0) stores the "
            "slice upside down (columns run to the patient's front), so `load_image` flips it "
            "top to bottom into the radiological display: anterior up, spine at the bottom, "
            "liver on the viewer's left. 512×512."
        ),
    ),
    "ct_small.png": Source(
        shows=(
            "Axial contrast-enhanced chest CT, a small 128×128 field around a thoracic "
            "vertebra with the descending aorta and the edges of both lungs."
        ),
        package="pydicom",
        version="3.0.2",
        module="pydicom",
        original="data/test_files/CT_small.dcm",
        sha256="3dd31e5cc835b3f2cdd46c9da1982f59251e78518fefa8163d914631c66437d6",
        licence=(
            "Ships inside pydicom (MIT licence, `LICENSE`: Copyright (c) 2008-2020 Darcy "
            "Mason and pydicom contributors). The test-file notes say: “I believe there is "
            "no restriction on using any of these files in this manner.”"
        ),
        provenance=(
            f"{_PYDICOM_README}, `CT_small.dcm`: “CT image, Explicit VR, LittleEndian; "
            "Downsized to 128x128 from 'CT1_UNC', "
            "ftp://medical.nema.org/MEDICAL/Dicom/DataSets/WG04/”."
        ),
        reader="dicom",
        window=(40.0, 400.0),
        conversion=(
            "Rescaled to HU, window centre 40, width 400: the file has no DICOM window, but "
            "the scanner stored this one in its private GE tags (Window value 400, Level "
            "value 40). Stored already in radiological order (ImageOrientationPatient rows to "
            "the patient's left, columns to the back). Kept at 128×128 (not upscaled)."
        ),
    ),
    "mri_shoulder.png": Source(
        shows="MRI of the shoulder, oblique coronal slice through the humeral head.",
        package="pydicom-data",
        version="1.0.0",
        module="data_store",
        original="data/MR2_UNCR.dcm",
        sha256="c14c7f0c6e25bd4dfbb822fe264e540fc7142bf1c9d15d4c652ec8f5f97fa9e8",
        licence=_PYDICOM_DATA_LICENCE,
        provenance=(
            f"{_PYDICOM_README}, `MR2_*.dcm`: “JPEG2000, JPEG2000Lossless and uncompressed "
            f"versions; unsigned 16-bit/12-bit with rescale and windowing; {_NEMA_WG04}”; "
            "this is the uncompressed version."
        ),
        reader="dicom",
        window=None,
        conversion=(
            "Rescale slope/intercept applied, then the file's own window (centre 1000, "
            "width 2000). Oblique plane (the shoulder's “oblique coronal”, along the "
            "supraspinatus): rows run to the patient's left and back (0.57, 0.82, 0), columns "
            "to the feet. The rows are within 37° of posterior, so `load_image` displays it "
            "like a sagittal slice (head up, anterior on the left); that is the stored order, "
            "which also has the patient's right on the viewer's left: nothing is flipped. "
            "Downscaled 1024×1024 → 512×512."
        ),
    ),
    "mri_head_sagittal.png": Source(
        shows="Sagittal MRI of the head (midline slice: brain, brainstem, face and neck).",
        package="matplotlib",
        version="3.11.2",
        module="matplotlib",
        original="mpl-data/sample_data/s1045.ima.gz",
        sha256="32b424d64f62b7e71cb24d29fd53938ad5664d608055a67ab2b2af4369f8b89e",
        licence=(
            "Ships inside matplotlib under the Matplotlib licence (PSF-based, `LICENSE` of "
            "the matplotlib distribution); matplotlib states no separate licence for its "
            "sample data."
        ),
        provenance=(
            "matplotlib's `mpl-data/sample_data/README.txt`: “This is the sample data "
            "needed for some of matplotlib's examples and docs.” The file is the MRI of "
            "the gallery example “MRI with EEG”; matplotlib gives no further origin."
        ),
        reader="raw_be_u16",
        window=None,
        conversion=(
            "Headerless 256×256 big-endian uint16 (gzip), read with numpy `>u2` and "
            "stretched from its own minimum and maximum to 0..255 by "
            "`mmkd_utils.images.decode.to_rgb`. No orientation is recorded; as stored, the "
            "head is up and the face on the viewer's left, the usual sagittal display. 256×256."
        ),
    ),
    "ultrasound_lymph_node_doppler.png": Source(
        shows=(
            "Ultrasound of a lymph node with power Doppler (colour) overlay, with the "
            "scanner's burned-in annotations."
        ),
        package="pydicom-data",
        version="1.0.0",
        module="data_store",
        original="data/US1_UNCR.dcm",
        sha256="af5a66e40cd49d15dfbf7b78c850eba0662bdc7339339c3fa13f123a57e812cb",
        licence=_PYDICOM_DATA_LICENCE,
        provenance=(
            f"{_PYDICOM_README}, `US1_*.dcm`: “JPEG2000, JPEG2000Lossless and uncompressed "
            f"versions; unsigned 3 channel 8-bit/8-bit; {_NEMA_WG04}”; this is the "
            "uncompressed version."
        ),
        reader="dicom",
        window=None,
        conversion=("RGB colour kept as it is (no window applies). Downscaled 640×480 → 512×384."),
    ),
    "fundus_retina.png": Source(
        shows="Colour fundus photograph of a normal left eye.",
        package="scikit-image",
        version="0.26.0",
        module="skimage",
        original="data/retina.jpg",
        sha256="38a07f36f27f095e818aea7b96d34202c05176d30253c66733f2e00379e9e0e6",
        licence=(
            "Creative Commons CC0 1.0 Universal Public Domain Dedication (as stated in the "
            "docstring of `skimage.data.retina`)."
        ),
        provenance=(
            "`skimage.data.retina`: “downloaded from wikimedia "
            "(https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg)”; "
            "reference: Häggström, Mikael (2014). “Medical gallery of Mikael Häggström "
            "2014”. WikiJournal of Medicine 1 (2). DOI 10.15347/wjm/2014.008. The file "
            "ships in the scikit-image wheel (it is not fetched over the network)."
        ),
        reader="image",
        window=None,
        conversion="JPEG decoded to RGB. Downscaled 1411×1411 → 512×512.",
    ),
    "pathology_ihc_colon.png": Source(
        shows=(
            "Histopathology: colonic glands, immunohistochemical (IHC) staining of FHL2 "
            "protein revealed with DAB (brown), haematoxylin counterstain (blue)."
        ),
        package="scikit-image",
        version="0.26.0",
        module="skimage",
        original="data/ihc.png",
        sha256="f8dd1aa387ddd1f49d8ad13b50921b237df8e9b262606d258770687b0ef93cef",
        licence=(
            "“No known copyright restrictions.” (docstring of `skimage.data.immunohistochemistry`)."
        ),
        provenance=(
            "`skimage.data.immunohistochemistry`: “This image was acquired at the Center "
            "for Microscopy And Molecular Imaging (CMMI).” The file ships in the "
            "scikit-image wheel (it is not fetched over the network)."
        ),
        reader="image",
        window=None,
        conversion="PNG used as it is (metadata dropped). 512×512.",
    ),
}


def table() -> list[tuple[str, str, Source]]:
    """``(file name, modality, source)`` of every sample, in :data:`SAMPLES` order."""
    names = [s.file_name for s in SAMPLES]
    if sorted(names) != sorted(SOURCES):
        raise SampleSourceError(
            f"mmkd_utils.samples.SAMPLES ({', '.join(names)}) and SOURCES in {__file__} "
            f"({', '.join(SOURCES)}) must list the same files: add or remove one."
        )
    return [(s.file_name, s.modality, SOURCES[s.file_name]) for s in SAMPLES]


def source_path(name: str, src: Source) -> Path:
    """The original file of sample ``name`` inside its installed package (never downloaded)."""
    try:
        spec = importlib.util.find_spec(src.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise SampleSourceError(
            f"{name} is made from {src.source}, but {src.package} is not installed. "
            f"Install the sample source packages with `{INSTALL_COMMAND}`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / src.original
    if not path.is_file():
        raise SampleSourceError(
            f"{name} is made from {src.source}, but {path} is not there. Install the pinned "
            f"version with `{INSTALL_COMMAND}`."
        )
    return path


def sha256(path: Path) -> str:
    """SHA-256 of a file, as hex."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_raw_be_u16(path: Path) -> np.ndarray:
    """A headerless gzip'ed square image of big-endian uint16 values, as a 2-D array."""
    data = np.frombuffer(gzip.decompress(path.read_bytes()), dtype=">u2")
    side = int(round(data.size**0.5))
    if side * side != data.size:
        raise SampleSourceError(f"{path} holds {data.size} values, not a square image.")
    return data.reshape(side, side).astype(np.uint16)


def render(name: str, src: Source) -> Image.Image:
    """The RGB image of sample ``name`` made from its source file (longest side ≤ 512).

    Raises :class:`SampleSourceError` if the source is missing or is not the file the
    committed sample was made from (its SHA-256 differs).
    """
    path = source_path(name, src)
    digest = sha256(path)
    if digest != src.sha256:
        raise SampleSourceError(
            f"{path} is not the file {name} was made from (SHA-256 {digest}, expected "
            f"{src.sha256}). Install {src.package}=={src.version} with `{INSTALL_COMMAND}`."
        )
    if src.reader == "raw_be_u16":
        img = to_rgb(read_raw_be_u16(path))
    else:  # "dicom" or "image"
        img = load_image(path, window=src.window)
    # A fresh image from the pixels alone: no ICC profile, XMP or dpi reaches the PNG.
    img = Image.fromarray(np.ascontiguousarray(np.asarray(img, dtype=np.uint8)), mode="RGB")
    if max(img.size) > MAX_SIDE:
        scale = MAX_SIDE / max(img.size)
        size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def write_atomically(files: dict[Path, Image.Image | str]) -> None:
    """Write every file to a temporary name first, then move them all into place."""
    temps: list[tuple[Path, Path]] = []
    try:
        for target, content in files.items():
            tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
            temps.append((tmp, target))
            if isinstance(content, str):
                tmp.write_text(content, encoding="utf-8", newline="\n")
            else:  # fixed options, no metadata: the bytes are stable
                content.save(tmp, format="PNG", optimize=False)
        for tmp, target in temps:
            os.replace(tmp, target)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)


def build_samples(out_dir: str | os.PathLike[str]) -> list[Path]:
    """Render every sample into ``out_dir`` (created) and write ``CREDITS.md`` there.

    All images are rendered before anything is written, and every file is written under
    a temporary name first. Returns the PNG paths in table order. Files in ``out_dir``
    that are not in the table are left alone (:func:`check_samples` reports them).
    """
    out = Path(out_dir)
    images = {out / name: render(name, src) for name, _, src in table()}
    out.mkdir(parents=True, exist_ok=True)
    write_atomically({**images, out / CREDITS_NAME: credits_markdown()})
    return list(images)


def compare(expected: Image.Image, path: Path) -> str | None:
    """How the PNG at ``path`` differs from ``expected`` (None if identical)."""
    try:
        with Image.open(path) as found:
            found.load()
            mode, size = found.mode, found.size
            pixels = np.asarray(found.convert("RGB"))
    except OSError as err:
        return f"{path.name}: cannot be read ({err})"
    if mode != "RGB":
        return f"{path.name}: mode {mode}, expected RGB"
    if size != expected.size:
        return f"{path.name}: size {size}, expected {expected.size}"
    want = np.asarray(expected)
    if np.array_equal(pixels, want):
        return None
    diff = np.abs(pixels.astype(np.int16) - want.astype(np.int16))
    changed = int(diff.any(axis=-1).sum())
    return f"{path.name}: {changed} pixels differ (largest difference {int(diff.max())})"


def check_samples(out_dir: str | os.PathLike[str] = IMGS) -> list[str]:
    """Differences between what :func:`build_samples` would write and ``out_dir``.

    Compares every PNG pixel for pixel (mode, size, values), ``CREDITS.md`` as text,
    and lists PNGs that are not in the table. An empty list means up to date. Raises
    :class:`SampleSourceError` if a source package is missing or differs.
    """
    out = Path(out_dir)
    problems: list[str] = []
    for name, _, src in table():
        expected = render(name, src)  # first: a missing source is an error, not a diff
        path = out / name
        problem = compare(expected, path) if path.is_file() else f"{name}: missing"
        if problem:
            problems.append(problem)
    for path in sorted(out.glob("*.png")):
        if path.name not in SOURCES:
            problems.append(f"{path.name}: not in mmkd_utils.samples.SAMPLES")
    credits = out / CREDITS_NAME
    if not credits.is_file():
        problems.append(f"{CREDITS_NAME}: missing")
    elif credits.read_text(encoding="utf-8") != credits_markdown():
        problems.append(f"{CREDITS_NAME}: differs from credits_markdown()")
    return problems


def credits_markdown() -> str:
    """The text of ``imgs/CREDITS.md``, rendered from :data:`SAMPLES` and :data:`SOURCES`."""
    lines = [
        "# Sample images: sources and credits",
        "",
        "<!-- Generated by tools/rebuild_samples.py; do not edit by hand. -->",
        "",
        "The PNG files in this folder are real biomedical images made from files that ship",
        "inside PyPI packages, so the notebooks run offline. They are rebuilt, and checked",
        "pixel for pixel, by:",
        "",
        "```bash",
        INSTALL_COMMAND,
        REBUILD_COMMAND,
        "python tools/rebuild_samples.py --check   # exit code 1 if this folder differs",
        "```",
        "",
        f"Every image is 8-bit RGB with its longest side at most {MAX_SIDE} px (larger",
        "sources are downscaled with Pillow's Lanczos filter, keeping the aspect ratio).",
        "DICOM files are converted with `mmkd_utils.load_image` (modality LUT or rescale",
        "slope/intercept, then the window, then MONOCHROME1 inversion; colour kept; slices",
        "turned into the radiological display by their ImageOrientationPatient); the window",
        "and orientation of each are listed below. The SHA-256 is that of the original file;",
        "the rebuild refuses a source file with any other content.",
        "",
        "| File | Modality | Shows | Source package |",
        "| --- | --- | --- | --- |",
    ]
    rows = table()
    for name, modality, s in rows:
        lines.append(f"| `{name}` | {modality} | {s.shows} | {s.package} {s.version} |")
    for name, modality, s in rows:
        lines += [
            "",
            f"## `{name}`",
            "",
            f"- **Modality:** {modality}",
            f"- **Shows:** {s.shows}",
            f"- **Source package:** {s.package} {s.version} (installed folder `{s.module}`)",
            f"- **Original file:** `{s.module}/{s.original}`",
            f"- **SHA-256 of the original:** `{s.sha256}`",
            f"- **Licence:** {s.licence}",
            f"- **Provenance:** {s.provenance}",
            f"- **Window and conversion:** {s.conversion}",
        ]
    lines += [
        "",
        "## Modalities without an offline sample",
        "",
        f"No PyPI package ships an image of: {', '.join(MISSING_MODALITIES)}. For these, use",
        "the nine published MMKD-CLIP demo images, `mmkd_utils.demo.demo_images()`: they",
        "are downloaded at run time into the cache folder and checked by SHA-256. They are",
        "never committed to this repository.",
        "",
        "Both scikit-image files used here (`retina.jpg`, `ihc.png`) ship inside the",
        "scikit-image wheel; no sample is fetched over the network at build time.",
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``--rebuild`` rewrites ``imgs/``, ``--check`` reports differences.

    Returns the exit code: 0 when done or up to date, 1 when ``--check`` found
    differences, 2 when a source package is missing or differs.
    """
    parser = argparse.ArgumentParser(
        prog="python tools/rebuild_samples.py",
        description="Rebuild or check the sample images in imgs/ from PyPI package files.",
    )
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--rebuild", action="store_true", help="rewrite the images and CREDITS")
    action.add_argument("--check", action="store_true", help="exit 1 if the folder differs")
    parser.add_argument("--out", type=Path, default=IMGS, help="folder instead of imgs/")
    args = parser.parse_args(argv)
    try:
        if args.rebuild:
            for path in build_samples(args.out):
                print(f"{path} ({path.stat().st_size} bytes)")
            print(args.out / CREDITS_NAME)
            return 0
        problems = check_samples(args.out)
    except SampleSourceError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if problems:
        print(f"{args.out} differs from what `{REBUILD_COMMAND}` makes:")
        for problem in problems:
            print(f"  {problem}")
        return 1
    print(f"{args.out} is up to date ({len(SAMPLES)} images).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
