"""Reading MMKD-CLIP checkpoints safely and mapping them onto open_clip.

The original MMKD-CLIP code saves ``{"epoch", "name", "state_dict"}`` with keys that
may carry a ``module.`` prefix (DDP). This module reads such files without running any
pickled code (``weights_only=True``), normalises the keys and dtypes, reads the
architecture from the tensor shapes, and renames the keys to open_clip's
``CustomTextCLIP`` layout (``text_encoder.`` becomes ``text.``).

Introduced in ``notebooks/01_quickstart.ipynb`` (what is inside a checkpoint).

Example:
    >>> from mmkd_utils.model.checkpoint import read_checkpoint, model_config_from_state_dict
    >>> sd = read_checkpoint("MMKD_B16.pth")  # doctest: +SKIP
    >>> model_config_from_state_dict(sd)["vision_cfg"]["width"]  # doctest: +SKIP
    768
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mmkd_utils.errors import CheckpointError

#: Keys the original code may write that carry no weights and are recreated on load.
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
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _sniff(path: Path) -> str | None:
    """Say what a file is when it cannot be a torch checkpoint, else None."""
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
    if head.startswith(b"PK") or head.startswith(b"\x80"):
        return None  # torch's zip format, or a legacy pickle
    return "it is not a torch checkpoint"


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an MMKD-CLIP ``.pth`` file into a flat state dict in the upstream key layout.

    Accepts a bare state dict or ``{"state_dict": ...}``, keys with or without the
    ``module.`` prefix; casts fp16/bf16 tensors to fp32 and drops stale
    ``position_ids``. Never unpickles arbitrary objects: a file whose loading would run
    code is refused with :class:`~mmkd_utils.errors.CheckpointError`.

    Example:
        >>> sd = read_checkpoint("tests/fixtures/tiny_upstream/checkpoint.pt")  # doctest: +SKIP
        >>> sd["visual.conv1.weight"].shape  # doctest: +SKIP
        torch.Size([128, 3, 16, 16])
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"Checkpoint {path} does not exist: check the path.")
    if path.is_dir():
        raise CheckpointError(
            f"Checkpoint {path} is a folder; read_checkpoint takes a .pth file "
            "(load a converted folder with load_model instead)."
        )
    problem = _sniff(path)
    if problem:
        raise CheckpointError(f"Cannot read {path}: {problem}. Download it again.")
    try:
        obj = _torch_load(path)
    except pickle.UnpicklingError as err:
        if "weights only" in str(err).lower() or "weights_only" in str(err):
            raise CheckpointError(
                f"Refused to load {path}: it holds Python objects other than tensors, and "
                "unpickling them could run code. Nothing was executed. Use a checkpoint "
                "saved as a plain state dict of tensors."
            ) from None
        raise CheckpointError(
            f"Cannot read {path}: it is not a torch checkpoint ({err}). Download it again."
        ) from err
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"Cannot read {path}: it is incomplete (truncated download?) or not a torch "
            f"checkpoint. Download it again (details: {_first_line(err)})."
        ) from err
    return normalize_state_dict(obj, source=str(path))


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _torch_load(path: Path) -> Any:
    """``torch.load`` with ``weights_only=True``, memory-mapped when the format allows."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as err:
        if "mmap" not in str(err):
            raise
    return torch.load(path, map_location="cpu", weights_only=True)


