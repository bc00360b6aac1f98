"""Named models: MMKD-CLIP and two of the biomedical CLIPs it learned from, one API.

``load_model(name)`` gives an :class:`~mmkd_utils.model.clip.MMKDModel` for every name of
:func:`list_models`; each model's variable (``MMKD_CHECKPOINT``...) may name a local copy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pandas as pd
import torch
from huggingface_hub import hf_hub_download

try:
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # NumPy 1.x
    from numpy.core.multiarray import scalar as _numpy_scalar

import mmkd_utils.config as config
from mmkd_utils.errors import CheckpointError, DownloadError, TextEncoderError
from mmkd_utils.model.checkpoint import model_config_from_state_dict, read_checkpoint, sniff
from mmkd_utils.model.clip import MMKDModel
from mmkd_utils.model.device import resolve_device, resolve_precision
from mmkd_utils.model.loading import load_checkpoint_model, text_encoder_source

DEFAULT_MODEL = "mmkd-clip-b16"
#: The Hugging Face hub; :data:`HUB_ENDPOINT`, else ``HF_ENDPOINT``, replaces it.
HUB_URL = "https://huggingface.co"
HUB_ENDPOINT: str | None = None
UNIMED_REPO, UNIMED_FILE = "UzairK/unimed-clip-vit-b16", "unimed-clip-vit-b16.pt"
BIOMEDCLIP_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
HF_HUB, LOCAL_DIR = "hf-hub:", "local-dir:"


@dataclass(frozen=True)
class ModelSpec:
    """A registered model: what it is, where it comes from, and how it loads (``kind``).

    Example:
        >>> MODELS["biomedclip"].kind, MODELS["biomedclip"].context_length
        ('open_clip', 256)
    """

    name: str
    title: str
    default: bool
    kind: str  # "mmkd-checkpoint" (the MMKD-CLIP loader) or "open_clip"
    architecture: str
    source: str
    licence: str
    preprocessing: str
    context_length: int
    env: str
    citation: str
    url: str
    description: str


_OPENAI = "224 px: shortest side resized (bicubic), centre crop, OpenAI CLIP mean/std"
_VIT_BERT = "ViT-B/16 (QuickGELU) + BiomedBERT, MLP projection, 512-d"
#: The registered models, in the order :func:`list_models` lists them.
MODELS = {
    "mmkd-clip-b16": ModelSpec(
        name="mmkd-clip-b16",
        title="MMKD-CLIP ViT-B/16",
        default=True,
        kind="mmkd-checkpoint",
        architecture=_VIT_BERT,
        source=f"Google Drive: {config.CHECKPOINT_NAME} (file id {config.DRIVE_FILE_ID})",
        licence="not recorded here: check the MMKD-CLIP repository",
        preprocessing=_OPENAI,
        context_length=config.CONTEXT_LENGTH,
        env="MMKD_CHECKPOINT",
        citation="Wang et al., arXiv:2506.22567 (2025)",
        url="https://github.com/wangshansong1/MMKD-CLIP",
        description="Distilled from nine biomedical CLIP models (among them UniMed-CLIP and "
        "BiomedCLIP); nine imaging modalities.",
    ),
    "unimed-clip-b16": ModelSpec(
        name="unimed-clip-b16",
        title="UniMed-CLIP ViT-B/16",
        default=False,
        kind="mmkd-checkpoint",
        architecture=_VIT_BERT,
        source=f"Hugging Face hub: {UNIMED_REPO}, file {UNIMED_FILE}",
        licence="CC BY-NC 4.0 (model card): non-commercial use only",
        preprocessing=_OPENAI,
        context_length=256,
        env="MMKD_UNIMED_CHECKPOINT",
        citation="Khattak et al., arXiv:2412.10372 (2024)",
        url="https://github.com/mbzuai-oryx/UniMed-CLIP",
        description="Trained on UniMed, 5.3 million open image-text pairs of six modalities "
        "(X-ray, CT, MRI, ultrasound, pathology, fundus).",
    ),
    "biomedclip": ModelSpec(
        name="biomedclip",
        title="BiomedCLIP",
        default=False,
        kind="open_clip",
        architecture="ViT-B/16 (timm) + PubMedBERT (BiomedBERT), MLP projection, 512-d",
        source=f"Hugging Face hub: {BIOMEDCLIP_ID} (open_clip)",
        licence="MIT (model card)",
        preprocessing="its own open_clip preprocessing (open_clip_config.json)",
        context_length=256,
        env="MMKD_BIOMEDCLIP",
        citation="Zhang et al., NEJM AI (2025), arXiv:2303.00915",
        url=f"https://huggingface.co/{BIOMEDCLIP_ID}",
        description="Trained on PMC-15M, 15 million figure-caption pairs from PubMed Central "
        "articles.",
    ),
}
#: Where weights come from when neither ``source=`` nor the model's variable says:
#: None is the published location; for ``biomedclip`` an open_clip id or a folder.
SOURCES: dict[str, str | None] = {name: None for name in MODELS} | {
    "biomedclip": HF_HUB + BIOMEDCLIP_ID
}


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered model; an unknown name lists the known ones.

    Example:
        >>> get_spec("unimed-clip-b16").env
        'MMKD_UNIMED_CHECKPOINT'
    """
    if isinstance(name, str) and name in MODELS:
        return MODELS[name]
    also = "" if Path(str(name)).exists() else " (and no file or folder of that name exists)"
    raise CheckpointError(
        f"Unknown model {name!r}{also}. Registered models: {', '.join(MODELS)} (see "
        "mmkd_utils.list_models()). To load a checkpoint file or a converted folder, pass its path."
    )


