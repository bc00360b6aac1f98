"""From an MMKD-CLIP checkpoint to a model: build, fill, and cache a converted copy.

open_clip's ``CustomTextCLIP`` is built on the ``meta`` device (no random weights, no
second copy in memory) and given the checkpoint's tensors. The converted copy, in
open_clip's local-dir layout, makes later loads memory-mapped and pickle-free.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import open_clip
import torch
from filelock import FileLock, Timeout
from open_clip.tokenizer import HFTokenizer
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from transformers import AutoConfig

import mmkd_utils.config as config
from mmkd_utils.download import download_checkpoint, file_identity, set_aside
from mmkd_utils.errors import CheckpointError, TextEncoderError
from mmkd_utils.model.checkpoint import (
    check_text_config,
    model_config_from_state_dict,
    read_checkpoint,
    to_open_clip_keys,
)
from mmkd_utils.model.clip import MMKDModel
from mmkd_utils.model.device import resolve_device, resolve_precision

#: open_clip's file names in a converted copy.
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
#: Preprocessing of the published model: OpenAI CLIP mean/std, bicubic, centre crop.
PREPROCESS_CFG = {
    "mean": (0.48145466, 0.4578275, 0.40821073),
    "std": (0.26862954, 0.26130258, 0.27577711),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def text_encoder_source(text_encoder: str | os.PathLike | None = None) -> str:
    """The text encoder's folder or hub id: the argument, ``MMKD_TEXT_ENCODER`` or BiomedBERT.

    Example:
        >>> text_encoder_source()
        'microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract'
    """
    if text_encoder is None:
        text_encoder = os.environ.get("MMKD_TEXT_ENCODER", "").strip()
    text_encoder = str(text_encoder or config.DEFAULT_TEXT_ENCODER)
    if Path(text_encoder).expanduser().is_dir():
        return str(Path(text_encoder).expanduser().resolve())
    path_like = text_encoder.startswith((".", "/", "~")) or text_encoder.count("/") > 1
    if path_like or "\\" in text_encoder:
        raise TextEncoderError(
            f"text_encoder={text_encoder!r} looks like a folder, but no such folder exists. "
            "Pass a folder with config.json and the tokenizer files, or a hub id."
        )
    return text_encoder


def load_text_encoder(source: str, context_length: int = 256) -> tuple[Any, HFTokenizer]:
    """The text tower's Hugging Face config (never its weights) and open_clip tokenizer.

    Example:
        >>> hf_config, tokenizer = load_text_encoder(tiny_text_encoder)
        >>> hf_config.hidden_size, tokenizer.context_length
        (128, 256)
    """
    try:
        return AutoConfig.from_pretrained(source), HFTokenizer(source, context_length)
    except (OSError, ValueError) as err:
        raise TextEncoderError(
            f"Could not load the text encoder config or tokenizer from {source!r} "
            f"({(str(err).strip() or type(err).__name__).splitlines()[0]}). Without network, "
            "put BiomedBERT's config.json, vocab.txt and tokenizer_config.json in a folder "
            "and pass text_encoder=<folder> or set MMKD_TEXT_ENCODER."
        ) from None


def build_model(model_cfg: dict, state_dict: dict[str, torch.Tensor], source: str = "") -> Any:
    """``CustomTextCLIP`` built on the meta device, given the (open_clip-keyed) weights.

    Example:
        >>> sd = read_checkpoint(tiny_checkpoint)
        >>> cfg = model_config_from_state_dict(sd, tiny_text_encoder)
        >>> type(build_model(cfg, to_open_clip_keys(sd))).__name__
        'CustomTextCLIP'
    """
    with torch.device("meta"):
        model = open_clip.CustomTextCLIP(**model_cfg)
    try:
        model.load_state_dict(state_dict, strict=True, assign=True)
    except RuntimeError as err:
        raise CheckpointError(
            f"{source or 'The checkpoint'} does not match the MMKD-CLIP architecture read from "
            f"its shapes; is it a checkpoint of another model? {err}"
        ) from None
    # Non-persistent buffers (BERT's position_ids, token_type_ids) are in no state dict:
    # left on meta, the forward pass would run and silently give wrong text embeddings.
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.device.type != "meta":
                continue
            if name == "position_ids":
                value = torch.arange(buf.shape[-1], dtype=buf.dtype).expand(buf.shape)
            elif name == "token_type_ids":
                value = torch.zeros(buf.shape, dtype=buf.dtype)
            else:  # pragma: no cover - a new open_clip/transformers layout
                raise CheckpointError(f"Internal: buffer {name} of {source} was not restored.")
            module.register_buffer(name, value.clone(), persistent=False)  # as it was
    return model


def _load_converted(folder: Path) -> tuple[Any, dict, HFTokenizer]:
    """A converted folder's model, ``model_cfg`` and tokenizer."""
    for needed in (CONFIG_NAME, WEIGHTS_NAME):
        if not (folder / needed).is_file():
            raise CheckpointError(
                f"{folder} is not a converted MMKD-CLIP folder: {needed} is missing. "
                "Pass the original .pth file instead."
            )
    try:
        model_cfg = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))["model_cfg"]
        text_cfg = model_cfg["text_cfg"]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{folder / CONFIG_NAME} is not a valid config ({err}).") from None
    # The folder carries its own text config and tokenizer: prefer them to a stored path.
    own = (folder / "config.json").is_file()
    text = str(folder.resolve()) if own else str(text_cfg.get("hf_model_name", ""))
    text_cfg.update(hf_model_name=text, hf_tokenizer_name=text, hf_model_pretrained=False)
    try:
        state_dict = load_file(folder / WEIGHTS_NAME)  # memory-mapped
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{folder / WEIGHTS_NAME} could not be read ({err}); delete {folder} to convert again."
        ) from None
    _, tokenizer = load_text_encoder(text, text_cfg["context_length"])
    return build_model(model_cfg, state_dict, str(folder / WEIGHTS_NAME)), model_cfg, tokenizer


