"""The nine images and prompts of the published MMKD-CLIP demo (images fetched on first use)."""

from __future__ import annotations

import warnings
from pathlib import Path

import mmkd_utils.config as paths
from mmkd_utils.download import PathLike, download_url, sha256_file
from mmkd_utils.errors import DownloadError

#: Commit of the MMKD-CLIP repository the demo images are taken from.
DEMO_COMMIT = "36949ae86d57a226863b4bcb59949748b3e30ed5"
DEMO_BASE_URL = f"https://raw.githubusercontent.com/wangshansong1/MMKD-CLIP/{DEMO_COMMIT}/imgs/"
#: SHA-256 of the published images; its keys, in the demo's order, are DEMO_IMAGE_NAMES.
DEMO_SHA256: dict[str, str] = {
    "xray.png": "e10293bb0c660305ae8cddb8ccf78c9081c3c6c85772eb753536ebb88df680e8",
    "fundus.jpeg": "4333e862441713c0e2ea3e83db6f071569f2b7d01055b6970eff8176265c6500",
    "pathology.jpeg": "c19f2edd237897e9931cba6acb9acf83d2601242d04b61e2d252d3be72fa83da",
    "endoscopy.jpg": "c15b5d3a6037f2de015b07d2675db31c6c874cec3e85c2e59708194d96232341",
    "ct.jpg": "a51b49c15c92373a4713f8b18c9595c755d1148192df2ab9d35c5fdb7afbf449",
    "mri.jpg": "e4573da29b862b9bcbc1bbbce5679200fff95dfe295b3e11173ddfaacb8fe938",
    "ultrasound.png": "c24c260b5f4a41864846924d4749195fc5830a22564997798437d640d46ebac7",
    "dermatology.jpeg": "1d703e2dd90967a31b306cfd5d3e25d4c341b3fb2e638abc247ba541bb19c5dc",
    "oct.jpg": "b03fee4f1e261c985363ab54b1e194357ae5ce952d225a8a7928d958f28886fc",
}
DEMO_IMAGE_NAMES: tuple[str, ...] = tuple(DEMO_SHA256)
#: The published demo's prompts (prompt ``i`` describes image ``i``); a tuple, so none can change.
DEMO_PROMPTS: tuple[str, ...] = (
    "This X-ray shows no signs of disease in the thoracic cavity.",
    "Fundus image showing no signs of diabetic retinopathy.",
    "Histopathology slide of Colon adenocarcinoma with glandular structures.",
    "Endoscopic findings consistent with reflux esophagitis.",
    "CT scan showing space-occupying lesion within the brain parenchyma.",
    "MRI reveals contrast-enhancing brain tumor with mass effect.",
    "Ultrasound image of the breast showing irregular margins and malignant features.",
    "Benign mole with uniform color and symmetry indicating melanocytic nevus.",
    "A retinal OCT image of Age-related Macular Degeneration.",
)
#: Short modality labels, in the same order.
DEMO_MODALITIES: tuple[str, ...] = tuple(
    "X-ray fundus pathology endoscopy CT MRI ultrasound dermatology OCT".split()
)


def demo_image_dir() -> Path:
    """The cache folder the demo images are downloaded into (not created).

    Example:
        >>> demo_image_dir() == paths.cache_dir() / "demo_images"
        True
    """
    return paths.cache_dir() / "demo_images"


def demo_images(folder: PathLike | None = None, *, base_url: str | None = None) -> list[Path]:
    """The nine demo images in the published order: from ``folder`` (or ``MMKD_DEMO_IMAGES``),
    warning about files that differ, else downloaded into :func:`demo_image_dir`, SHA-256 checked.

    Example:
        >>> for name in DEMO_IMAGE_NAMES: _ = (tmp / name).write_bytes(b"stand-in")
        >>> [p.name for p in demo_images(tmp)][:2]  # warns: not the published images
        ['xray.png', 'fundus.jpeg']
    """
    source = "the folder argument" if folder is not None else "MMKD_DEMO_IMAGES"
    local = Path(folder).expanduser() if folder is not None else paths.env_path(source)
    if local is None:
        base, dest = (base_url or DEMO_BASE_URL).rstrip("/") + "/", demo_image_dir()
        return [download_url(base + n, dest / n, sha256=h) for n, h in DEMO_SHA256.items()]
    if missing := [name for name in DEMO_IMAGE_NAMES if not (local / name).is_file()]:
        problem = f"lacks {', '.join(missing)}" if local.is_dir() else "does not exist"
        raise DownloadError(
            f"The demo image folder {local} ({source}) {problem}: copy the images from "
            f"{DEMO_BASE_URL}, or drop {source} to download them."
        )
    for path in (found := [local / name for name in DEMO_IMAGE_NAMES]):
        if sha256_file(path) != DEMO_SHA256[path.name]:
            warnings.warn(f"{path} differs from the published demo image (SHA-256).", stacklevel=2)
    return found
