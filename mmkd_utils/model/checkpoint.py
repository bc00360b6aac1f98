"""Reading MMKD-CLIP checkpoints without running pickled code, and their architecture."""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mmkd_utils.errors import CheckpointError, TextEncoderError

#: Keys older code may write that carry no weights (recreated on load).
IGNORED_KEYS = ("text_encoder.transformer.embeddings.position_ids",)
_WORDS = "text_encoder.transformer.embeddings.word_embeddings.weight"
_POSITIONS = "text_encoder.transformer.embeddings.position_embeddings.weight"
#: Keys without which the architecture cannot be read.
REQUIRED_KEYS = ("visual.conv1.weight", "visual.positional_embedding", "visual.proj")
REQUIRED_KEYS += ("logit_scale", _WORDS, _POSITIONS, "text_encoder.proj.0.weight")


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an MMKD-CLIP ``.pth`` as a flat fp32 state dict; files that would run code are refused.

    Example:
        >>> read_checkpoint(tiny_checkpoint)["visual.conv1.weight"].shape
        torch.Size([128, 3, 16, 16])
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as err:
        raise CheckpointError(f"Cannot read {path}: {err.strerror}; check the path.") from None
    if head.lstrip()[:15].lower().startswith((b"<!doctype", b"<html")):
        problem = "it is a web page (HTML), as servers send for a refused download (quota?)"
    else:
        problem = "it is empty" if not head else "it is not a torch checkpoint"
    if not head.startswith((b"PK", b"\x80")):
        raise CheckpointError(f"Cannot read {path}: {problem}. Download it again.")
    mmap = zipfile.is_zipfile(path)  # the legacy (non-zip) format cannot be memory-mapped
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as err:
        if "weights" not in str(err).lower():
            raise CheckpointError(f"Cannot read {path}: it is not a torch checkpoint.") from err
        raise CheckpointError(
            f"Refused to load {path}: it holds Python objects other than tensors, and "
            "unpickling them could run code (nothing was run). Save a plain state dict."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"Cannot read {path}: it is incomplete (truncated download?) or not a torch "
            f"checkpoint ({type(err).__name__}). Download it again."
        ) from err
    return normalize_state_dict(obj, source=str(path))


def normalize_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap ``{"state_dict": ...}``, drop ``module.`` and ignored keys, cast halves to fp32.

    Example:
        >>> list(normalize_state_dict({"state_dict": {"module.logit_scale": torch.ones(())}}))
        ['logit_scale']
    """
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{source} holds no state dict (found {type(obj).__name__}).")
    out = {}
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{source}: {key!r} is a {type(value).__name__}, not a tensor.")
        if (name := str(key).removeprefix("module.")) not in IGNORED_KEYS:
            half = value.dtype in (torch.float16, torch.bfloat16)
            out[name] = value.float() if half else value
    return out


def to_open_clip_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the upstream ``text_encoder.`` prefix to open_clip's ``text.``.

    Example:
        >>> list(to_open_clip_keys({"text_encoder.proj.0.weight": torch.zeros(1)}))
        ['text.proj.0.weight']
    """
    return {re.sub(r"^text_encoder\.", "text.", k): v for k, v in state_dict.items()}


def _layers(state_dict: Mapping[str, Any], prefix: str) -> int:
    pattern = re.escape(prefix) + r"\.(\d+)\."
    return 1 + max((int(m[1]) for k in state_dict if (m := re.match(pattern, k))), default=-1)


def model_config_from_state_dict(state_dict: Mapping[str, Any], text_encoder: str = "") -> dict:
    """The open_clip ``model_cfg`` of an MMKD-CLIP state dict (heads 64 wide, QuickGELU).

    Example:
        >>> cfg = model_config_from_state_dict(read_checkpoint(tiny_checkpoint))
        >>> cfg["embed_dim"], cfg["vision_cfg"]["width"], cfg["text_cfg"]["context_length"]
        (64, 128, 256)
    """
    if missing := [k for k in REQUIRED_KEYS if k not in state_dict]:
        raise CheckpointError(
            "This is not an MMKD-CLIP checkpoint (ViT image tower + BiomedBERT text tower): "
            f"it lacks {', '.join(missing)}. Use MMKD_B16.pth or a checkpoint of its family."
        )
    width, _, patch, _ = state_dict["visual.conv1.weight"].shape
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    mlp = state_dict.get("visual.transformer.resblocks.0.mlp.c_fc.weight")
    return {
        "embed_dim": int(state_dict["visual.proj"].shape[1]),
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": int(grid * patch),
            "patch_size": int(patch),
            "width": int(width),
            "layers": _layers(state_dict, "visual.transformer.resblocks"),
            "head_width": 64,
            "mlp_ratio": float(mlp.shape[0] / width) if mlp is not None else 4.0,
        },
        "text_cfg": {
            "hf_model_name": text_encoder,
            "hf_tokenizer_name": text_encoder,
            "hf_model_pretrained": False,  # the checkpoint holds the text weights
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    }


def check_text_config(state_dict: Mapping[str, Any], hf_config: Any, source: str) -> None:
    """Raise :class:`TextEncoderError` if the config from ``source`` does not fit the text tower.

    Example:
        >>> from transformers import BertConfig
        >>> check_text_config(read_checkpoint(tiny_checkpoint), BertConfig(), "bert-base")
        Traceback (most recent call last):
        mmkd_utils.errors.TextEncoderError: The text encoder config from bert-base does not fit...
    """
    wanted = {
        "vocab_size": state_dict[_WORDS].shape[0],
        "hidden_size": state_dict[_WORDS].shape[1],
        "num_hidden_layers": _layers(state_dict, "text_encoder.transformer.encoder.layer"),
        "max_position_embeddings": state_dict[_POSITIONS].shape[0],
    }
    got = {name: getattr(hf_config, name, None) for name in wanted}
    if wrong := [f"{k}: checkpoint {v}, config {got[k]}" for k, v in wanted.items() if got[k] != v]:
        raise TextEncoderError(
            f"The text encoder config from {source} does not fit the checkpoint's text tower "
            f"({'; '.join(wrong)}). Pass text_encoder= (or set MMKD_TEXT_ENCODER) to its own."
        )