def _save_converted(model: Any, model_cfg: dict, path: Path, text: str, hf: tuple) -> None:
    """Cache the converted copy: under a lock, written aside and renamed into place.

    A copy another process wrote first is kept; a cache that cannot be written only warns.
    """
    folder = converted_folder(path, text)
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{folder}.lock", timeout=600):
            if folder.is_dir():
                return
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(tensors, tmp / WEIGHTS_NAME)
            hf[0].save_pretrained(tmp)  # the text config, and the tokenizer's files
            hf[1].tokenizer.save_pretrained(tmp)
            cfg = json.loads(json.dumps(model_cfg))
            here = str(folder.resolve())
            cfg["text_cfg"].update(hf_model_name=here, hf_tokenizer_name=here)
            preprocess_cfg = {"size": cfg["vision_cfg"]["image_size"], **PREPROCESS_CFG}
            source = {"checkpoint": str(path.resolve()), "text_encoder": text}
            full = {"model_cfg": cfg, "preprocess_cfg": preprocess_cfg, "mmkd_source": source}
            (tmp / CONFIG_NAME).write_text(json.dumps(full, indent=2), encoding="utf-8")
            os.replace(tmp, folder)
    except (OSError, Timeout) as err:
        warnings.warn(
            f"Could not cache a converted copy in {folder.parent} ({err}); the model works, "
            "but the next load will read the .pth again. Set MMKD_HOME to a writable folder.",
            stacklevel=4,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def converted_folder(checkpoint: str | os.PathLike, text_encoder: str | None = None) -> Path:
    """Where the converted copy of ``checkpoint`` is cached; a changed file gets a new one.

    Example:
        >>> converted_folder(tiny_checkpoint, tiny_text_encoder).parent.name
        'converted'
    """
    path = Path(checkpoint).expanduser().resolve()
    st = path.stat()
    ident = f"{path}|{st.st_size}|{st.st_mtime_ns}|{text_encoder_source(text_encoder)}"
    return config.cache_dir() / "converted" / hashlib.sha256(ident.encode()).hexdigest()[:16]


def _resolve_checkpoint(checkpoint: str | os.PathLike | None) -> tuple[Path, bool]:
    """The checkpoint to load, and whether it is the default download (then re-fetchable)."""
    if checkpoint is None and (checkpoint := config.env_path("MMKD_CHECKPOINT")):
        if not checkpoint.exists():
            raise CheckpointError(f"MMKD_CHECKPOINT points to {checkpoint}: no such file; fix it.")
    if checkpoint is None:
        default = config.default_checkpoint_path()
        return (default if default.is_file() else download_checkpoint(default)), True
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"Checkpoint {path} does not exist. Pass the path of MMKD_B16.pth or of a converted "
            "folder, or checkpoint=None for the released weights."
        )
    return path, False


