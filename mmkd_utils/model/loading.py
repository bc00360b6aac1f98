"""Loading MMKD-CLIP into open_clip's own ``CustomTextCLIP`` and using it.

:func:`load_model` reads the architecture from the checkpoint's tensor shapes, builds
the model without random initialisation (on the ``meta`` device), assigns the weights,
and caches a converted copy in open_clip's local-dir layout (``open_clip_config.json``
+ ``open_clip_model.safetensors`` + the text encoder's config and tokenizer files), so
later loads are fast and pickle-free, and the same folder loads with plain
``open_clip.create_model_and_transforms("local-dir:<folder>")``.

Introduced in ``notebooks/01_quickstart.ipynb``.

Example:
    >>> from mmkd_utils import load_model
    >>> clip = load_model()  # doctest: +SKIP
    >>> clip.zero_shot(["xray.png"], ["A chest X-ray.", "A fundus photograph."])  # doctest: +SKIP
    tensor([[0.9712, 0.0288]])
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

import mmkd_utils.config as paths
from mmkd_utils.errors import (
    CheckpointError,
    ImageLoadError,
    PrecisionFallbackWarning,
    PromptError,
    SkippedImagesWarning,
    TextEncoderError,
)
from mmkd_utils.images.decode import ImageInput, to_rgb
from mmkd_utils.model.checkpoint import (
    check_keys,
    check_text_config,
    model_config_from_state_dict,
    read_checkpoint,
    text_shapes_from_state_dict,
    to_open_clip_keys,
)
from mmkd_utils.model.classifier import ZeroShotClassifier, build_classifier
from mmkd_utils.model.device import (
    auto_image_batch_size,
    autocast_dtype,
    preprocess_threads,
    resolve_device,
    resolve_precision,
    to_device,
)
from mmkd_utils.prompts import check_prompts

#: open_clip's names of the converted copy's files.
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
SOURCE_NAME = "mmkd_source.json"
#: Preprocessing of the published model: OpenAI CLIP mean/std, bicubic, centre crop.
PREPROCESS_CFG = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}
DEFAULT_IMAGE_BATCH = 32
DEFAULT_TEXT_BATCH = 64


class MMKDModel:
    """An MMKD-CLIP model ready for inference: the open_clip model and what it needs.

    Attributes: ``model`` (open_clip ``CustomTextCLIP``), ``preprocess`` (PIL image to
    tensor), ``tokenizer`` (open_clip ``HFTokenizer``, context length 256), ``device``,
    ``precision`` and ``source`` (the file or folder the weights came from).

    Example:
        >>> clip = load_model("tests/fixtures/tiny_upstream/checkpoint.pt",
        ...                   text_encoder="tests/fixtures/tiny_upstream/tiny-biomedbert")
        ... # doctest: +SKIP
        >>> clip.encode_texts(["A chest X-ray."]).shape  # doctest: +SKIP
        torch.Size([1, 64])
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Any,
        tokenizer: Any,
        device: torch.device,
        precision: str = "fp32",
        source: str = "",
    ) -> None:
        self.model = model.to(device).eval()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.device = device
        self.precision = precision
        self.source = source
        self._classifiers: dict[tuple, ZeroShotClassifier] = {}
        self._fingerprint: str | None = None
        self._precision_warned = False
        #: Default image batch size: from free GPU memory on CUDA, 32 elsewhere.
        self.image_batch_size = auto_image_batch_size(device)
        self._preprocess_pool: ThreadPoolExecutor | None = None

    def __repr__(self) -> str:
        return (
            f"MMKDModel(source={self.source!r}, device={str(self.device)!r}, "
            f"precision={self.precision!r}, embed_dim={self.embed_dim})"
        )

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the weights (every tensor's name, shape, dtype and bytes) and preprocessing.

        Two models with the same fingerprint give the same embeddings, so caches of
        embeddings are keyed by it. Computed once per model (about a second for the
        released weights on a CPU).

        Example:
            >>> clip.fingerprint[:12]  # doctest: +SKIP
            '3f9a0c1b2d4e'
        """
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for name, tensor in sorted(self.model.state_dict().items()):
                t = tensor.detach().to("cpu").contiguous()
                digest.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
                digest.update(t.reshape(-1).view(torch.uint8).numpy())
            digest.update(repr(self.preprocess).encode())
            self._fingerprint = digest.hexdigest()
        return self._fingerprint

    @property
    def embed_dim(self) -> int:
        """Size of the joint image-text embedding space (512 for the released model)."""
        return int(self.model.visual.proj.shape[1])

    @property
    def logit_scale(self) -> float:
        """The learned temperature ``exp(logit_scale)`` that scales cosine similarities."""
        return float(self.model.logit_scale.detach().float().exp())

    def _autocast(self) -> contextlib.AbstractContextManager:
        dtype = autocast_dtype(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def _forward(
        self, encode: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor
    ) -> torch.Tensor:
        """``encode(batch)`` as float32 under this model's precision, never NaN from fp16/bf16.

        If a half-precision forward pass gives NaN or infinite values (an overflow), the
        batch is computed again in fp32, with one :class:`PrecisionFallbackWarning` per
        model.
        """
        with self._autocast():
            feats = encode(batch).float()
        if autocast_dtype(self.precision) is None or bool(torch.isfinite(feats).all()):
            return feats
        if not self._precision_warned:
            self._precision_warned = True
            warnings.warn(
                PrecisionFallbackWarning(
                    f"A {self.precision} forward pass gave NaN or infinite values (an "
                    "overflow in half precision); such batches are computed again in fp32. "
                    "To always use fp32, pass precision='fp32' to load_model."
                ),
                stacklevel=4,
            )
        return encode(batch).float()

    # -- images -----------------------------------------------------------------------
    def encode_images(
        self,
        images: ImageInput | Sequence[ImageInput],
        batch_size: int | None = None,
        *,
        on_error: str = "raise",
    ) -> torch.Tensor:
        """Embed images (paths, PIL or numpy): float32 CPU tensor [N, D], L2-normalised.

        Each image is converted to RGB first (:func:`mmkd_utils.images.decode.to_rgb`), so
        16-bit and float images are rescaled, not clipped. The images of a batch are
        decoded and preprocessed on several threads (one per core, see
        :func:`~mmkd_utils.model.device.preprocess_threads`), with the same pixels as one by
        one. ``on_error="skip"`` leaves out images that cannot be read and reports each
        with its reason in one :class:`~mmkd_utils.errors.SkippedImagesWarning` (whose
        ``failures`` give the indices); the rows returned are those of the images that
        worked, in order.

        Example:
            >>> clip.encode_images(["xray.png", "ct.jpg"]).shape  # doctest: +SKIP
            torch.Size([2, 512])
        """
        items = _as_image_list(images)
        size = _check_batch_size(batch_size, self.image_batch_size)
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error={on_error!r}: use 'raise' or 'skip'.")
        out, failures = [], []
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            pixels = []
            prepared = _prepare_images(
                chunk, self.preprocess, stop_at_error=on_error == "raise", pool=self._pool()
            )
            for index, (image, result) in enumerate(zip(chunk, prepared, strict=True), start):
                if isinstance(result, ImageLoadError):
                    failures.append((index, _image_name(image), str(result)))
                else:
                    pixels.append(result)
            if pixels:
                out.append(self.encode_pixels(torch.stack(pixels)))
            del prepared, pixels  # not kept while the next batch is prepared
        if failures:
            _report_skipped(failures, len(items), all_failed=not out)
        return torch.cat(out)

    def _pool(self) -> ThreadPoolExecutor | None:
        """This model's threads for decoding and preprocessing (None on a single core).

        Made once and kept: the same threads each batch reuse the same allocator arenas,
        where a new pool per batch let resident memory creep up by over 200 MB in a
        dozen batches of the full-size model.
        """
        threads = preprocess_threads()
        if threads <= 1:
            return None
        if self._preprocess_pool is None:
            self._preprocess_pool = ThreadPoolExecutor(threads, "mmkd-preprocess")
        return self._preprocess_pool

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embed an already preprocessed batch [N, 3, H, W]: float32 CPU, L2-normalised.

        Example:
            >>> clip.encode_pixels(clip.preprocess(img)[None]).shape  # doctest: +SKIP
            torch.Size([1, 512])
        """
        with torch.inference_mode():
            feats = self._forward(self.model.encode_image, to_device(pixels, self.device))
            out = F.normalize(feats, dim=-1).cpu()
        return out.clone()  # an ordinary tensor, usable outside inference mode

    # -- texts ------------------------------------------------------------------------
    def tokenize(self, texts: str | Iterable[str]) -> torch.Tensor:
        """Token ids [M, L] padded to the longest prompt (L ≤ 256), not to 256.

        The ids are those of the published tokenisation (whitespace cleaning, BERT
        WordPiece, truncation at 256) with the all-padding columns removed; a prompt
        longer than 256 tokens is truncated with a warning that names it.

        Example:
            >>> clip.tokenize(["A chest X-ray."]).shape  # doctest: +SKIP
            torch.Size([1, 7])
        """
        prompts = check_prompts(texts)
        context = self.tokenizer.context_length
        hf_tok = self.tokenizer.tokenizer
        cleaned = [self.tokenizer.clean_fn(t) for t in prompts]
        lengths = [len(ids) for ids in hf_tok(cleaned, add_special_tokens=True)["input_ids"]]
        for i, (text, n) in enumerate(zip(prompts, lengths, strict=True)):
            if n > context:
                short = text if len(text) <= 60 else text[:57] + "..."
                warnings.warn(
                    f"Prompt {i} ({short!r}) has {n} tokens; only the first {context} are "
                    "used. Shorten it to keep its end.",
                    stacklevel=2,
                )
        ids = self.tokenizer(prompts)
        return _trim_padding(ids, hf_tok.pad_token_id)

    def encode_texts(
        self, texts: str | Iterable[str], batch_size: int | None = None
    ) -> torch.Tensor:
        """Embed prompts: float32 CPU tensor [M, D], L2-normalised.

        Each batch is padded to its longest prompt, which gives the same embeddings as
        the published 256-token padding at a fraction of the cost.

        Example:
            >>> clip.encode_texts(["A chest X-ray.", "A fundus photograph."]).shape
            ... # doctest: +SKIP
            torch.Size([2, 512])
        """
        ids = self.tokenize(texts)
        size = _check_batch_size(batch_size, DEFAULT_TEXT_BATCH)
        pad = self.tokenizer.tokenizer.pad_token_id
        out = []
        with torch.inference_mode():
            for start in range(0, ids.shape[0], size):
                chunk = to_device(_trim_padding(ids[start : start + size], pad), self.device)
                feats = self._forward(self.model.encode_text, chunk)
                out.append(F.normalize(feats, dim=-1).cpu())
            result = torch.cat(out)
        return result.clone()  # an ordinary tensor, usable outside inference mode

    # -- zero-shot --------------------------------------------------------------------
    def classifier(
        self,
        classes: str | Sequence[str] | Mapping[str, Sequence[str]],
        templates: Sequence[str] | None = None,
    ) -> ZeroShotClassifier:
        """A zero-shot classifier: per class, the average of its normalised prompt embeddings.

        ``classes`` is a task name of the prompt banks (its classes, synonyms and
        templates; see :func:`mmkd_utils.prompts.list_tasks`), a list of class names, or a
        mapping ``{class: [synonyms]}``. ``templates`` contain ``{}`` where the name goes
        (default for a task: the task's templates; otherwise the name alone). Results are
        cached on this model, so asking again costs nothing.

        Example:
            >>> clf = clip.classifier(["pneumonia", "normal"], ["A chest X-ray of {}."])
            ... # doctest: +SKIP
            >>> clip.zero_shot(["xray.png"], clf).shape  # doctest: +SKIP
            torch.Size([1, 2])
        """
        name = None
        if isinstance(classes, str):
            from mmkd_utils.prompts import get_task

            task = get_task(classes)
            name, classes = task.name, task.synonyms
            templates = task.templates if templates is None else templates
        key = (
            name,
            tuple((k, tuple(v)) for k, v in classes.items())
            if isinstance(classes, Mapping)
            else tuple(classes),
            None if templates is None else tuple(templates),
        )
        if key not in self._classifiers:
            self._classifiers[key] = build_classifier(
                self.encode_texts, classes, templates, name=name
            )
        return self._classifiers[key]

    # -- zero-shot --------------------------------------------------------------------
    def zero_shot(
        self,
        images: ImageInput | Sequence[ImageInput],
        prompts: str | Iterable[str] | ZeroShotClassifier,
        *,
        on_error: str = "raise",
    ) -> torch.Tensor:
        """Probabilities [N, M] = softmax(exp(logit_scale) · image · textᵀ), as the published demo.

        Row i says how strongly image i matches each prompt (or each class of a
        :class:`~mmkd_utils.model.classifier.ZeroShotClassifier`); each row sums to 1.
        ``on_error="skip"`` works as in :meth:`encode_images`.

        Example:
            >>> probs = clip.zero_shot(["xray.png"], ["A chest X-ray.", "An MRI."])
            ... # doctest: +SKIP
            >>> probs.sum(dim=1)  # doctest: +SKIP
            tensor([1.])
        """
        if isinstance(prompts, ZeroShotClassifier):
            text_features = prompts.weights
            if text_features.shape[1] != self.embed_dim:
                raise PromptError(
                    f"The classifier has {text_features.shape[1]}-d weights but this model "
                    f"embeds in {self.embed_dim} dimensions: build it with this model."
                )
        else:
            text_features = self.encode_texts(check_prompts(prompts))
        with torch.no_grad():
            image_features = self.encode_images(images, on_error=on_error)
            logits = self.logit_scale * image_features @ text_features.T
            return logits.softmax(dim=-1)


# -- helpers --------------------------------------------------------------------------


def _as_image_list(images: Any) -> list[ImageInput]:
    if isinstance(images, (str, bytes, os.PathLike, Image.Image, np.ndarray)):
        return [images]
    try:
        items = list(images)
    except TypeError:
        raise ImageLoadError(
            f"images must be a path, a PIL image, a numpy array or a list of them, not "
            f"{type(images).__name__}."
        ) from None
    if not items:
        raise ImageLoadError("images is empty: pass at least one image.")
    return items


def _prepare_images(
    images: Sequence[ImageInput],
    preprocess: Callable[[Image.Image], torch.Tensor],
    *,
    stop_at_error: bool,
    pool: ThreadPoolExecutor | None = None,
) -> list[torch.Tensor | ImageLoadError]:
    """``preprocess(to_rgb(image))`` for each image, in order, on ``pool``'s threads.

    An unreadable image gives its :class:`ImageLoadError` in its place; with
    ``stop_at_error`` the first one (in the images' order) is raised instead, and images
    not yet started are not decoded. Any other exception is raised as it is. An object
    listed more than once is prepared once, so no two threads ever read the same PIL
    image (a lazily opened one would share its file).
    """

    def one(image: ImageInput) -> torch.Tensor | ImageLoadError:
        try:
            return preprocess(to_rgb(image))
        except ImageLoadError as err:
            if stop_at_error:
                raise
            return err

    slot: dict[int, int] = {}  # id of each distinct object -> its place in `unique`
    unique: list[ImageInput] = []
    for image in images:
        if id(image) not in slot:
            slot[id(image)] = len(unique)
            unique.append(image)
    if pool is None or len(unique) < 2:
        done = [one(image) for image in unique]
    else:
        futures = [pool.submit(one, image) for image in unique]
        try:
            done = [future.result() for future in futures]
        except BaseException:  # an error or an interrupt: drop the images not started yet
            for future in futures:
                future.cancel()
            wait(futures)  # and let those being prepared finish before raising
            raise
    return [done[slot[id(image)]] for image in images]


def _image_name(image: Any) -> str:
    if isinstance(image, (str, bytes, os.PathLike)):
        return os.fsdecode(image)
    return f"<{type(image).__name__}>"


def _report_skipped(failures: list[tuple[int, str, str]], total: int, all_failed: bool) -> None:
    lines = "\n".join(f"  [{i}] {name}: {reason}" for i, name, reason in failures)
    if all_failed:
        raise ImageLoadError(f"None of the {total} images could be read:\n{lines}")
    warnings.warn(
        SkippedImagesWarning(
            f"Skipped {len(failures)} of {total} images that could not be read:\n{lines}",
            failures,
        ),
        stacklevel=3,
    )


def _check_batch_size(batch_size: int | None, default: int) -> int:
    if batch_size is None:
        return default
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r}: pass a positive whole number or None.")
    return batch_size


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _trim_padding(ids: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Drop the trailing columns that are padding in every row."""
    real = (ids != pad_id).any(dim=0).nonzero()
    length = int(real.max()) + 1 if real.numel() else 1
    return ids[:, :length]


def _conversion_key(checkpoint: Path, text_encoder: str) -> str:
    st = checkpoint.stat()
    ident = f"{checkpoint.resolve()}|{st.st_size}|{st.st_mtime_ns}|{text_encoder}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def _text_encoder_source(text_encoder: str | os.PathLike | None) -> str:
    if text_encoder is None:
        text_encoder = os.environ.get("MMKD_TEXT_ENCODER", "").strip() or paths.DEFAULT_TEXT_ENCODER
    text_encoder = str(text_encoder)
    local = Path(text_encoder).expanduser()
    if local.is_dir():
        return str(local.resolve())
    looks_like_path = (
        text_encoder.startswith((".", "/", "~", "\\"))
        or text_encoder.count("/") > 1
        or "\\" in text_encoder
    )
    if looks_like_path:
        raise TextEncoderError(
            f"text_encoder={text_encoder!r} looks like a folder, but no such folder exists. "
            "Pass a folder with config.json and the tokenizer files, or a Hugging Face hub "
            "id like 'microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract'."
        )
    return text_encoder


def _load_text_config(source: str) -> Any:
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as err:
        raise TextEncoderError(
            f"Could not load the text encoder config from {source!r} ({str(err).splitlines()[0]}). "
            "Without network access, download the BiomedBERT config and tokenizer files "
            "(config.json, vocab.txt, tokenizer_config.json) into a folder and pass "
            "text_encoder=<folder> or set MMKD_TEXT_ENCODER."
        ) from None


def _load_tokenizer(source: str, context_length: int) -> Any:
    from open_clip.tokenizer import HFTokenizer

    try:
        return HFTokenizer(source, context_length=context_length)
    except (OSError, ValueError) as err:
        raise TextEncoderError(
            f"Could not load the tokenizer from {source!r} ({str(err).splitlines()[0]}). "
            "Pass text_encoder=<folder with vocab.txt and tokenizer_config.json> or set "
            "MMKD_TEXT_ENCODER."
        ) from None


def _build_and_assign(
    model_cfg: dict[str, Any], state_dict: dict[str, torch.Tensor], source: str
) -> torch.nn.Module:
    """Build ``CustomTextCLIP`` on the meta device and assign the (open_clip-keyed) weights."""
    from open_clip import CustomTextCLIP

    with torch.device("meta"):
        model = CustomTextCLIP(**model_cfg)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    check_keys(expected, state_dict, source=source)
    model.load_state_dict(state_dict, strict=True, assign=True)
    _restore_buffers(model)
    return model


def _restore_buffers(model: torch.nn.Module) -> None:
    """Recreate non-persistent buffers that ``assign=True`` leaves on the meta device.

    BERT's ``position_ids`` and ``token_type_ids`` are not in any state dict; left on
    ``meta`` the forward pass would still run and silently return wrong embeddings.
    """
    for module_name, module in model.named_modules():
        for name, buf in list(module.named_buffers(recurse=False)):
            if buf is None or buf.device.type != "meta":
                continue
            if name == "position_ids":
                value = torch.arange(buf.shape[-1], dtype=buf.dtype).expand(buf.shape)
            elif name == "token_type_ids":
                value = torch.zeros(buf.shape, dtype=buf.dtype)
            else:  # pragma: no cover - would mean a new open_clip/transformers layout
                raise CheckpointError(
                    f"Internal: buffer {module_name}.{name} was not restored after loading; "
                    "please report this with your open_clip and transformers versions."
                )
            persistent = name not in module._non_persistent_buffers_set
            module.register_buffer(name, value.clone(), persistent=persistent)
    leftover = [n for n, t in model.state_dict().items() if t.device.type == "meta"]
    if leftover:  # pragma: no cover - guarded by the strict load above
        raise CheckpointError(f"Internal: tensors still unset after loading: {leftover[:5]}")


def _make_preprocess(image_size: int) -> Any:
    from open_clip import image_transform

    return image_transform(
        image_size,
        is_train=False,
        mean=tuple(PREPROCESS_CFG["mean"]),
        std=tuple(PREPROCESS_CFG["std"]),
        interpolation=PREPROCESS_CFG["interpolation"],
        resize_mode=PREPROCESS_CFG["resize_mode"],
    )


def _load_from_pth(
    checkpoint: Path, text_source: str, state_dict: dict[str, torch.Tensor] | None = None
) -> tuple[torch.nn.Module, dict, Any]:
    if state_dict is None:
        state_dict = read_checkpoint(checkpoint)
    model_cfg = model_config_from_state_dict(state_dict, text_source)
    hf_config = _load_text_config(text_source)
    check_text_config(text_shapes_from_state_dict(state_dict), hf_config, text_source)
    model = _build_and_assign(model_cfg, to_open_clip_keys(state_dict), str(checkpoint))
    return model, model_cfg, hf_config


def load_converted(folder: str | os.PathLike) -> tuple[torch.nn.Module, dict, str]:
    """Load a converted folder (open_clip local-dir layout): model, model_cfg, text source.

    Example:
        >>> model, cfg, text = load_converted("~/.cache/mmkd-clip/converted/0123abcd")
        ... # doctest: +SKIP
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder).expanduser()
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for needed in (config_path, weights_path):
        if not needed.is_file():
            raise CheckpointError(
                f"{folder} is not a converted MMKD-CLIP folder: {needed.name} is missing. "
                "Pass the original .pth file instead."
            )
    try:
        model_cfg = json.loads(config_path.read_text(encoding="utf-8"))["model_cfg"]
        text_cfg = model_cfg["text_cfg"]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"{config_path} is not a valid open_clip config ({err}).") from None
    # The folder carries its own text config and tokenizer; prefer them to a stored path.
    text_source = (
        str(folder.resolve())
        if (folder / "config.json").is_file()
        else str(text_cfg.get("hf_model_name", ""))
    )
    text_cfg["hf_model_name"] = text_cfg["hf_tokenizer_name"] = text_source
    text_cfg["hf_model_pretrained"] = False
    try:
        state_dict = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(
            f"{weights_path} could not be read ({err}); delete the folder to convert again."
        ) from None
    _load_text_config(text_source)
    model = _build_and_assign(model_cfg, state_dict, str(weights_path))
    return model, model_cfg, text_source


