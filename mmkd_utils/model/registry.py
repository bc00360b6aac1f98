"""Named models (MMKD-CLIP and two biomedical CLIPs it learned from) through one API."""

from __future__ import annotations

import contextlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import pandas as pd
import torch
from huggingface_hub import constants as hub
from huggingface_hub import hf_hub_download

import mmkd_utils.config as config
from mmkd_utils.errors import CheckpointError, DownloadError, TextEncoderError
from mmkd_utils.model.checkpoint import model_config_from_state_dict, read_checkpoint
from mmkd_utils.model.clip import MMKDModel
from mmkd_utils.model.device import resolve_device, resolve_precision
from mmkd_utils.model.loading import load_checkpoint_model, text_encoder_source

DEFAULT_MODEL = "mmkd-clip-b16"
UNIMED_REPO, UNIMED_FILE = config.UNIMED_REPO, config.UNIMED_FILE
BIOMEDCLIP_ID = "microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"
HF_HUB, LOCAL_DIR = "hf-hub:", "local-dir:"
_OPENAI = "224 px: shortest side resized (bicubic), centre crop, OpenAI CLIP mean/std"
_VIT_BERT = "ViT-B/16 (QuickGELU) + BiomedBERT, MLP projection, 512-d"


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A registered model: what it is, where it comes from, and how it loads (``kind``).

    Example:
        >>> MODELS["biomedclip"].kind, MODELS["biomedclip"].context_length
        ('open_clip', 256)
    """

    name: str
    title: str
    default: bool = False
    kind: str = "mmkd-checkpoint"  # the MMKD-CLIP loader; or "open_clip"
    architecture: str = _VIT_BERT
    source: str
    licence: str
    preprocessing: str = _OPENAI
    context_length: int = config.CONTEXT_LENGTH
    env: str
    citation: str
    url: str
    description: str


_SPECS = [
    ModelSpec(
        name="mmkd-clip-b16",
        title="MMKD-CLIP ViT-B/16",
        default=True,
        source=f"Google Drive: {config.CHECKPOINT_NAME} (file id {config.DRIVE_FILE_ID})",
        licence="not stated by the authors",
        env="MMKD_CHECKPOINT",
        citation="Wang et al., arXiv:2506.22567 (2025)",
        url="https://github.com/wangshansong1/MMKD-CLIP",
        description="Distilled from nine biomedical CLIPs (UniMed-CLIP, BiomedCLIP...).",
    ),
    ModelSpec(
        name="unimed-clip-b16",
        title="UniMed-CLIP ViT-B/16",
        source=f"Hugging Face hub: {UNIMED_REPO}, file {UNIMED_FILE}",
        licence="CC BY-NC 4.0 (model card: license cc-by-nc-4.0)",
        env="MMKD_UNIMED_CHECKPOINT",
        citation="Khattak et al., arXiv:2412.10372 (2024)",
        url="https://github.com/mbzuai-oryx/UniMed-CLIP",
        description="Trained on UniMed: 5.3M image-text pairs of six modalities.",
    ),
    ModelSpec(
        name="biomedclip",
        title="BiomedCLIP",
        kind="open_clip",
        architecture="ViT-B/16 (timm) + PubMedBERT (BiomedBERT), MLP projection, 512-d",
        source=f"Hugging Face hub: {BIOMEDCLIP_ID} (open_clip)",
        licence="MIT (model card); for research only: it puts any deployed use out of scope",
        preprocessing="its own open_clip preprocessing (open_clip_config.json)",
        env="MMKD_BIOMEDCLIP",
        citation="Zhang et al., NEJM AI (2025), arXiv:2303.00915",
        url=f"https://huggingface.co/{BIOMEDCLIP_ID}",
        description="Trained on PMC-15M: 15M figure-caption pairs from PubMed Central.",
    ),
]
#: The registered models, in the order :func:`list_models` lists them.
MODELS = {spec.name: spec for spec in _SPECS}
#: Where weights come from unless ``source=`` or the model's variable says (None: published).
SOURCES: dict[str, str | None] = dict.fromkeys(MODELS) | {"biomedclip": HF_HUB + BIOMEDCLIP_ID}


def get_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered model.

    Example:
        >>> get_spec("unimed-clip-b16").env
        'MMKD_UNIMED_CHECKPOINT'
    """
    if isinstance(name, str) and name in MODELS:
        return MODELS[name]
    raise CheckpointError(
        f"Unknown model {name!r}: pass one of {', '.join(MODELS)} (see list_models()), "
        "or the path of a checkpoint file or converted folder."
    )