def list_models() -> pd.DataFrame:
    """The registered models as a table, one row each, the default first.

    Example:
        >>> list_models().set_index("name").loc["biomedclip", "licence"]
        'MIT (model card)'
    """
    return pd.DataFrame([asdict(spec) for spec in MODELS.values()])


def is_model_name(value: Any) -> bool:
    """True when ``load_model(value)`` means a name: a registered one, or a word that is no file.

    Example:
        >>> is_model_name("biomedclip"), is_model_name("weights/MMKD_B16.pth")
        (True, False)
    """
    if not isinstance(value, str):
        return False
    word = bool(value.strip()) and not any(c in value for c in "/\\.~:")
    return value in MODELS or (word and not Path(value).exists())


def resolve_source(name: str, source: str | os.PathLike | None = None) -> str | None:
    """Where ``name`` loads from: ``source``, else its variable, else :data:`SOURCES`.

    Example:
        >>> resolve_source("biomedclip", "my/folder")
        'my/folder'
    """
    spec = get_spec(name)
    if source is not None and str(source).strip():
        return str(source)
    return os.environ.get(spec.env, "").strip() or SOURCES.get(name)


def load_model(
    checkpoint: str | os.PathLike | None = None,
    *,
    text_encoder: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
) -> MMKDModel:
    """Load MMKD-CLIP, a checkpoint of its family, or a registered model by name.

    ``checkpoint``: a ``.pth`` file, a converted folder, a name of :func:`list_models`, or
    None (``MMKD_CHECKPOINT``, else the released weights, downloaded once).
    ``text_encoder``: folder or hub id of the BiomedBERT config and tokenizer (default
    ``MMKD_TEXT_ENCODER``). ``device``: ``"auto"`` or a torch device. ``precision``:
    ``"auto"`` (bf16/fp16 autocast on CUDA, else fp32), ``"fp32"``, ``"fp16"``, ``"bf16"``.

    Example:
        >>> load_model(tiny_checkpoint, text_encoder=tiny_text_encoder)
        MMKDModel(source='...checkpoint.pt', device='cpu', precision='fp32', embed_dim=64)
    """
    kwargs = {"text_encoder": text_encoder, "device": device, "precision": precision}
    if is_model_name(checkpoint):
        return load_registered(checkpoint, **kwargs)
    return load_checkpoint_model(checkpoint, **kwargs)


def load_registered(
    name: str, *, source: str | os.PathLike | None = None, **kwargs: Any
) -> MMKDModel:
    """Load a registered model; ``source`` overrides where its weights come from.

    ``kwargs``: ``text_encoder``, ``device`` and ``precision``, as for :func:`load_model`.

    Example:
        >>> load_registered("mmkd-clip-b16", source=tiny_checkpoint,
        ...                 text_encoder=tiny_text_encoder).model_name
        'mmkd-clip-b16'
    """
    spec = get_spec(name)
    where = resolve_source(name, source)
    if spec.kind == "open_clip":
        clip = _load_open_clip(spec, where or HF_HUB + BIOMEDCLIP_ID, **kwargs)
    elif name == "unimed-clip-b16":
        path = unimed_checkpoint(where)
        with allow_numpy_scalars():
            clip = load_checkpoint_model(path, **kwargs)
    else:  # MMKD_CHECKPOINT is left to the loader, which explains a wrong path itself
        from_env = source is None and where == os.environ.get(spec.env, "").strip()
        clip = load_checkpoint_model(None if from_env else where, **kwargs)
    clip.model_name = name
    return clip


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def hub_endpoint() -> str:
    """Base URL of the Hugging Face hub: :data:`HUB_ENDPOINT`, ``HF_ENDPOINT`` or the public one.

    Example:
        >>> hub_endpoint().startswith("http")
        True
    """
    return (HUB_ENDPOINT or os.environ.get("HF_ENDPOINT", "").strip() or HUB_URL).rstrip("/")


