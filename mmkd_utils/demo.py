"""The nine images and prompts of the published MMKD-CLIP demo.

The images are not shipped with this package: :func:`demo_images` downloads them from
the MMKD-CLIP repository (pinned to one commit) into the cache folder and checks their
SHA-256, or takes them from a local folder (``folder=`` or ``MMKD_DEMO_IMAGES``).

Example:
    >>> from mmkd_utils.demo import DEMO_PROMPTS, demo_images
    >>> paths = demo_images()  # doctest: +SKIP
    >>> [p.name for p in paths][:2]  # doctest: +SKIP
    ['xray.png', 'fundus.jpeg']
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import mmkd_utils.config as paths
from mmkd_utils.download import download_url, sha256_file
from mmkd_utils.errors import DownloadError

#: Commit of the MMKD-CLIP repository the demo images are taken from.
DEMO_COMMIT = "36949ae86d57a226863b4bcb59949748b3e30ed5"
DEMO_BASE_URL = f"https://raw.githubusercontent.com/wangshansong1/MMKD-CLIP/{DEMO_COMMIT}/imgs/"
#: Image file names, in the order of the published demo.
DEMO_IMAGE_NAMES: tuple[str, ...] = (
    "xray.png",
    "fundus.jpeg",
    "pathology.jpeg",
    "endoscopy.jpg",
    "ct.jpg",
    "mri.jpg",
    "ultrasound.png",
    "dermatology.jpeg",
    "oct.jpg",
)
#: SHA-256 of the published images.
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
#: The prompts of the published demo; prompt ``i`` describes image ``i``.
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
DEMO_MODALITIES: tuple[str, ...] = (
    "X-ray",
    "fundus",
    "pathology",
    "endoscopy",
    "CT",
    "MRI",
    "ultrasound",
    "dermatology",
    "OCT",
)


def demo_image_dir() -> Path:
    """The cache folder the demo images are downloaded into (not created).

    Example:
        >>> demo_image_dir().name
        'demo_images'
    """
    return paths.cache_dir() / "demo_images"


def _local_demo_images(folder: Path, source: str) -> list[Path]:
    """The nine images from ``folder``; warn about files that differ from the published."""
    instead = (
        "unset MMKD_DEMO_IMAGES" if "MMKD_DEMO_IMAGES" in source else "pass no folder"
    ) + f" to download them into {demo_image_dir()}"
    if not folder.is_dir():
        raise DownloadError(
            f"The demo image folder {folder} ({source}) does not exist. Create it and put "
            f"the nine demo images in it, or {instead}."
        )
    found = [folder / name for name in DEMO_IMAGE_NAMES]
    missing = [p.name for p in found if not p.is_file()]
    if missing:
        raise DownloadError(
            f"The demo image folder {folder} ({source}) lacks {', '.join(missing)}. Put "
            f"these files there (published at {DEMO_BASE_URL}<name>), or {instead}."
        )
    for path in found:
        if sha256_file(path) != DEMO_SHA256[path.name]:
            warnings.warn(
                f"{path} is not the published demo image {path.name} (its SHA-256 differs); "
                "results will differ from the published demo.",
                UserWarning,
                stacklevel=3,
            )
    return found


def demo_images(
    folder: str | os.PathLike[str] | None = None, *, base_url: str | None = None
) -> list[Path]:
    """Return the paths of the nine demo images, in the published order.

    With ``folder`` (or the environment variable ``MMKD_DEMO_IMAGES``) the files of that
    folder are used by name; a file that differs from the published one gives a
    warning. Otherwise each missing image is downloaded from ``base_url`` (default:
    :data:`DEMO_BASE_URL`) into ``<cache>/demo_images`` and its SHA-256 is checked.
    Raises :class:`~mmkd_utils.errors.DownloadError`.

    Example:
        >>> paths = demo_images()  # doctest: +SKIP
        >>> len(paths), paths[0].name  # doctest: +SKIP
        (9, 'xray.png')
    """
    if folder is not None:
        return _local_demo_images(Path(folder).expanduser(), "the folder argument")
    env_folder = paths.env_path("MMKD_DEMO_IMAGES")
    if env_folder is not None:
        return _local_demo_images(env_folder, "from MMKD_DEMO_IMAGES")
    base = base_url or DEMO_BASE_URL
    if not base.endswith("/"):
        base += "/"
    target = demo_image_dir()
    return [
        download_url(base + name, target / name, sha256=DEMO_SHA256[name], desc=name)
        for name in DEMO_IMAGE_NAMES
    ]


__all__ = [
    "DEMO_COMMIT",
    "DEMO_BASE_URL",
    "DEMO_IMAGE_NAMES",
    "DEMO_SHA256",
    "DEMO_PROMPTS",
    "DEMO_MODALITIES",
    "demo_image_dir",
    "demo_images",
]
