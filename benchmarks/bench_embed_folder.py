"""Benchmark of :func:`mmkd_utils.embed_folder`: cold cache vs warm cache (not a test).

Writes ~300 small PNGs (in three class folders) into a temporary folder, then times

* cold: the first ``embed_folder`` run with an empty cache (hashing, decoding in
  DataLoader workers, forward passes, writing the cache entries), and
* warm: later runs over the unchanged folder (hashing and reading the entries only),
  the median of ``--warm-reps`` runs,

checks that both give the same embeddings, prints the times and the ratio, and exits
with status 1 if warm is not at least ``--min-ratio`` (default 20) times faster.

The model is the tiny test checkpoint (``tests/fixtures/tiny_upstream``, loaded with the
cache in a temporary ``MMKD_HOME``) unless ``--checkpoint`` names another one. Model
loading, the fingerprint and a first forward pass happen before the timing.

Usage::

    python benchmarks/bench_embed_folder.py [--images 300] [--checkpoint MMKD_B16.pth]
        [--text-encoder FOLDER_OR_HUB_ID] [--device cpu] [--num-workers N] [--json]

``--json`` prints one JSON line (images, cold_s, warm_s, ratio, ...) last, for
``benchmarks/run_benchmarks.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "tests" / "fixtures" / "tiny_upstream"


def write_images(root: Path, n: int) -> None:
    """``n`` random 64×64 PNGs spread over three class folders."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n):
        path = root / f"class_{i % 3}" / f"img{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=300, help="number of images (300)")
    parser.add_argument("--checkpoint", help="a .pth or converted folder (default: tiny)")
    parser.add_argument("--text-encoder", help="text encoder folder or hub id")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--num-workers", type=int, default=None)
    parser.add_argument("--warm-reps", type=int, default=3)
    parser.add_argument("--min-ratio", type=float, default=20.0)
    parser.add_argument("--json", action="store_true", help="print a JSON line last")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_embed_folder_") as scratch_name:
        scratch = Path(scratch_name)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if args.checkpoint is None:
            checkpoint, text = TINY / "checkpoint.pt", args.text_encoder or TINY / "tiny-biomedbert"
            os.environ.setdefault("MMKD_HOME", str(scratch / "home"))
        else:
            checkpoint, text = Path(args.checkpoint), args.text_encoder

        import torch

        from mmkd_utils import embed_folder, load_model

        model = load_model(checkpoint, text_encoder=text, device=args.device)
        _ = model.fingerprint  # computed once per model; not part of the timing
        data, cache = scratch / "images", scratch / "embedding_cache"
        write_images(data, args.images)
        model.encode_images(next(data.rglob("*.png")))  # first-call overhead
        options = {"batch_size": args.batch_size, "num_workers": args.num_workers, "cache": cache}

        start = time.perf_counter()
        cold = embed_folder(model, data, **options)
        cold_s = time.perf_counter() - start
        warm_times = []
        for _ in range(args.warm_reps):
            start = time.perf_counter()
            warm = embed_folder(model, data, **options)
            warm_times.append(time.perf_counter() - start)
        warm_s = statistics.median(warm_times)

    assert warm.from_cache == len(warm) == len(cold) == args.images, (warm, cold)
    assert torch.equal(warm.embeddings, cold.embeddings)
    ratio = cold_s / warm_s
    ok = ratio >= args.min_ratio
    print(f"model: {model}")
    print(f"images: {args.images} ({len(cold)} embedded, {torch.get_num_threads()} threads)")
    mark = "ok" if ok else "FAIL"
    n = args.images
    print(f"cold (empty cache):  {cold_s:8.3f} s  ({n / cold_s:7.1f} images/s)")
    print(f"warm (median of {args.warm_reps}): {warm_s:8.3f} s  ({n / warm_s:7.1f} images/s)")
    print(f"ratio cold / warm:   {ratio:8.1f}×  (need ≥ {args.min_ratio:g}×: {mark})")
    if args.json:
        result = {
            "images": args.images,
            "cold_s": cold_s,
            "warm_s": warm_s,
            "ratio": ratio,
            "ok": ok,
        }
        print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
