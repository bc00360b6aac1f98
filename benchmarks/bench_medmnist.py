"""Benchmark of ``mmkd_utils.tasks.medmnist.embed_arrays`` on a 224-pixel MedMNIST split.

The arrays are already decoded (uint8 [N, 224, 224, 3], PathMNIST's layout; random
pixels), so only preprocessing and encoding are timed, against the plain loop a learner
would write over the same arrays: ``PIL.Image.fromarray(a).convert("RGB")``, the model's
preprocess, stacks of 32, ``model.model.encode_image`` under ``torch.inference_mode()``,
L2-normalised. Figures as in ``run_benchmarks.py``: times in back-to-back pairs (order
alternating) after a warm-up, the ratio the median of the pairs' ratios, the spread the
interquartile range over the median; the two sets of embeddings are compared too.

The model is the full-size architecture with random weights of the real shapes, written
by ``run_benchmarks.write_random_checkpoint`` into ``--scratch``, unless ``--checkpoint``
names another (the tiny test checkpoint, ``tests/fixtures/tiny_upstream/checkpoint.pt``,
runs it in seconds).

Usage::

    python benchmarks/bench_medmnist.py [--images 256] [--reps 5] [--scratch DIR]
        [--checkpoint FILE --text-encoder FOLDER] [--json]

``--json`` prints one JSON line last, for ``benchmarks/run_benchmarks.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmarks import (  # noqa: E402
    add_model_options,
    model_files,
    paired_ratio,
    paired_times,
    spread,
)

#: Images per forward pass in the plain loop (the pipeline uses the model's default, 32 on CPU).
LOOP_BATCH = 32


def pathmnist_like(n: int, size: int = 224, seed: int = 0):
    """``n`` uint8 RGB images [n, size, size, 3] in MedMNIST's layout (random pixels)."""
    import numpy as np

    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def plain_loop(model, images):
    """The learner's loop: PIL image, the model's preprocess, batches of 32, encode_image."""
    import torch
    import torch.nn.functional as F
    from PIL import Image

    out = []
    for start in range(0, len(images), LOOP_BATCH):
        chunk = images[start : start + LOOP_BATCH]
        pixels = torch.stack([model.preprocess(Image.fromarray(a).convert("RGB")) for a in chunk])
        with torch.inference_mode():
            out.append(F.normalize(model.model.encode_image(pixels), dim=-1))
    return torch.cat(out).numpy()


def bench(model, images, reps: int) -> dict:
    """``embed_arrays`` vs :func:`plain_loop` on ``images``: rates, paired ratio, spreads."""
    import numpy as np

    from mmkd_utils.tasks.medmnist import embed_arrays

    max_diff = float(np.abs(embed_arrays(model, images) - plain_loop(model, images)).max())
    ours, loop = paired_times(
        lambda: embed_arrays(model, images), lambda: plain_loop(model, images), reps
    )
    n = len(images)
    return {
        "images": n,
        "size": int(images.shape[1]),
        "s": statistics.median(ours),
        "loop_s": statistics.median(loop),
        "per_s": n / statistics.median(ours),
        "loop_per_s": n / statistics.median(loop),
        "ratio": paired_ratio(loop, ours),
        "pair_ratios": [b / a for a, b in zip(ours, loop, strict=True)],
        "spread": spread(ours) if reps > 1 else 0.0,
        "loop_spread": spread(loop) if reps > 1 else 0.0,
        "max_abs_diff": max_diff,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=256, help="images in the split (256)")
    parser.add_argument("--reps", type=int, default=5, help="back-to-back pairs (5)")
    add_model_options(parser)
    parser.add_argument("--min-ratio", type=float, default=1.0)
    parser.add_argument("--json", action="store_true", help="print a JSON line last")
    args = parser.parse_args(argv)

    scratch, checkpoint, text = model_files(args, "medmnist")

    import torch

    from mmkd_utils import load_model

    model = load_model(checkpoint, text_encoder=text, device="cpu", precision="fp32")
    r = bench(model, pathmnist_like(args.images), args.reps)
    ok = r["ratio"] >= args.min_ratio
    print(f"model: {model}; {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"{r['images']} arrays of {r['size']} px, {args.reps} pairs")
    print(f"embed_arrays: {r['per_s']:7.2f} images/s  (spread {r['spread']:.0%})")
    print(f"plain loop:   {r['loop_per_s']:7.2f} images/s  (spread {r['loop_spread']:.0%})")
    pairs = ", ".join(f"{x:.3f}" for x in r["pair_ratios"])
    print(f"ratio (median of pairs): {r['ratio']:.3f}×  [{pairs}]  (need ≥ {args.min_ratio:g}×)")
    print(f"max |difference| of the embeddings: {r['max_abs_diff']:.1e}")
    if args.json:
        print(json.dumps({**r, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
