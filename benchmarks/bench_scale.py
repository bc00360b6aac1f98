"""Benchmark of ``mmkd_utils.tasks.scale.embed_dataset`` (Ray Data) against ``embed_folder``.

The same image files are embedded by

* ``embed_folder`` in this process (no cache: every image decoded and encoded; torch uses
  every core, DataLoader workers decode), and
* ``embed_dataset`` on a local Ray cluster with 1 and with 2 actors (each actor reserves one
  CPU, so Ray runs its torch with one thread: two actors use two cores).

Each Ray run is timed whole (actors started, model loaded and fingerprinted in each, every
shard written) and also after its first shard ("steady": the start-up left out), which is
what a long run approaches. Runs alternate between the three set-ups, ``--reps`` times;
figures are medians. The model is the full-size architecture with random weights of the real
shapes (``run_benchmarks.write_random_checkpoint``) unless ``--checkpoint`` names another;
the tiny test checkpoint (``tests/fixtures/tiny_upstream/checkpoint.pt``) runs it in seconds.

Usage::

    python benchmarks/bench_scale.py [--images 96] [--batch-size 16] [--reps 3] [--scratch DIR]
        [--checkpoint FILE --text-encoder FOLDER] [--json]

``--json`` prints one JSON line last, for ``benchmarks/run_benchmarks.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_benchmarks import add_model_options, model_files  # noqa: E402


def write_images(root: Path, n: int, size: int = 256) -> None:
    """``n`` random ``size``-pixel RGB PNGs (decoding is a small part; the forward pass rules)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"img{i:04d}.png")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=96, help="images (96)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch (16)")
    parser.add_argument("--reps", type=int, default=3, help="runs of each set-up (3)")
    add_model_options(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON line last")
    args = parser.parse_args(argv)

    scratch, checkpoint, text = model_files(args, "scale")
    images = scratch / "scale_images"
    write_images(images, args.images)

    import ray
    import torch

    from mmkd_utils import embed_folder, load_model
    from mmkd_utils.tasks.scale import embed_dataset

    model = load_model(checkpoint, text_encoder=text, device="cpu", precision="fp32")
    _ = model.fingerprint  # the converted copy and the fingerprint exist before any timing
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False)

    def folder() -> tuple[float, float]:
        start = time.perf_counter()
        embed_folder(model, images, batch_size=args.batch_size, cache=False)
        return time.perf_counter() - start, float("nan")

    def on_ray(actors: int):
        def run() -> tuple[float, float]:
            out = scratch / f"out_{actors}"
            shutil.rmtree(out, ignore_errors=True)
            done = embed_dataset(images, out, checkpoint=checkpoint, text_encoder=text,
                                 batch_size=args.batch_size, concurrency=actors)  # fmt: skip
            return done.seconds, done.images_per_second

        return run

    setups = {"embed_folder": folder, "ray_1": on_ray(1), "ray_2": on_ray(2)}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in setups}
    for rep in range(args.reps):  # alternate the order: drifts of the machine fall on all
        order = list(setups) if rep % 2 == 0 else list(setups)[::-1]
        for name in order:
            times[name].append(setups[name]())
    ray.shutdown()

    n, result = args.images, {"images": args.images, "batch_size": args.batch_size}
    for name, runs in times.items():
        whole = statistics.median(t for t, _ in runs)
        result[f"{name}_s"] = whole
        result[f"{name}_per_s"] = n / whole
        if name != "embed_folder":
            result[f"{name}_steady_per_s"] = statistics.median(r for _, r in runs)
        result[f"{name}_runs_s"] = [t for t, _ in runs]
    print(f"model: {model}; torch: {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    print(f"{n} images of 256 px, batches of {args.batch_size}, {args.reps} runs each (median)")
    print(f"embed_folder:       {result['embed_folder_per_s']:6.2f} images/s")
    for actors in (1, 2):
        key = f"ray_{actors}"
        print(
            f"Ray Data, {actors} actor{'s' * (actors > 1)}: {result[key + '_per_s']:6.2f} images/s "
            f"whole run, {result[key + '_steady_per_s']:6.2f} after the first shard"
        )
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