def list_models() -> pd.DataFrame:
    """The registered models, one row each, the default first; licences as the authors state them.

    Example:
        >>> list_models().set_index("name").loc["mmkd-clip-b16", "licence"]
        'not stated by the authors'
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
    """Where ``name`` loads from: ``source``, its variable, a kit's copy, or :data:`SOURCES`.

    Example:
        >>> resolve_source("biomedclip", "my/folder")
        'my/folder'
    """
    if source is not None and str(source).strip():
        return str(source)
    kit = config.cache_dir() / config.BIOMEDCLIP_DIR  # BiomedCLIP of a classroom kit
    in_kit = name == "biomedclip" and (kit / "open_clip_config.json").is_file()
    env = os.environ.get(get_spec(name).env, "").strip()
    return env or (LOCAL_DIR + str(kit) if in_kit else SOURCES.get(name))


def load_model(
    checkpoint: str | os.PathLike | None = None,
    *,
    text_encoder: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
) -> MMKDModel:
    """Load MMKD-CLIP (a ``.pth`` file or converted folder) or a model of :func:`list_models`.

    ``checkpoint=None``: ``MMKD_CHECKPOINT``, else the released weights (downloaded once).
    ``text_encoder``: BiomedBERT's config and tokenizer (folder or hub id; ``MMKD_TEXT_ENCODER``).
    ``precision``: "auto" (bf16/fp16 autocast on CUDA, else fp32), "fp32", "fp16" or "bf16".

    Example:
        >>> load_model(tiny_checkpoint, text_encoder=tiny_text_encoder)
        MMKDModel(source='...checkpoint.pt', device='cpu', precision='fp32', embed_dim=64)
    """
    kwargs = {"text_encoder": text_encoder, "device": device, "precision": precision}
    if is_model_name(checkpoint):
        return load_registered(checkpoint, **kwargs)
    return load_checkpoint_model(checkpoint, **kwargs)


def load_registered(name: str, *, source: str | os.PathLike | None = None, **kwargs) -> MMKDModel:
    """Load a registered model; ``source`` overrides where its weights come from.

    Example:
        >>> load_registered("mmkd-clip-b16", source=tiny_checkpoint,
        ...                 text_encoder=tiny_text_encoder).model_name
        'mmkd-clip-b16'
    """
    spec, where = get_spec(name), resolve_source(name, source)
    if spec.kind == "open_clip":
        clip = _load_open_clip(spec, where or HF_HUB + BIOMEDCLIP_ID, **kwargs)
    elif name == "unimed-clip-b16":
        path = unimed_checkpoint(where)  # before: its check ends an allowance made here
        with allow_numpy_scalars():
            clip = load_checkpoint_model(path, **kwargs)
    else:  # MMKD_CHECKPOINT is left to the loader, which explains a wrong path itself
        from_env = source is None and where == os.environ.get(spec.env, "").strip()
        clip = load_checkpoint_model(None if from_env else where, **kwargs)
    clip.model_name = name
    return clip


def unimed_checkpoint(source: str | os.PathLike | None = None) -> Path:
    """The local UniMed-CLIP weights: ``source``, else ``MMKD_HOME/unimed/`` (downloaded once).

    Example:
        >>> unimed_checkpoint(tiny_checkpoint).name
        'checkpoint.pt'
    """
    env = MODELS["unimed-clip-b16"].env
    if source is not None:
        if not Path(source).expanduser().exists():
            raise CheckpointError(
                f"The UniMed-CLIP checkpoint {source} (source= or {env}) does not exist: "
                f"fix the path, or unset {env} to download it into the cache."
            )
        return Path(source).expanduser()
    dest = config.cache_dir() / "unimed" / UNIMED_FILE
    url = f"{hub.ENDPOINT}/{UNIMED_REPO}/resolve/main/{UNIMED_FILE}"  # HF_ENDPOINT: a mirror
    if dest.is_file():
        return dest
    todo = f"Download {url} to {dest}, or set {env} to a copy (a kit: `{config.KIT_COMMAND}`)."
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        raise DownloadError(f"UniMed-CLIP is not in the cache, and HF_HUB_OFFLINE is set. {todo}")
    try:  # hf_hub_download writes atomically, under a lock, and resumes an interrupted file
        hf_hub_download(UNIMED_REPO, UNIMED_FILE, local_dir=dest.parent, endpoint=hub.ENDPOINT)
        with allow_numpy_scalars():
            model_config_from_state_dict(read_checkpoint(dest))
    except CheckpointError as err:
        dest.unlink()
        raise DownloadError(f"{url} did not verify and was deleted: {err}. {todo}") from None
    except Exception as err:
        raise DownloadError(f"{url}: download failed or was interrupted ({err}). {todo}") from None
    return dest


def allow_numpy_scalars() -> contextlib.AbstractContextManager:
    """Let ``torch.load(weights_only=True)`` also build NumPy scalars (UniMed-CLIP has some).

    Example:
        >>> with allow_numpy_scalars():
        ...     sd = read_checkpoint(tiny_checkpoint)
    """
    if not hasattr(torch.serialization, "safe_globals"):  # torch < 2.5: refused, clearly
        return contextlib.nullcontext()
    scalar = np.float32(0).__reduce__()[0]  # numpy(._)core.multiarray.scalar
    scalars = [(scalar, f"numpy.{m}.multiarray.scalar") for m in ("core", "_core")]
    dtypes = {type(np.dtype(code)) for code in "?bhilqBHILQefdgFDG"}
    return torch.serialization.safe_globals([*scalars, np.dtype, *dtypes])


def _load_open_clip(spec: ModelSpec, source: str, text_encoder: Any = None, **kwargs) -> MMKDModel:
    """An open_clip model (BiomedCLIP) from ``hf-hub:<repo>`` or a folder, as an MMKDModel."""
    if not source.startswith(HF_HUB):
        folder = Path(source.removeprefix(LOCAL_DIR)).expanduser()
        if not folder.is_dir():
            raise CheckpointError(f"{source!r} is not a folder: fix or unset {spec.env}.")
        source = LOCAL_DIR + str(folder.resolve())
    dev = resolve_device(kwargs.get("device", "auto"))
    prec = resolve_precision(kwargs.get("precision", "auto"), dev)
    text = text_encoder_source(text_encoder)
    try:
        text_cfg = open_clip.get_model_config(source)["text_cfg"]
        if text != config.DEFAULT_TEXT_ENCODER:  # BiomedBERT's config as MMKD-CLIP gets it
            text_cfg = {**text_cfg, "hf_model_name": text, "hf_model_pretrained": False}
        model, _, preprocess = open_clip.create_model_and_transforms(source, text_cfg=text_cfg)
        tokenizer = open_clip.get_tokenizer(source)
    except Exception as err:
        hub, missing = source.startswith(HF_HUB), isinstance(err, OSError)
        error = DownloadError if hub else TextEncoderError if missing else CheckpointError
        raise error(
            f"Could not build {spec.title} from {source} ({str(err).strip().splitlines()[0]}). "
            f"Offline, set {spec.env} to a folder with open_clip_config.json, weights and "
            f"tokenizer of {spec.url}, and MMKD_TEXT_ENCODER to one with BiomedBERT's config."
        ) from None
    return MMKDModel(model, preprocess, tokenizer, dev, prec, source=source)