def save_converted(
    model: torch.nn.Module,
    model_cfg: dict[str, Any],
    hf_config: Any,
    tokenizer: Any,
    folder: Path,
    source_info: dict[str, Any],
) -> Path:
    """Write a converted copy atomically: into a temporary folder, then renamed into place.

    If ``folder`` already exists (another process finished first) it is kept as it is.

    Example:
        >>> save_converted(model, cfg, hf_config, tokenizer, Path("out"), {})  # doctest: +SKIP
    """
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_NAME))
        hf_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        cfg = json.loads(json.dumps(model_cfg))
        cfg["text_cfg"]["hf_model_name"] = cfg["text_cfg"]["hf_tokenizer_name"] = str(
            folder.resolve()
        )
        config = {
            "model_cfg": cfg,
            "preprocess_cfg": {"size": cfg["vision_cfg"]["image_size"], **PREPROCESS_CFG},
        }
        (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2), encoding="utf-8")
        (tmp / SOURCE_NAME).write_text(json.dumps(source_info, indent=2), encoding="utf-8")
        if folder.exists():
            return folder
        os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _resolve_checkpoint(checkpoint: str | os.PathLike | None) -> tuple[Path, bool]:
    """The checkpoint to load, and whether it is the default cached download.

    Only the default cached file (no ``checkpoint``, no ``MMKD_CHECKPOINT``) is fetched
    again when it turns out to be corrupt; a file the user named is never touched.
    """
    if checkpoint is None:
        checkpoint = paths.env_path("MMKD_CHECKPOINT")
        if checkpoint is not None and not checkpoint.exists():
            raise CheckpointError(
                f"MMKD_CHECKPOINT points to {checkpoint}, which does not exist: fix or unset it."
            )
    if checkpoint is None:
        default = paths.default_checkpoint_path()
        if default.is_file():
            return default, True
        from mmkd_utils.download import download_checkpoint

        return download_checkpoint(default), True
    path = Path(checkpoint).expanduser()
    if not path.exists():
        raise CheckpointError(
            f"Checkpoint {path} does not exist. Pass the path of MMKD_B16.pth (or of a "
            "converted folder), or leave checkpoint=None to download the released weights."
        )
    return path, False


