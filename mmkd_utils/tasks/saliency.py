"""Where does the model look? Saliency maps of an image for each prompt (notebook 10).

What is explained is the cosine similarity of the image's embedding and a prompt's embedding,
the number zero-shot classification turns into probabilities: not a diagnosis, and not the
probability itself (which also depends on the other prompts). Two methods:

* ``"gradcam"``: Grad-CAM (Selvaraju et al., ICCV 2017) through the ``grad-cam`` package
  (extra ``saliency``), on the tokens that enter the last block's attention (its ``ln_1``);
* ``"attention"``: gradient-weighted attention relevancy (Chefer et al., ICCV 2021), read
  from open_clip's own attention modules through hooks.

Both give one value per 16 × 16-pixel patch of the preprocessed view (14 × 14 for a 224-pixel
ViT-B/16), interpolated bilinearly; each map is scaled to 0–1 on its own.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from PIL import Image
from scipy.stats import spearmanr
from torchvision.transforms import CenterCrop, Resize

from mmkd_utils.errors import ArgumentError, MissingDependencyError
from mmkd_utils.images import to_rgb
from mmkd_utils.prompts import check_prompts

#: The methods :func:`explain` knows, with the names used in plot titles.
METHODS = {"gradcam": "Grad-CAM", "attention": "gradient-weighted attention"}
GRADCAM = 'pip install "mmkd-utils[saliency]" (or pip install grad-cam) and restart the kernel.'
_GEOMETRIC = ("Resize", "Crop", "Pad", "Flip", "Rotat", "Affine", "Perspective")


@dataclass
class SaliencyResult:
    """What :func:`explain` returns; row ``i`` of the arrays belongs to ``prompts[i]``.

    ``maps`` [M, h, w]: on the preprocessed view (224 × 224 for the released model), 0 to 1.
    ``original_maps`` [M, H, W]: the same maps on ``image``'s own pixels; NaN where the
    preprocessing cut the image away (outside ``crop_box``, (left, top, right, bottom) in
    ``image``'s pixel coordinates). ``probabilities``: the model's ``zero_shot`` over
    ``prompts``. ``image``: the RGB image the model got, before preprocessing.
    """

    image: Image.Image
    prompts: tuple[str, ...]
    probabilities: np.ndarray
    maps: np.ndarray
    original_maps: np.ndarray
    crop_box: tuple[float, float, float, float]
    method: str


def explain(model, image, prompts, *, method: str = "gradcam") -> SaliencyResult:
    """Saliency maps of ``image`` (path, PIL image or array) for each of ``prompts``.

    ``method``: ``"gradcam"`` (needs the ``grad-cam`` package) or ``"attention"``. The model is
    not changed: hooks are removed, ``requires_grad``, gradients and train/eval modes restored.

    Example:
        >>> result = explain(clip, xray, ["A chest X-ray.", "A brain MRI."])
        >>> result.maps.shape, result.original_maps.shape, result.probabilities.shape
        ((2, 224, 224), (2, 512, 482), (2,))
    """
    key, blocks = _method(method), _blocks(model.model.visual)
    prompts = check_prompts(prompts)
    rgb = to_rgb(image)
    texts = model.encode_texts(prompts).to(model.device)
    pixels = model.preprocess(rgb)[None].to(model.device)
    maps = _maps(model.model.visual, blocks, pixels, texts, key)
    box, original = _on_original(maps, rgb.size, model.preprocess)
    probs = model.zero_shot(rgb, prompts)[0].numpy()
    return SaliencyResult(rgb, tuple(prompts), probs, maps, original, box, key)


def sanity_check(model, image, prompt: str, *, method: str = "gradcam", seed: int = 0):
    """Adebayo et al.'s cascading randomisation (NeurIPS 2018) on a copy of the image tower.

    The blocks are randomised from the top: the last, then the last two, ... down to all of
    them (each weight tensor replaced by Gaussian noise of its own mean and standard deviation;
    the embeddings, ``ln_post`` and the projection are kept). A table: one row per step, with the
    Spearman rank correlation between that step's map and the trained model's (NaN if a map
    is constant) and the map itself (column ``map``, on the preprocessed view).

    A map that depends on what the model learned must change as its weights are destroyed:
    a correlation that stays high fails the check, and the method then shows something that
    does not need the trained weights (edges, bright areas, the architecture), so it cannot
    explain the trained model's similarity. Passing is necessary, not sufficient.

    Example:
        >>> table = sanity_check(clip, xray, "A chest X-ray.")
        >>> table[["blocks_randomised", "randomised"]].values.tolist()
        [[0, 'none'], [1, 'block 2'], [2, 'blocks 1–2']]
    """
    key, visual = _method(method), copy.deepcopy(model.model.visual)  # never the user's model
    blocks = _blocks(visual)
    text = model.encode_texts(check_prompts(prompt, "prompt")[:1]).to(model.device)
    pixels = model.preprocess(to_rgb(image))[None].to(model.device)
    generator, rows, n = torch.Generator().manual_seed(seed), [], len(blocks)
    for k in range(n + 1):
        with torch.no_grad():
            for p in blocks[n - k].parameters() if k else ():
                noise = torch.randn(p.shape, generator=generator).to(p)
                p.copy_(noise * (p.std() if p.numel() > 1 else 0) + p.mean())
        heat = _maps(visual, blocks, pixels, text, key)[0]
        with warnings.catch_warnings():  # a constant map has no rank correlation: NaN
            warnings.simplefilter("ignore")
            rho = float(spearmanr(rows[0]["map"].ravel(), heat.ravel())[0]) if k else 1.0
        label = "none" if k == 0 else f"block {n}" if k == 1 else f"blocks {n - k + 1}–{n}"
        rows.append({"blocks_randomised": k, "randomised": label, "spearman": rho, "map": heat})
    return pd.DataFrame(rows)


def _method(method) -> str:
    key = method.lower().replace("-", "") if isinstance(method, str) else None
    if key not in METHODS:
        raise ArgumentError(f"method must be 'gradcam' or 'attention', got {method!r}.")
    return key


def _blocks(visual) -> torch.nn.ModuleList:
    """The residual attention blocks of an open_clip VisionTransformer, else ArgumentError."""
    blocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
    if blocks is None or not all(hasattr(b, "attn") and hasattr(b, "ln_1") for b in blocks):
        raise ArgumentError(
            f"explain needs open_clip's VisionTransformer image tower, not "
            f"{type(visual).__name__} (a timm tower such as BiomedCLIP's is not supported)."
        )
    return blocks


@contextlib.contextmanager
def _untouched(module: torch.nn.Module):
    """Frozen weights in eval mode for the call; modes, requires_grad and .grad restored."""
    params, modes = list(module.parameters()), {m: m.training for m in module.modules()}
    kept = [(p.requires_grad, p.grad) for p in params]
    try:
        module.eval().requires_grad_(False)
        with torch.inference_mode(False), torch.enable_grad():
            yield
    finally:
        for p, (needed, grad) in zip(params, kept, strict=True):
            p.requires_grad_(needed)
            p.grad = grad
        for m, training in modes.items():
            m.training = training


class _Cosines(torch.nn.Module):
    """The cosine of each image's embedding with each prompt's: what both methods explain."""

    def __init__(self, visual: torch.nn.Module, texts: torch.Tensor) -> None:
        super().__init__()
        self.visual, self.texts = visual, texts

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(pixels).float(), dim=-1) @ self.texts.T


def _maps(visual, blocks, pixels, texts, method: str) -> np.ndarray:
    """[M, h, w] maps, 0 to 1: image ``i`` of the batch is explained for prompt ``i``."""
    batch = pixels.float().repeat(len(texts), 1, 1, 1)
    patch = visual.conv1.kernel_size
    grid = (pixels.shape[-2] // patch[0], pixels.shape[-1] // patch[1])
    with _untouched(visual):
        explain_batch = _gradcam if method == "gradcam" else _attention
        maps = explain_batch(_Cosines(visual, texts), blocks, batch, grid)
    low = maps.min(axis=(1, 2), keepdims=True)
    span = maps.max(axis=(1, 2), keepdims=True) - low
    return np.divide(maps - low, span, out=np.zeros_like(maps), where=span > 0)


def _gradcam(cosines, blocks, batch, grid) -> np.ndarray:
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        raise MissingDependencyError(f"method='gradcam' needs grad-cam: {GRADCAM}") from err

    def tokens_to_grid(tokens):  # [N, 1 + h·w, D] -> [N, D, h, w], the class token left out
        return tokens[:, 1:].reshape(len(tokens), *grid, -1).permute(0, 3, 1, 2)

    cam = GradCAM(cosines, [blocks[-1].ln_1], tokens_to_grid)
    try:  # not `with`: its __exit__ would swallow an IndexError. The weights are frozen, so
        targets = [ClassifierOutputTarget(i) for i in range(len(batch))]  # the input needs
        return cam(batch.requires_grad_(), targets)  # a gradient for the graph to exist
    finally:
        cam.activations_and_grads.release()


def _attention(cosines, blocks, batch, grid) -> np.ndarray:
    """Chefer et al.'s rule: R = I, then per block R += mean over heads of ReLU(∇A ⊙ A) · R;
    the class token's row of R, without itself, is the map."""
    weights = []

    def ask(module, args, kwargs):  # open_clip asks for no weights; we want every head's
        return args, {**kwargs, "need_weights": True, "average_attn_weights": False}

    def keep(module, args, output):
        weights.append(output[1])

    hooks = [b.attn.register_forward_pre_hook(ask, with_kwargs=True) for b in blocks]
    hooks += [b.attn.register_forward_hook(keep) for b in blocks]
    try:
        score = cosines(batch.requires_grad_()).diagonal().sum()
        # The returned weights are a view of the softmax output the attention used: its base.
        used = [w if w._base is None else w._base for w in weights]
        grads = torch.autograd.grad(score, used)
    finally:
        for hook in hooks:
            hook.remove()
    n, tokens = weights[0].shape[0], weights[0].shape[-1]
    relevance = torch.eye(tokens, device=batch.device).repeat(n, 1, 1)
    for attn, grad in zip(weights, grads, strict=True):
        attn = attn.detach()
        relevance = relevance + (grad.view_as(attn) * attn).clamp(min=0).mean(dim=1) @ relevance
    cls = relevance[:, 0, 1:].reshape(n, 1, *grid)
    size = batch.shape[-2:]
    return F.interpolate(cls, size=size, mode="bilinear", align_corners=False)[:, 0].cpu().numpy()


def _linear(maps: np.ndarray, coords: np.ndarray, axis: int) -> np.ndarray:
    """``maps`` linearly interpolated at pixel-centre ``coords`` along ``axis``, edges held."""
    coords = np.clip(coords - 0.5, 0, maps.shape[axis] - 1).astype(np.float32)
    low = np.minimum(coords.astype(int), maps.shape[axis] - 2)
    shape = [1, 1, 1]
    shape[axis] = -1
    a, b = np.take(maps, low, axis), np.take(maps, low + 1, axis)
    return a + (b - a) * (coords - low).reshape(shape)


def _on_original(maps: np.ndarray, size: tuple[int, int], preprocess):
    """The crop box and the maps on the original pixels: the preprocessing's resizes and
    centre crops followed exactly (torchvision's arithmetic), then inverted."""
    (width, height), scale, offset = size, np.ones(2), np.zeros(2)  # view = scale·x + offset
    for step in getattr(preprocess, "transforms", [preprocess]):
        if isinstance(step, Resize):
            wanted = [step.size] if isinstance(step.size, int) else list(step.size)
            if len(wanted) == 1:
                short, long = sorted((width, height))
                new = (wanted[0], int(wanted[0] * long / short))
                new_w, new_h = new if width <= height else new[::-1]
            else:
                new_h, new_w = wanted
            factor = np.array([new_w / width, new_h / height])
            scale, offset, (width, height) = scale * factor, offset * factor, (new_w, new_h)
        elif isinstance(step, CenterCrop):
            crop_h, crop_w = step.size
            cut = [
                -((c - s) // 2) if c > s else int(round((s - c) / 2.0))
                for s, c in ((width, crop_w), (height, crop_h))
            ]
            offset, (width, height) = offset - cut, (crop_w, crop_h)
        elif any(word in type(step).__name__ for word in _GEOMETRIC):
            raise ArgumentError(f"explain cannot map the preprocessing's {step} back.")
    if (height, width) != maps.shape[1:]:
        raise ArgumentError(f"The preprocessing gives {maps.shape[1:]}, not {(height, width)}.")
    (left, top), (right, bottom) = -offset / scale, (np.array([width, height]) - offset) / scale
    cols = (np.arange(size[0]) + 0.5) * scale[0] + offset[0]  # original pixel centres in
    rows = (np.arange(size[1]) + 0.5) * scale[1] + offset[1]  # view coordinates
    original = _linear(_linear(maps, cols, axis=2), rows, axis=1)
    original[:, (rows < 0) | (rows > height)] = np.nan
    original[:, :, (cols < 0) | (cols > width)] = np.nan
    return tuple(float(v) + 0.0 for v in (left, top, right, bottom)), original  # never -0.0
