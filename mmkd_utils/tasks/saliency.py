"""Where does the model look? Saliency maps of an image for each prompt (notebook 10).

What is explained is the cosine similarity of the image's embedding and a prompt's embedding,
the number zero-shot classification turns into probabilities: not a diagnosis, and not the
probability itself (which also depends on the other prompts). Two methods:

* ``"gradcam"``: Grad-CAM (Selvaraju et al., ICCV 2017) through the ``grad-cam`` package
  (extra ``saliency``), on the tokens that enter the last block's attention (its ``ln_1``);
* ``"attention"``: gradient-weighted attention relevancy (Chefer et al., ICCV 2021), read
  from open_clip's own attention modules through hooks.

Both give one value per 16 × 16-pixel patch of the preprocessed view (14 × 14 for a 224-pixel
ViT-B/16), interpolated bilinearly; each map is scaled to 0–1 on its own (its range before:
``ranges``). Compare maps with :func:`patch_spearman`, on those patches.
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
    ``image``'s pixel coordinates). ``ranges`` [M, 2]: each map's (min, max) before scaling:
    close values, a flat map that still looks focal. ``probabilities``: softmax over ``prompts``
    of ``logit_scale`` × the float32 cosines the maps explain (``zero_shot`` may use autocast on
    a GPU). ``image``: the RGB image the model got, before preprocessing. ``method``: the key,
    ``method_name``: its name in :data:`METHODS` (+ ", contrast").
    """

    image: Image.Image
    prompts: tuple[str, ...]
    probabilities: np.ndarray
    maps: np.ndarray
    original_maps: np.ndarray
    crop_box: tuple[float, float, float, float]
    method: str
    ranges: np.ndarray
    method_name: str


def explain(model, image, prompts, *, method="gradcam", contrast=False) -> SaliencyResult:
    """Saliency maps of ``image`` (path, PIL image or array) for each of ``prompts``.

    ``method``: ``"gradcam"`` (needs the ``grad-cam`` package) or ``"attention"``. The model is
    not changed: hooks are removed, ``requires_grad``, gradients and train/eval modes restored.
    One forward and backward pass per 8 prompts, on a batch of that many copies of the image.
    ``contrast=True``: map ``i`` explains s_i minus the mean s of the other prompts (two prompts:
    s_right − s_near, on which the choice between them depends), not s_i alone.

    Example:
        >>> result = explain(clip, xray, ["A chest X-ray.", "A brain MRI."])
        >>> result.maps.shape, result.original_maps.shape, result.probabilities.shape
        ((2, 224, 224), (2, 512, 482), (2,))
    """
    key, blocks = _method(method), _blocks(model.model.visual)
    prompts, rgb = check_prompts(prompts), to_rgb(image)
    texts = model.encode_texts(prompts).to(model.device)
    pixels = model.preprocess(rgb)[None].to(model.device)
    explained = texts - (texts.sum(0) - texts) / max(len(texts) - 1, 1) if contrast else texts
    maps, ranges = _maps(model.model.visual, blocks, pixels, explained, key)  # s: linear in text
    box, original = _on_original(maps, rgb.size, model.preprocess)
    with _untouched(model.model.visual), torch.no_grad():  # the cosines the maps explain
        cosines = _Cosines(model.model.visual, texts)(pixels.float())[0]
    probs = (model.logit_scale * cosines).softmax(-1).cpu().numpy()
    name = METHODS[key] + (", contrast" if contrast else "")
    return SaliencyResult(rgb, tuple(prompts), probs, maps, original, box, key, ranges, name)


def patch_spearman(a: np.ndarray, b: np.ndarray, patch: int = 16) -> float:
    """Spearman's ρ of two maps of the same view, each averaged over ``patch`` × ``patch``
    pixels first: the model's own resolution, not the interpolated pixels. NaN if one is flat.

    Example:
        >>> maps = explain(clip, xray, ["A chest X-ray.", "A brain MRI."]).maps
        >>> round(patch_spearman(maps[0], maps[0]), 6), -1 <= patch_spearman(*maps) <= 1
        (1.0, True)
    """
    a, b = (F.avg_pool2d(torch.as_tensor(m, dtype=torch.float32)[None], patch) for m in (a, b))
    with warnings.catch_warnings():  # a constant map has no rank correlation: NaN
        warnings.simplefilter("ignore")
        return float(spearmanr(a.ravel(), b.ravel())[0])