def _read_or_refetch(path: Path, refetch: bool) -> tuple[dict[str, torch.Tensor], Path]:
    """Read the checkpoint; a corrupt default download is set aside and downloaded again.

    With ``refetch`` (the default cached file only), a file that fails
    :func:`~mmkd_utils.model.checkpoint.read_checkpoint` is renamed ``<name>.corrupt`` (kept,
    never deleted) and fetched again with :func:`~mmkd_utils.download.download_checkpoint`.
    """
    from mmkd_utils.download import download_checkpoint, file_identity, set_aside

    seen = file_identity(path)
    try:
        return read_checkpoint(path), path
    except CheckpointError as err:
        if not refetch:
            raise
        problem = str(err)
    try:
        aside = set_aside(path, seen)
    except OSError as exc:
        raise CheckpointError(
            f"The cached checkpoint {path} is corrupt ({problem}), and it could not be moved "
            f"aside ({exc.strerror or exc}). Delete it, or set MMKD_HOME to a writable folder, "
            "and run again to download it afresh."
        ) from None
    if aside is not None:
        warnings.warn(
            f"The cached checkpoint {path} is corrupt ({problem}). It was moved to {aside} "
            "(delete that file once you no longer need it) and is downloaded again.",
            stacklevel=4,
        )
    path = download_checkpoint(path)  # another process may have fetched it meanwhile
    return read_checkpoint(path), path


