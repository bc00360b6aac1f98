"""``clip.logit_scale`` is CLIP's multiplier exp(t) (t: open_clip's stored parameter) and
``clip.temperature`` is τ = 1/exp(t), as in the CLIP paper and open_clip's forward."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image

XRAY = Path(__file__).resolve().parent.parent / "imgs" / "xray_chest_pa.png"


def test_logit_scale_is_exp_of_the_parameter_and_temperature_its_inverse(tiny_model):
    parameter = tiny_model.model.logit_scale
    original = parameter.detach().clone()
    try:
        for t in (math.log(100.0), 0.0, 1.5):  # log(100): the released CLIP models' cap
            with torch.no_grad():
                parameter.fill_(t)
            assert math.isclose(tiny_model.logit_scale, math.exp(t), rel_tol=1e-6)
            assert math.isclose(tiny_model.temperature, 1 / math.exp(t), rel_tol=1e-6)
    finally:
        with torch.no_grad():
            parameter.copy_(original)


def test_logit_scale_is_what_open_clip_forward_returns_and_zero_shot_uses(tiny_model):
    prompts = ["A chest X-ray.", "A brain MRI."]
    with Image.open(XRAY) as image:
        pixels = tiny_model.preprocess(image.convert("RGB")).unsqueeze(0)
    with torch.no_grad():
        *_, scale = tiny_model.model(pixels, tiny_model.tokenize(prompts))
    assert math.isclose(tiny_model.logit_scale, float(scale), rel_tol=1e-6)
    cosines = tiny_model.encode_images(XRAY) @ tiny_model.encode_texts(prompts).T
    expected = (cosines / tiny_model.temperature).softmax(dim=-1)
    assert torch.allclose(tiny_model.zero_shot(XRAY, prompts), expected, atol=1e-6)