def sanity_check(model, image, prompt: str, *, method: str = "gradcam", seed: int = 0):
    """Adebayo et al.'s cascading randomisation (NeurIPS 2018) on a copy of the image tower.

    From the output end to the input: step 1 randomises the head (``ln_post``, ``proj``), the
    next steps the blocks from the top one by one, the last every weight left (``conv1``, the
    class and position embeddings, ``ln_pre``): nothing trained is left. Each weight tensor
    becomes Gaussian noise of its own mean and standard deviation. A table, one row per step
    (0: untouched): :func:`patch_spearman` of that step's map with the trained model's, and
    the map itself (column ``map``, on the preprocessed view).

    A map that depends on what the model learned must change as its weights are destroyed:
    if ρ stays high, the method shows something that does not need them (edges, bright areas,
    the architecture). Passing is necessary, not sufficient.

    Example:
        >>> sanity_check(clip, xray, "A chest X-ray.")["randomised"].tolist()
        ['none', 'head', 'head, block 2', 'head, blocks 1–2', 'everything']
    """
    key, prompts = _method(method), check_prompts(prompt, "prompt")
    if len(prompts) > 1:
        raise ArgumentError(f"sanity_check takes one prompt, not {len(prompts)}: loop over them.")
    with torch.inference_mode(False):  # parameters that a gradient can pass through
        visual = copy.deepcopy(model.model.visual)  # never the user's model
    blocks = _blocks(visual)
    text = model.encode_texts(prompts).to(model.device)
    pixels = model.preprocess(to_rgb(image))[None].to(model.device)
    head = [p for name, p in visual.named_parameters() if name.split(".")[0] in ("ln_post", "proj")]
    steps, n = [("none", []), ("head", head)], len(blocks)
    for k in range(1, n + 1):
        label = f"head, block {n}" if k == 1 else f"head, blocks {n - k + 1}–{n}"
        steps.append((label, list(blocks[n - k].parameters())))
    done = {id(p) for _, group in steps for p in group}
    steps.append(("everything", [p for p in visual.parameters() if id(p) not in done]))
    generator, rows, patch = torch.Generator().manual_seed(seed), [], visual.conv1.kernel_size[0]
    for k, (label, group) in enumerate(steps):
        with torch.inference_mode(False), torch.no_grad():
            for p in group:
                noise = torch.randn(p.shape, generator=generator).to(p)
                p.copy_(noise * (p.std() if p.numel() > 1 else 0) + p.mean())
        heat = _maps(visual, blocks, pixels, text, key)[0][0]
        rho = patch_spearman(rows[0]["map"], heat, patch) if k else 1.0
        rows.append({"step": k, "randomised": label, "spearman": rho, "map": heat})
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


def _maps(visual, blocks, pixels, texts, method: str) -> tuple[np.ndarray, np.ndarray]:
    """[M, h, w] maps, 0 to 1, and [M, 2] their (min, max) before: per batch of up to 8
    prompts, copy ``i`` of the image is explained for prompt ``i``."""
    patch, explain_batch = visual.conv1.kernel_size, _gradcam if method == "gradcam" else _attention
    grid = (pixels.shape[-2] // patch[0], pixels.shape[-1] // patch[1])
    with _untouched(visual):  # made in here: a caller's inference_mode does not reach them
        pixels, texts, maps = pixels.float().clone(), texts.clone(), []
        for chunk in texts.split(8):
            batch = pixels.repeat(len(chunk), 1, 1, 1)
            maps.append(explain_batch(_Cosines(visual, chunk), blocks, batch, grid))
    maps = np.concatenate(maps)
    low, high = maps.min(axis=(1, 2), keepdims=True), maps.max(axis=(1, 2), keepdims=True)
    scaled = np.divide(maps - low, high - low, out=np.zeros_like(maps), where=high > low)
    return scaled, np.concatenate([low, high], axis=2)[:, 0]


def _gradcam(cosines, blocks, batch, grid) -> np.ndarray:
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as err:
        raise MissingDependencyError(f"method='gradcam' needs grad-cam: {GRADCAM}") from err

    def tokens_to_grid(tokens):  # [N, 1 + h·w, D] -> [N, D, h, w], the class token left out
        return tokens[:, 1:].reshape(len(tokens), *grid, -1).permute(0, 3, 1, 2)

    cam = GradCAM(cosines, [blocks[-1].ln_1], tokens_to_grid)
    raw, get = [], cam.get_cam_image  # grad-cam scales each map to 0-1: keep the raw values
    cam.get_cam_image = lambda *args, **kw: raw.append(np.maximum(get(*args, **kw), 0)) or raw[-1]
    try:  # not `with`: its __exit__ would swallow an IndexError. The weights are frozen, so
        targets = [ClassifierOutputTarget(i) for i in range(len(batch))]  # the input needs
        scaled = cam(batch.requires_grad_(), targets)  # a gradient for the graph to exist
        low, high = raw[0].min(axis=(1, 2)), raw[0].max(axis=(1, 2))
        return scaled * (high - low + 1e-7)[:, None, None] + low[:, None, None]  # raw units
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
        if any(
            u.shape[-2:] != w.shape[-2:] or u.numel() != w.numel()
            for u, w in zip(used, weights, strict=True)
        ):
            raise NotImplementedError("method='attention' cannot find the attention weights this "
                                      "torch version used: use method='gradcam'.")  # fmt: skip
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
        if isinstance(step, Resize) and step.max_size:
            raise ArgumentError(f"explain cannot map back a Resize with max_size: {step}.")
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