def load_model(
    checkpoint: str | os.PathLike | None = None,
    *,
    text_encoder: str | os.PathLike | None = None,
    device: str | torch.device = "auto",
    precision: str = "auto",
) -> MMKDModel:
    """Load MMKD-CLIP (or any checkpoint of its family) as an :class:`MMKDModel`.

    ``checkpoint``: a ``.pth`` file, a converted folder, or None for ``MMKD_CHECKPOINT``
    or else the released weights (downloaded into ``MMKD_HOME`` at first use).
    ``text_encoder``: hub id or local folder of the BiomedBERT config and tokenizer
    (default ``MMKD_TEXT_ENCODER`` or the hub id); its weights are never downloaded.
    ``device``: ``"auto"`` (CUDA, MPS, CPU) or a torch device. ``precision``: ``"auto"``
    (autocast bf16/fp16 on CUDA, fp32 elsewhere), ``"fp32"``, ``"fp16"`` or ``"bf16"``.

    Example:
        >>> clip = load_model()  # doctest: +SKIP
        >>> clip
        MMKDModel(source='.../MMKD_B16.pth', device='cpu', precision='fp32', embed_dim=512)
    """
    import mmkd_utils.model.registry as registry  # a model name: see list_models()

    if registry.is_model_name(checkpoint):
        kwargs = {"text_encoder": text_encoder, "device": device, "precision": precision}
        return registry.load_registered(checkpoint, **kwargs)
    dev = resolve_device(device)
    prec = resolve_precision(precision, dev)
    path, cached_default = _resolve_checkpoint(checkpoint)
    if path.is_dir():
        model, model_cfg, text_source = load_converted(path)
    else:
        text_source = _text_encoder_source(text_encoder)
        model, model_cfg, text_source = _load_cached_or_convert(
            path, text_source, refetch_corrupt=cached_default
        )
    tokenizer = _load_tokenizer(text_source, int(model_cfg["text_cfg"]["context_length"]))
    preprocess = _make_preprocess(int(model_cfg["vision_cfg"]["image_size"]))
    return MMKDModel(model, preprocess, tokenizer, dev, prec, source=str(path))


