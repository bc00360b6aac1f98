"""From an MMKD-CLIP checkpoint to a model, and a cached converted copy (pickle-free) of it."""

from __future__ import annotations

import contextlib
import copy
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
_OPENAI = {"mean": open_clip.OPENAI_DATASET_MEAN, "std": open_clip.OPENAI_DATASET_STD}
PREPROCESS_CFG = {**_OPENAI, "interpolation": "bicubic", "resize_mode": "shortest"}


def text_encoder_source(text_encoder: str | os.PathLike | None = None) -> str:
    """The text encoder: the argument, ``MMKD_TEXT_ENCODER``, a kit's copy or BiomedBERT's hub id.

    Example:
        >>> text_encoder_source()
        'microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract'
    """
    env = os.environ.get("MMKD_TEXT_ENCODER", "").strip()
    kit = config.cache_dir() / config.TEXT_ENCODER_DIR
    default = str(kit) if (kit / "config.json").is_file() else config.DEFAULT_TEXT_ENCODER
    name = str(text_encoder if text_encoder is not None else env) or default
    if Path(name).expanduser().is_dir():
        return str(Path(name).expanduser().resolve())
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or "\\" in name:
        raise TextEncoderError(
            f"text_encoder={name!r} looks like a folder, but no such folder exists: pass a "
            "folder with config.json and the tokenizer files, or a hub id."
        )
    return name


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
            f"({(str(err).strip() or type(err).__name__).splitlines()[0]}). Offline, pass "
            "text_encoder= (or set MMKD_TEXT_ENCODER) to a folder with BiomedBERT's config.json, "
            "vocab.txt and tokenizer_config.json."
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
            f"{source or 'The checkpoint'} does not fit the MMKD-CLIP architecture read from "
            f"its shapes ({err}): pass a checkpoint of the MMKD-CLIP family."
        ) from None
    # BERT's non-persistent buffers are in no state dict; left on meta, text goes wrong silently.
    for module in model.modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf.device.type != "meta":
                continue
            if name not in ("position_ids", "token_type_ids"):  # pragma: no cover
                raise CheckpointError(f"Internal: buffer {name} was not restored; report it.")
            ids = torch.arange(buf.shape[-1], dtype=buf.dtype).expand(buf.shape).clone()
            value = ids if name == "position_ids" else torch.zeros_like(ids)
            module.register_buffer(name, value, persistent=False)  # as it was
    return model


def _load_converted(folder: Path) -> tuple[Any, dict, HFTokenizer]:
    """A converted folder's model, ``model_cfg`` and tokenizer."""
    if missing := [n for n in (CONFIG_NAME, WEIGHTS_NAME) if not (folder / n).is_file()]:
        raise CheckpointError(
            f"{folder} is not a converted MMKD-CLIP folder: {missing[0]} is missing. "
            "Pass the original .pth file instead."
        )
    try:
        model_cfg = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))["model_cfg"]
        text_cfg = model_cfg["text_cfg"]
        state_dict = load_file(folder / WEIGHTS_NAME)  # memory-mapped
    except (SafetensorError, OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"The converted folder {folder} is broken ({err}): load the original .pth instead."
        ) from None
    # The folder carries its own text config and tokenizer: prefer them to a stored path.
    own = (folder / "config.json").is_file()
    text = str(folder.resolve()) if own else str(text_cfg.get("hf_model_name", ""))
    text_cfg.update(hf_model_name=text, hf_tokenizer_name=text, hf_model_pretrained=False)
    _, tokenizer = load_text_encoder(text, text_cfg["context_length"])
    return build_model(model_cfg, state_dict, str(folder / WEIGHTS_NAME)), model_cfg, tokenizer


