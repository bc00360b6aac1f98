"""``MMKDModel``: a loaded CLIP model, from images and prompts to zero-shot probabilities.

``encode_images``, ``encode_texts``: L2-normalised embeddings in one joint space;
``zero_shot``: their cosine similarities as probabilities, as in the MMKD-CLIP demo.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from mmkd_utils.errors import (
    ArgumentError,
    ImageLoadError,
    PrecisionFallbackWarning,
    PromptError,
    SkippedImagesWarning,
)
from mmkd_utils.images.decode import ImageInput
from mmkd_utils.images.pipeline import check_batch_size, image_batches
from mmkd_utils.model.classifier import ZeroShotClassifier, build_classifier
from mmkd_utils.model.device import auto_image_batch_size
from mmkd_utils.prompts import check_prompts, get_task

#: Prompts embedded per forward pass.
DEFAULT_TEXT_BATCH = 64


class MMKDModel:
    """A CLIP model ready for inference: the open_clip ``model``, ``preprocess`` and ``tokenizer``.

    Also ``device``, ``precision``, ``source`` (of the weights), ``model_name`` (if by name).

    Example:
        >>> clip
        MMKDModel(source='.../checkpoint.pt', device='cpu', precision='fp32', embed_dim=64)
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor],
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
        self.model_name: str | None = None
        #: Default image batch size: from free GPU memory on CUDA, 32 elsewhere.
        self.image_batch_size = auto_image_batch_size(device)
        self._classifiers: dict[tuple, ZeroShotClassifier] = {}
        self._fingerprint: str | None = None
        self._precision_warned = False

    def __repr__(self) -> str:
        return (
            f"MMKDModel(source={self.source!r}, device={str(self.device)!r}, "
            f"precision={self.precision!r}, embed_dim={self.embed_dim})"
        )

    @property
    def embed_dim(self) -> int:
        """Size of the joint image-text embedding space (512 for the released model).

        Example:
            >>> clip.embed_dim
            64
        """
        return int(self.model.text.output_dim)

    @property
    def logit_scale(self) -> float:
        """The cosine multiplier exp(t) = 1/τ, as open_clip's forward returns it under this name.

        Not open_clip's parameter ``model.logit_scale``, which holds t. τ: :attr:`temperature`.

        Example:
            >>> round(clip.logit_scale, 4), round(clip.model.logit_scale.exp().item(), 4)
            (50.0, 50.0)
        """
        return float(self.model.logit_scale.detach().float().exp())

    @property
    def temperature(self) -> float:
        """The softmax temperature τ = 1 / :attr:`logit_scale` (CLIP's τ; 0.01 when exp(t) = 100).

        Example:
            >>> round(clip.temperature, 6), round(clip.temperature * clip.logit_scale, 6)
            (0.02, 1.0)
        """
        return 1.0 / self.logit_scale

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the weights and the preprocessing: the key of embedding caches.

        Example:
            >>> len(clip.fingerprint)
            64
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

    def _forward(self, encode: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor):
        """``encode(batch)`` in float32; a half-precision NaN or inf is computed again in fp32."""
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.precision)
        with torch.autocast(self.device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            feats = encode(batch).float()
        if dtype is None or bool(torch.isfinite(feats).all()):
            return feats
        if not self._precision_warned:
            self._precision_warned = True
            message = (
                f"A {self.precision} forward pass overflowed (NaN or inf); such batches are "
                "computed again in fp32. To always use fp32, pass precision='fp32'."
            )
            warnings.warn(PrecisionFallbackWarning(message), stacklevel=4)
        return encode(batch).float()

    def _embed(self, encode: Callable[[torch.Tensor], torch.Tensor], batch: torch.Tensor):
        """``encode(batch)`` L2-normalised, as an ordinary float32 CPU tensor."""
        with torch.inference_mode():
            feats = self._forward(encode, batch.to(self.device, non_blocking=True))
            out = F.normalize(feats, dim=-1).cpu()
        return out.clone()  # usable outside inference mode

    def encode_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        """Embed a preprocessed batch [N, 3, H, W]: float32 CPU tensor [N, D], L2-normalised.

        Example:
            >>> clip.encode_pixels(torch.zeros(2, 3, 224, 224)).shape
            torch.Size([2, 64])
        """
        return self._embed(self.model.encode_image, pixels)

    def encode_images(
        self,
        images: ImageInput | Sequence[ImageInput],
        batch_size: int | None = None,
        *,
        on_error: str = "raise",
    ) -> torch.Tensor:
        """Embed images (paths, PIL images or arrays): float32 CPU tensor [N, D], L2-normalised.

        ``on_error="skip"`` leaves out unreadable images, listed with their reasons in one
        :class:`~mmkd_utils.errors.SkippedImagesWarning`; the rows kept stay in order.

        Example:
            >>> clip.encode_images([xray, imgs / "xray_chest_pa.png"]).shape
            torch.Size([2, 64])
        """
        items = _as_image_list(images)
        size = check_batch_size(batch_size, self.image_batch_size)
        if on_error not in ("raise", "skip"):
            raise ArgumentError(f"on_error={on_error!r}: use 'raise' or 'skip'.")
        out, failures = [], []
        pin = self.device.type == "cuda"  # pinned CPU memory: faster, non-blocking copies
        for batch in image_batches(items, self.preprocess, batch_size=size, pin_memory=pin):
            if batch.failures and on_error == "raise":
                raise batch.failures[0][1]
            failures += [(i, _image_name(items[i]), str(err)) for i, err in batch.failures]
            if batch.pixels is not None:
                out.append(self.encode_pixels(batch.pixels))
        if failures:
            lines = "\n".join(f"  [{i}] {name}: {reason}" for i, name, reason in failures)
            if not out:
                raise ImageLoadError(f"None of the {len(items)} images could be read:\n{lines}")
            message = f"Skipped {len(failures)} of {len(items)} images that could not be read:"
            warnings.warn(SkippedImagesWarning(f"{message}\n{lines}", failures), stacklevel=2)
        return torch.cat(out)

    def tokenize(self, texts: str | Iterable[str]) -> torch.Tensor:
        """Token ids [M, L], padded to the longest prompt (L ≤ 256) instead of to 256.

        A prompt longer than 256 tokens is truncated, with a warning that names it.

        Example:
            >>> clip.tokenize(["A chest X-ray.", "An MRI."]).shape[0]
            2
        """
        prompts = check_prompts(texts)
        context, hf_tok = self.tokenizer.context_length, self.tokenizer.tokenizer
        cleaned = [self.tokenizer.clean_fn(t) for t in prompts]
        for i, ids in enumerate(hf_tok(cleaned, add_special_tokens=True)["input_ids"]):
            if len(ids) > context:
                text = prompts[i] if len(prompts[i]) <= 60 else prompts[i][:57] + "..."
                cut = f"only the first {context} are used. Shorten it to keep its end."
                warnings.warn(f"Prompt {i} ({text!r}) has {len(ids)} tokens; {cut}", stacklevel=2)
        return _trim_padding(self.tokenizer(prompts), hf_tok.pad_token_id)

    def encode_texts(
        self, texts: str | Iterable[str], batch_size: int | None = None
    ) -> torch.Tensor:
        """Embed prompts: float32 CPU tensor [M, D], L2-normalised (as with 256-token padding).

        Example:
            >>> clip.encode_texts(["A chest X-ray.", "A fundus photograph."]).shape
            torch.Size([2, 64])
        """
        ids = self.tokenize(texts)
        size = check_batch_size(batch_size, DEFAULT_TEXT_BATCH)
        pad = self.tokenizer.tokenizer.pad_token_id
        chunks = [_trim_padding(chunk, pad) for chunk in ids.split(size)]
        return torch.cat([self._embed(self.model.encode_text, chunk) for chunk in chunks])

    def classifier(
        self,
        classes: str | Sequence[str] | Mapping[str, Sequence[str]],
        templates: Sequence[str] | None = None,
    ) -> ZeroShotClassifier:
        """A zero-shot classifier (per class, the mean of its normalised prompt embeddings).

        ``classes``: a task name of the prompt banks, a list of class names or
        ``{class: [synonyms]}``; ``templates`` hold ``{}`` where the name goes. Cached.

        Example:
            >>> clip.classifier(["pneumonia", "normal"], ["A chest X-ray of {}."])
            ZeroShotClassifier(2 classes, 2 prompts, dim=64)
        """
        name = None
        if isinstance(classes, str):
            task = get_task(classes)
            name, classes = task.name, task.synonyms
            templates = task.templates if templates is None else templates
        key = (name, repr(classes), None if templates is None else tuple(templates))
        if key not in self._classifiers:
            self._classifiers[key] = build_classifier(self.encode_texts, classes, templates, name)
        return self._classifiers[key]

    def zero_shot(
        self,
        images: ImageInput | Sequence[ImageInput],
        prompts: str | Iterable[str] | ZeroShotClassifier,
        *,
        on_error: str = "raise",
    ) -> torch.Tensor:
        """Probabilities [N, M] = softmax(logit_scale · image · textᵀ); rows sum to 1.

        ``prompts``: texts or a :class:`~mmkd_utils.model.classifier.ZeroShotClassifier`.

        Example:
            >>> clip.zero_shot(xray, ["A chest X-ray.", "An MRI."]).sum(dim=1)
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
            text_features = self.encode_texts(prompts)  # tokenize checks the prompts
        image_features = self.encode_images(images, on_error=on_error)  # no autograd graph
        return (self.logit_scale * image_features @ text_features.T).softmax(dim=-1)


def _as_image_list(images: Any) -> list[ImageInput]:
    if isinstance(images, (str, bytes, os.PathLike, Image.Image, np.ndarray)):
        return [images]
    if not isinstance(images, Iterable):
        raise ImageLoadError(
            "images must be a path, a PIL image, a numpy array or a list of them, "
            f"not {type(images).__name__}."
        )
    if not (items := list(images)):
        raise ImageLoadError("images is empty: pass at least one image.")
    return items


def _image_name(image: Any) -> str:
    path = isinstance(image, (str, bytes, os.PathLike))
    return os.fsdecode(image) if path else f"<{type(image).__name__}>"


def _trim_padding(ids: torch.Tensor, pad_id: int) -> torch.Tensor:  # all-padding columns
    real = (ids != pad_id).any(dim=0).nonzero()
    return ids[:, : int(real.max()) + 1 if real.numel() else 1]