def converted_folder(checkpoint: str | os.PathLike, text_encoder: str | None = None) -> Path:
    """Where the converted copy of ``checkpoint`` is cached (it may not exist yet).

    Example:
        >>> converted_folder("MMKD_B16.pth").parent.name  # doctest: +SKIP
        'converted'
    """
    path = Path(checkpoint).expanduser()
    key = _conversion_key(path, _text_encoder_source(text_encoder))
    return paths.cache_dir() / "converted" / key


def _load_cached_or_convert(
    path: Path, text_source: str, *, refetch_corrupt: bool = False
) -> tuple[torch.nn.Module, dict[str, Any], str]:
    """Load the converted copy of ``path``, or convert ``path`` and cache the copy.

    A converted copy that cannot be used is moved aside and rebuilt; it is deleted only
    once the new copy is in place, and put back if the conversion fails, so a failed
    operation never loses a cached copy.
    """
    folder = paths.cache_dir() / "converted" / _conversion_key(path, text_source)
    aside = None
    if folder.is_dir():
        try:
            return load_converted(folder)
        except (CheckpointError, TextEncoderError) as err:
            warnings.warn(
                f"The converted copy {folder} could not be used ({err}); converting {path} again.",
                stacklevel=3,
            )
            aside = _set_aside(folder)
    try:
        state_dict, path = _read_or_refetch(path, refetch_corrupt)
        key = _conversion_key(path, text_source)
        if key != folder.name:  # fetched again: a new file, so a new converted copy
            _put_back(aside, folder)
            aside, folder = None, folder.with_name(key)
        model, model_cfg, hf_config = _load_from_pth(path, text_source, state_dict)
        del state_dict
        _save_conversion(model, model_cfg, hf_config, path, text_source, folder)
    except BaseException:
        _put_back(aside, folder)
        raise
    if folder.is_dir():
        _remove(aside)
    else:
        _put_back(aside, folder)
    return model, model_cfg, text_source