def unimed_cache_path() -> Path:
    """Where the UniMed-CLIP weights are cached: ``MMKD_HOME/unimed/``.

    Example:
        >>> unimed_cache_path().parent.name
        'unimed'
    """
    return config.cache_dir() / "unimed" / UNIMED_FILE


def unimed_checkpoint(source: str | os.PathLike | None = None) -> Path:
    """The local UniMed-CLIP weights: ``source``, else the cached copy, else downloaded.

    Example:
        >>> unimed_checkpoint(tiny_checkpoint).name
        'checkpoint.pt'
    """
    env = MODELS["unimed-clip-b16"].env
    if source is not None:
        if not Path(source).expanduser().exists():
            raise CheckpointError(
                f"The UniMed-CLIP checkpoint {source} does not exist (from source= or {env}). "
                f"Fix the path, or unset {env} to download {UNIMED_FILE} into the cache."
            )
        return Path(source).expanduser()
    dest, url = unimed_cache_path(), f"{hub_endpoint()}/{UNIMED_REPO}/resolve/main/{UNIMED_FILE}"
    if dest.is_file():
        return dest
    todo = f"Download {url} by hand and put it at {dest}, or set {env} to a copy of the file."
    if _hub_offline():
        raise DownloadError(f"UniMed-CLIP is not in the cache, and HF_HUB_OFFLINE is set. {todo}")
    try:  # hf_hub_download writes atomically, under a lock, and resumes an interrupted file
        hf_hub_download(UNIMED_REPO, UNIMED_FILE, local_dir=dest.parent, endpoint=hub_endpoint())
    except Exception as err:
        raise DownloadError(
            f"The download of {url} was interrupted or failed ({err}). {todo}"
        ) from None
    try:
        if (problem := sniff(dest)) and "web page" in problem:
            raise CheckpointError("the hub sent a web page (HTML) instead of the weights")
        with allow_numpy_scalars():
            model_config_from_state_dict(read_checkpoint(dest))
    except CheckpointError as err:
        dest.unlink()
        raise DownloadError(f"{url} did not verify and was deleted: {err}. {todo}") from None
    return dest


@contextlib.contextmanager
def allow_numpy_scalars() -> Iterator[None]:
    """Let ``torch.load(weights_only=True)`` also build NumPy scalars (UniMed-CLIP has some).

    Example:
        >>> with allow_numpy_scalars():
        ...     sd = read_checkpoint(tiny_checkpoint)
    """
    names = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
    dtypes = sorted({type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"}, key=str)
    safe_globals = getattr(torch.serialization, "safe_globals", None)
    if safe_globals is None:  # torch < 2.5: such checkpoints are refused, with a clear error
        yield
        return
    with safe_globals([*((_numpy_scalar, n) for n in names), np.dtype, *dtypes]):
        yield


def _load_open_clip(spec: ModelSpec, source: str, text_encoder: Any = None, **kwargs) -> MMKDModel:
    """An open_clip model (BiomedCLIP) from ``hf-hub:<repo>`` or a folder, as an MMKDModel."""
    if not source.startswith(HF_HUB):
        folder = Path(source.removeprefix(LOCAL_DIR)).expanduser()
        if not folder.is_dir():
            raise CheckpointError(
                f"{spec.title} source {source!r} is neither 'hf-hub:<repo>' nor a folder (with "
                f"open_clip_config.json, weights and tokenizer): fix or unset {spec.env}."
            )
        source = LOCAL_DIR + str(folder.resolve())
    dev = resolve_device(kwargs.get("device", "auto"))
    prec = resolve_precision(kwargs.get("precision", "auto"), dev)
    explicit = text_encoder is not None or os.environ.get("MMKD_TEXT_ENCODER", "").strip()
    text = text_encoder_source(text_encoder) if explicit else None
    try:
        text_cfg = open_clip.get_model_config(source)["text_cfg"]
        if text:  # BiomedBERT's config from where MMKD-CLIP gets it (never its weights)
            text_cfg = {**text_cfg, "hf_model_name": text, "hf_model_pretrained": False}
        model, _, preprocess = open_clip.create_model_and_transforms(source, text_cfg=text_cfg)
        tokenizer = open_clip.get_tokenizer(source)
    except Exception as err:
        hub, missing = source.startswith(HF_HUB), isinstance(err, OSError)
        error = DownloadError if hub else TextEncoderError if missing else CheckpointError
        raise error(
            f"Could not build {spec.title} from {source} ({str(err).strip().splitlines()[0]}). "
            "Without network, put open_clip_config.json, open_clip_pytorch_model.bin and the "
            f"tokenizer files of https://huggingface.co/{BIOMEDCLIP_ID} in a folder and set "
            f"{spec.env} to it; set MMKD_TEXT_ENCODER to a folder with BiomedBERT's config."
        ) from None
    return MMKDModel(model, preprocess, tokenizer, dev, prec, source=source)