def normalize_state_dict(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap, de-prefix, drop ignored keys and cast half tensors to fp32.

    Example:
        >>> import torch
        >>> sd = normalize_state_dict({"state_dict": {"module.logit_scale": torch.tensor(1.)}})
        >>> list(sd)
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
        name = key[len("module.") :] if key.startswith("module.") else key
        if name in IGNORED_KEYS:
            continue
        if value.dtype in _HALF_DTYPES:
            value = value.float()
        out[name] = value
    return out


def to_open_clip_keys(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename the upstream ``text_encoder.`` prefix to open_clip's ``text.``.

    Example:
        >>> import torch
        >>> list(to_open_clip_keys({"text_encoder.proj.0.weight": torch.zeros(1)}))
        ['text.proj.0.weight']
    """
    return {
        ("text." + k[len("text_encoder.") :] if k.startswith("text_encoder.") else k): v
        for k, v in state_dict.items()
    }


def _count_layers(state_dict: Mapping[str, Any], pattern: str) -> int:
    regex = re.compile(pattern)
    found = {int(m.group(1)) for k in state_dict if (m := regex.match(k))}
    return max(found) + 1 if found else 0


def model_config_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], text_encoder: str = ""
) -> dict[str, Any]:
    """Read the open_clip ``model_cfg`` of an MMKD-CLIP state dict from its tensor shapes.

    Patch size, width, layers, image size and embedding dimension come from the
    shapes; heads = width / 64; QuickGELU as in the released model. ``text_encoder``
    is the hub id or folder of the BiomedBERT config and tokenizer.

    Example:
        >>> cfg = model_config_from_state_dict(sd, "microsoft/...")  # doctest: +SKIP
        >>> cfg["vision_cfg"]  # doctest: +SKIP
        {'image_size': 224, 'patch_size': 16, 'width': 768, 'layers': 12, ...}
    """
    missing = [k for k in REQUIRED_KEYS if k not in state_dict]
    if missing:
        raise CheckpointError(
            "This is not an MMKD-CLIP checkpoint (ViT image tower + BiomedBERT text tower): "
            f"it lacks {', '.join(missing)}. Check that the file is MMKD_B16.pth or a "
            "checkpoint of the same family."
        )
    conv = state_dict["visual.conv1.weight"]
    width, _, patch, _ = conv.shape
    n_pos = state_dict["visual.positional_embedding"].shape[0]
    grid = round((n_pos - 1) ** 0.5)
    if grid * grid + 1 != n_pos:
        raise CheckpointError(
            f"visual.positional_embedding has {n_pos} rows, which is not a square grid plus "
            "a class token: this image tower is not a ViT that open_clip can build."
        )
    layers = _count_layers(state_dict, r"visual\.transformer\.resblocks\.(\d+)\.")
    mlp = state_dict.get("visual.transformer.resblocks.0.mlp.c_fc.weight")
    embed_dim = state_dict["visual.proj"].shape[1]
    proj2 = state_dict["text_encoder.proj.2.weight"]
    if proj2.shape[0] != embed_dim:
        raise CheckpointError(
            f"text_encoder.proj.2.weight projects to {proj2.shape[0]} dimensions but the "
            f"image tower to {embed_dim}: the two towers do not belong together."
        )
    if width % 64:
        raise CheckpointError(f"visual width {width} is not a multiple of 64 (heads of 64).")
    return {
        "embed_dim": int(embed_dim),
        "quick_gelu": True,
        "vision_cfg": {
            "image_size": int(grid * patch),
            "patch_size": int(patch),
            "width": int(width),
            "layers": int(layers),
            "head_width": 64,
            "mlp_ratio": float(mlp.shape[0] / width) if mlp is not None else 4.0,
        },
        "text_cfg": {
            "hf_model_name": text_encoder,
            "hf_tokenizer_name": text_encoder,
            "hf_model_pretrained": False,
            "hf_proj_type": "mlp",
            "hf_pooler_type": "cls_last_hidden_state_pooler",
            "context_length": 256,
        },
    }


def text_shapes_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The text tower's sizes as BERT config fields, read from the tensor shapes.

    Example:
        >>> text_shapes_from_state_dict(sd)["hidden_size"]  # doctest: +SKIP
        768
    """
    emb = "text_encoder.transformer.embeddings."
    return {
        "vocab_size": int(state_dict[emb + "word_embeddings.weight"].shape[0]),
        "hidden_size": int(state_dict[emb + "word_embeddings.weight"].shape[1]),
        "num_hidden_layers": _count_layers(
            state_dict, r"text_encoder\.transformer\.encoder\.layer\.(\d+)\."
        ),
        "max_position_embeddings": int(state_dict[emb + "position_embeddings.weight"].shape[0]),
    }


def check_text_config(text_shapes: Mapping[str, int], hf_config: Any, source: str) -> None:
    """Raise if the text encoder config ``source`` does not fit the checkpoint's text tower.

    Example:
        >>> check_text_config({"hidden_size": 768}, config, "microsoft/...")  # doctest: +SKIP
    """
    wrong = [
        f"{name}: checkpoint {want}, config {getattr(hf_config, name, None)}"
        for name, want in text_shapes.items()
        if getattr(hf_config, name, None) != want
    ]
    if wrong:
        from mmkd_utils.errors import TextEncoderError

        raise TextEncoderError(
            f"The text encoder config from {source} does not fit the checkpoint's text tower "
            f"({'; '.join(wrong)}). Pass text_encoder= (or set MMKD_TEXT_ENCODER) to the "
            "config and tokenizer that belong to this checkpoint."
        )


def check_keys(
    expected: Mapping[str, torch.Size | tuple[int, ...]],
    found: Mapping[str, torch.Tensor],
    source: str = "checkpoint",
) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped key.

    Example:
        >>> import torch
        >>> check_keys({"a": (2,)}, {"a": torch.zeros(3)})
        Traceback (most recent call last):
        ...
        mmkd_utils.errors.CheckpointError: ...
    """
    missing = sorted(set(expected) - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = sorted(
        f"{k} (checkpoint {tuple(found[k].shape)}, model {tuple(expected[k])})"
        for k in set(expected) & set(found)
        if tuple(found[k].shape) != tuple(expected[k])
    )
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
        if items:
            shown = ", ".join(items[:8]) + (f" and {len(items) - 8} more" if len(items) > 8 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the MMKD-CLIP architecture read from its shapes — "
            + "; ".join(problems)
            + ". Is it a checkpoint of another model?"
        )
