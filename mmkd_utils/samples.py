"""Real biomedical sample images in the repository's ``imgs/`` folder, so notebooks run offline.

Sources and licences: ``imgs/CREDITS.md``. Endoscopy, dermatology and OCT have no sample:
use :func:`mmkd_utils.demo.demo_images` for those. Introduced in notebook 02.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from mmkd_utils.errors import SamplesNotFoundError, UnknownModalityError

#: The repository's ``imgs/`` folder, next to the ``mmkd_utils`` package.
IMGS = Path(__file__).resolve().parents[1] / "imgs"
#: Modalities of the published demo that no PyPI package ships an image of.
MISSING_MODALITIES = ("endoscopy", "dermatology", "OCT")


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


def modalities() -> list[str]:
    """The modalities that have sample images, in table order, each once.

    Example:
        >>> modalities()
        ['X-ray', 'CT', 'MRI', 'ultrasound', 'fundus', 'pathology']
    """
    return list(dict.fromkeys(s.modality for s in SAMPLES))


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
        raise UnknownModalityError(
            f"No sample images of {modality!r}: choose one of {', '.join(modalities())}.{hint}"
        )
    found = [IMGS / s.file_name for s in chosen]
    if lacking := [p.name for p in found if not p.is_file()]:
        raise SamplesNotFoundError(
            f"{IMGS} lacks {', '.join(lacking)}: restore them with `git checkout -- imgs`, or "
            "clone the tutorial repository and `pip install -e .` from it."
        )
    return found


__all__ = ["MISSING_MODALITIES", "SAMPLES", "Sample", "modalities", "sample_images"]