def _read_or_refetch(path: Path, refetch: bool) -> tuple[dict[str, torch.Tensor], Path]:
    """Read the checkpoint; a corrupt default download is kept as ``.corrupt`` and fetched again."""
    seen = file_identity(path)
    try:
        return read_checkpoint(path), path
    except CheckpointError as err:
        if not refetch:
            raise
        problem = str(err)
    try:
        aside = set_aside(path, seen)  # None: another process replaced it meanwhile
    except OSError as exc:
        raise CheckpointError(
            f"The cached checkpoint {path} is corrupt ({problem}), and it could not be moved "
            f"aside ({exc.strerror or exc}). Delete it, or set MMKD_HOME to a writable folder, "
            "and run again to download it afresh."
        ) from None
    if aside is not None:
        message = f"The cached checkpoint {path} is corrupt ({problem}). It was moved to {aside}"
        warnings.warn(f"{message} (delete it when done) and is downloaded again.", stacklevel=4)
    path = download_checkpoint(path)
    return read_checkpoint(path), path


def _cached_or_convert(path: Path, text: str, refetch: bool) -> tuple[Any, dict, HFTokenizer]:
    """The converted copy of ``path``, else ``path`` converted (and the copy cached).

    A copy that cannot be used is set aside and rebuilt; it is deleted only once the new
    copy is in place, and put back if that fails: no cached copy is ever lost.
    """
    folder, aside = converted_folder(path, text), None
    if folder.is_dir():
        try:
            return _load_converted(folder)
        except (CheckpointError, TextEncoderError) as err:
            warnings.warn(
                f"The converted copy {folder} could not be used ({err}); converting {path} again.",
                stacklevel=3,
            )
            aside = folder.with_name(f".{folder.name}.broken-{os.getpid()}")
            shutil.rmtree(aside, ignore_errors=True)
            try:
                os.replace(folder, aside)
            except OSError:  # it stays, and the new copy is not cached
                aside = None
    try:
        state_dict, path = _read_or_refetch(path, refetch)
        model_cfg = model_config_from_state_dict(state_dict, text)
        hf = load_text_encoder(text, model_cfg["text_cfg"]["context_length"])
        check_text_config(state_dict, hf[0], text)
        model = build_model(model_cfg, to_open_clip_keys(state_dict), str(path))
        del state_dict
        _save_converted(model, model_cfg, path, text, hf)
    finally:  # the set-aside copy goes back, unless a new one is in place
        if aside is not None and folder.exists():
            shutil.rmtree(aside, ignore_errors=True)
        elif aside is not None:
            with contextlib.suppress(OSError):
                os.replace(aside, folder)
    return model, model_cfg, hf[1]


def load_checkpoint_model(
    checkpoint: str | os.PathLike | None = None,
    *,
    text_encoder: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
) -> MMKDModel:
    """Load an MMKD-CLIP ``.pth`` file or converted folder; see :func:`mmkd_utils.load_model`.

    Example:
        >>> load_checkpoint_model(tiny_checkpoint, text_encoder=tiny_text_encoder).embed_dim
        64
    """
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    path, is_default = _resolve_checkpoint(checkpoint)
    if path.is_dir():
        model, model_cfg, tokenizer = _load_converted(path)
    else:
        text = text_encoder_source(text_encoder)
        model, model_cfg, tokenizer = _cached_or_convert(path, text, refetch=is_default)
    preprocess = open_clip.image_transform(
        int(model_cfg["vision_cfg"]["image_size"]), is_train=False, **PREPROCESS_CFG
    )
    return MMKDModel(model, preprocess, tokenizer, dev, prec, source=str(path))