def _save_converted(model: Any, model_cfg: dict, folder: Path, source: dict, hf: tuple) -> None:
    """Cache the converted copy: under a lock, written aside, renamed into place; else warn."""
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
            cfg = copy.deepcopy(model_cfg)
            here = str(folder.resolve())
            cfg["text_cfg"].update(hf_model_name=here, hf_tokenizer_name=here)
            preprocess_cfg = {"size": cfg["vision_cfg"]["image_size"], **PREPROCESS_CFG}
            full = {"model_cfg": cfg, "preprocess_cfg": preprocess_cfg, "mmkd_source": source}
            (tmp / CONFIG_NAME).write_text(json.dumps(full, indent=2), encoding="utf-8")
            os.replace(tmp, folder)
    except (OSError, Timeout) as err:
        warnings.warn(
            f"Could not cache a converted copy in {folder.parent} ({err}); the next load reads "
            f"the .pth again. Use a writable MMKD_HOME, or a kit from `{config.KIT_COMMAND}`.",
            stacklevel=4,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def converted_folder(checkpoint: str | os.PathLike, text_encoder: str | None = None) -> Path:
    """Where the converted copy of ``checkpoint`` is cached; a changed file gets a new one.
    The released files in the cache folder count by name and size (a copied kit keeps its copies).

    Example:
        >>> converted_folder(tiny_checkpoint, tiny_text_encoder).parent.name
        'converted'
    """
    home, path = config.cache_dir().resolve(), Path(checkpoint).expanduser().resolve()
    st, text = path.stat(), text_encoder_source(text_encoder)
    rel = path.relative_to(home).as_posix() if home in path.parents else None
    released = rel in (config.CHECKPOINT_NAME, f"unimed/{config.UNIMED_FILE}")  # SHA-checked
    ident = f"~/{rel}|{st.st_size}" if released else f"{path}|{st.st_size}|{st.st_mtime_ns}"
    if home in Path(text).parents:
        text = f"~/{Path(text).relative_to(home).as_posix()}"
    name = hashlib.sha256(f"{ident}|{text}".encode()).hexdigest()[:16]
    return config.cache_dir() / "converted" / name


def _read_or_refetch(path: Path, refetch: bool) -> tuple[dict[str, torch.Tensor], Path]:
    """Read the checkpoint; a corrupt default download is kept as ``.corrupt`` and fetched again."""
    seen = file_identity(path)
    try:
        return read_checkpoint(path), path
    except CheckpointError as err:
        if not refetch:
            raise
        problem = f"The cached checkpoint {path} is corrupt ({err})"
    try:
        aside = set_aside(path, seen)  # None: another process replaced it meanwhile
    except OSError as exc:
        raise CheckpointError(
            f"{problem}, and it could not be moved aside ({exc.strerror or exc}). Delete it, "
            "or set MMKD_HOME to a writable folder, and run again to download it afresh."
        ) from None
    if aside is not None:
        warnings.warn(f"{problem}. It was moved to {aside} and is downloaded again.", stacklevel=4)
    path = download_checkpoint(path)
    return read_checkpoint(path), path


def _cached_or_convert(path: Path, text: str, refetch: bool) -> tuple[Any, dict, HFTokenizer]:
    """The converted copy of ``path``, else ``path`` converted and cached (broken: rebuilt)."""
    folder, aside = converted_folder(path, text), None
    if folder.is_dir():
        try:
            return _load_converted(folder)
        except (CheckpointError, TextEncoderError) as err:
            warnings.warn(f"{folder} could not be used ({err}); converting again.", stacklevel=3)
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
        source = {"checkpoint": str(path.resolve()), "text_encoder": text}
        _save_converted(model, model_cfg, folder, source, hf)
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
    from_env = config.env_path("MMKD_CHECKPOINT") if checkpoint is None else None
    default = checkpoint is None and from_env is None  # re-fetched if corrupt
    path = config.default_checkpoint_path() if default else from_env or Path(checkpoint)
    if default and not path.is_file():
        path = download_checkpoint(path)
    elif not (path := path.expanduser()).exists():
        what = f"MMKD_CHECKPOINT points to {path}, which" if from_env else f"Checkpoint {path}"
        raise CheckpointError(
            f"{what} does not exist: fix the path, or use the released weights "
            "(checkpoint=None, MMKD_CHECKPOINT unset)."
        )
    if path.is_dir():
        model, model_cfg, tokenizer = _load_converted(path)
    else:
        text = text_encoder_source(text_encoder)
        model, model_cfg, tokenizer = _cached_or_convert(path, text, refetch=default)
    size = int(model_cfg["vision_cfg"]["image_size"])
    preprocess = open_clip.image_transform(size, is_train=False, **PREPROCESS_CFG)
    return MMKDModel(model, preprocess, tokenizer, dev, prec, source=str(path))