def _save_conversion(
    model: torch.nn.Module,
    model_cfg: dict[str, Any],
    hf_config: Any,
    path: Path,
    text_source: str,
    folder: Path,
) -> None:
    """Cache the converted copy in ``folder`` (once, under a lock); warn if impossible."""
    from filelock import FileLock, Timeout

    st = path.stat()
    info = {
        "checkpoint": str(path.resolve()),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "text_encoder": text_source,
    }
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(folder) + ".lock", timeout=600):
            if not folder.is_dir():
                context = int(model_cfg["text_cfg"]["context_length"])
                tokenizer = _load_tokenizer(text_source, context)
                save_converted(model, model_cfg, hf_config, tokenizer, folder, info)
    except (OSError, Timeout) as err:
        warnings.warn(
            f"Could not cache a converted copy in {folder.parent} ({err}); the model works, "
            "but the next load will read the .pth again. Set MMKD_HOME to a writable folder.",
            stacklevel=4,
        )


def _set_aside(folder: Path) -> Path | None:
    """Rename a converted copy that could not be used to a hidden name next to it.

    Returns the new name, or None if it could not be moved (then it stays where it is
    and the new copy is not cached).
    """
    aside = folder.parent / f".{folder.name}.broken-{os.getpid()}"
    shutil.rmtree(aside, ignore_errors=True)
    try:
        os.replace(folder, aside)
    except OSError:
        return None
    return aside


def _put_back(aside: Path | None, folder: Path) -> None:
    """Return a set-aside copy to its place, unless a new copy is already there."""
    if aside is None:
        return
    if folder.exists():
        _remove(aside)
        return
    with contextlib.suppress(OSError):
        os.replace(aside, folder)


def _remove(aside: Path | None) -> None:
    """Delete a set-aside copy once a new one is in place."""
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
