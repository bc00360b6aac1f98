"""Reading MMKD-CLIP checkpoints safely and mapping them onto open_clip's ``CustomTextCLIP``.

The original code saves ``{"epoch", "name", "state_dict"}``, keys maybe prefixed ``module.``
(DDP). Files are read without running pickled code (``weights_only=True``); the
architecture is read from the tensor shapes; ``text_encoder.`` keys become ``text.``.

Example:
    >>> sd = read_checkpoint(tiny_checkpoint)
    >>> model_config_from_state_dict(sd)["vision_cfg"]["patch_size"]
    16
"""

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
#: Keys without which the architecture cannot be read.
REQUIRED_KEYS = (
    "logit_scale",
    "visual.conv1.weight",
    "visual.positional_embedding",
    "visual.proj",
    "text_encoder.transformer.embeddings.word_embeddings.weight",
    "text_encoder.transformer.embeddings.position_embeddings.weight",
    "text_encoder.proj.0.weight",
    "text_encoder.proj.2.weight",
)


def sniff(path: str | Path) -> str | None:
    """Why ``path`` cannot be a torch checkpoint (empty, a web page...), or None if it may be.

    Example:
        >>> sniff(tiny_checkpoint) is None, sniff(xray)
        (True, 'it is not a torch checkpoint')
    """
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError as err:
        return f"it could not be read ({err.strerror})"
    if not head:
        return "it is empty"
    if head.lstrip()[:15].lower().startswith((b"<!doctype", b"<html")):
        return (
            "it is a web page (HTML), not the weights; Google Drive sends such a page when "
            "the download quota is exceeded or the file needs a permission"
        )
    if head.startswith((b"PK", b"\x80")):
        return None  # torch's zip format, or a legacy pickle
    return "it is not a torch checkpoint"


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an MMKD-CLIP ``.pth`` into a flat fp32 state dict in the upstream key layout.

    A file whose unpickling would run code is refused with :class:`CheckpointError`.

    Example:
        >>> read_checkpoint(tiny_checkpoint)["visual.conv1.weight"].shape
        torch.Size([128, 3, 16, 16])
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder (load it with load_model)" if path.is_dir() else "does not exist"
        raise CheckpointError(f"Checkpoint {path} {what}: check the path.")
    problem = sniff(path)
    if problem:
        raise CheckpointError(f"Cannot read {path}: {problem}. Download it again.")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:  # the legacy (non-zip) format cannot be memory-mapped
            if "mmap" not in str(err):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "weights" not in str(err).lower():
            raise CheckpointError(f"Cannot read {path}: it is not a torch checkpoint.") from err
        raise CheckpointError(
            f"Refused to load {path}: it holds Python objects other than tensors, and "
            "unpickling them could run code. Nothing was executed. Use a checkpoint saved "
            "as a plain state dict of tensors."
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(
            f"Cannot read {path}: it is incomplete (truncated download?) or not a torch "
            f"checkpoint. Download it again (details: {detail})."
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
        raise CheckpointError(
            f"{source} holds no state dict (found {type(obj).__name__}); expected a dict of "
            "tensors or {'state_dict': {...}} as the MMKD-CLIP code saves."
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{source}: entry {key!r} is a {type(value).__name__}, not a tensor; "
                "this is not an MMKD-CLIP state dict."
            )
        name = key.removeprefix("module.")
        if name not in IGNORED_KEYS:
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


def _count_layers(state_dict: Mapping[str, Any], pattern: str) -> int:
    found = {int(m.group(1)) for k in state_dict if (m := re.match(pattern, k))}
    return max(found) + 1 if found else 0


def model_config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], text_encoder: str = ""
) -> dict[str, Any]:
    """The open_clip ``model_cfg`` of an MMKD-CLIP state dict, read from its tensor shapes.

    Heads are 64 wide, QuickGELU as released; ``text_encoder`` names the BiomedBERT config.

    Example:
        >>> cfg = model_config_from_state_dict(read_checkpoint(tiny_checkpoint))
        >>> cfg["embed_dim"], cfg["vision_cfg"]["width"], cfg["text_cfg"]["context_length"]
        (64, 128, 256)
    """
    missing = [k for k in REQUIRED_KEYS if k not in state_dict]
    if missing:
        raise CheckpointError(
            "This is not an MMKD-CLIP checkpoint (ViT image tower + BiomedBERT text tower): "
            f"it lacks {', '.join(missing)}. Check that the file is MMKD_B16.pth or a "
            "checkpoint of the same family."
        )
    width, _, patch, _ = state_dict["visual.conv1.weight"].shape
    n_pos = state_dict["visual.positional_embedding"].shape[0]
    grid = round((n_pos - 1) ** 0.5)
    if grid * grid + 1 != n_pos:
        raise CheckpointError(
            f"visual.positional_embedding has {n_pos} rows, which is not a square grid plus "
            "a class token: this image tower is not a ViT that open_clip can build."
        )
    embed_dim = state_dict["visual.proj"].shape[1]
    if state_dict["text_encoder.proj.2.weight"].shape[0] != embed_dim or width % 64:
        raise CheckpointError(
            f"The text tower does not project to the image tower's {embed_dim} dimensions, "
            f"or the image width {width} is not a multiple of 64: not an MMKD-CLIP checkpoint."
        )
    mlp = state_dict.get("visual.transformer.resblocks.0.mlp.c_fc.weight")
    return {
        "embed_dim": int(embed_dim),
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": int(grid * patch),
            "patch_size": int(patch),
            "width": int(width),
            "layers": _count_layers(state_dict, r"visual\.transformer\.resblocks\.(\d+)\."),
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


def text_shapes_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The text tower's sizes as BERT config fields, read from the tensor shapes.

    Example:
        >>> text_shapes_from_state_dict(read_checkpoint(tiny_checkpoint))["hidden_size"]
        128
    """
    emb = "text_encoder.transformer.embeddings."
    words = state_dict[emb + "word_embeddings.weight"].shape
    return {
        "vocab_size": int(words[0]),
        "hidden_size": int(words[1]),
        "num_hidden_layers": _count_layers(
            state_dict, r"text_encoder\.transformer\.encoder\.layer\.(\d+)\."
        ),
        "max_position_embeddings": int(state_dict[emb + "position_embeddings.weight"].shape[0]),
    }


def check_text_config(text_shapes: Mapping[str, int], hf_config: Any, source: str) -> None:
    """Raise :class:`TextEncoderError` if the config ``source`` does not fit the text tower.

    Example:
        >>> from types import SimpleNamespace
        >>> check_text_config({"hidden_size": 768}, SimpleNamespace(hidden_size=64), "bert")
        Traceback (most recent call last):
        ...
        mmkd_utils.errors.TextEncoderError: The text encoder config from bert does not fit...
    """
    wrong = [
        f"{name}: checkpoint {want}, config {getattr(hf_config, name, None)}"
        for name, want in text_shapes.items()
        if getattr(hf_config, name, None) != want
    ]
    if wrong:
        raise TextEncoderError(
            f"The text encoder config from {source} does not fit the checkpoint's text tower "
            f"({'; '.join(wrong)}). Pass text_encoder= (or set MMKD_TEXT_ENCODER) to the "
            "config and tokenizer that belong to this checkpoint."
        )


def check_keys(
    expected: Mapping[str, tuple[int, ...]], found: Mapping[str, torch.Tensor], source: str = ""
) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped key.

    Example:
        >>> check_keys({"a": (2,)}, {"a": torch.zeros(3)})
        Traceback (most recent call last):
        ...
        mmkd_utils.errors.CheckpointError: checkpoint does not match ... 1 wrong shape: a ...
    """
    shapes = [
        f"{k} (checkpoint {tuple(found[k].shape)}, model {tuple(expected[k])})"
        for k in sorted(set(expected) & set(found))
        if tuple(found[k].shape) != tuple(expected[k])
    ]
    problems = {
        "missing": sorted(set(expected) - set(found)),
        "unexpected": sorted(set(found) - set(expected)),
        "wrong shape": shapes,
    }
    text = [
        f"{len(items)} {label}: " + ", ".join(items[:8]) + (" ..." if len(items) > 8 else "")
        for label, items in problems.items()
        if items
    ]
    if text:
        raise CheckpointError(
            f"{source or 'checkpoint'} does not match the MMKD-CLIP architecture read from its "
            f"shapes — {'; '.join(text)}. Is it a checkpoint of another model?"
        )
