"""Benchmarks of mmkd_utils on the full-size MMKD-CLIP architecture (not part of the tests).

The released weights cannot be fetched here, so the script writes a checkpoint with random
weights and exactly the real shapes (every key of ``tests/data/mmkd_b16_state_dict_shapes
.json``, in the upstream ``{"state_dict": {"module.…"}}`` layout): the compute and memory
traffic are those of the released model. Every figure is the median of several
repetitions, reported as a ratio against a baseline measured in the same run (in-process
figures: the median of the ratios of back-to-back pairs, which a slow phase of a shared
machine affects much less than a ratio of two medians):

* text: ``encode_texts`` on the nine demo prompts vs ``encode_text`` on 256-padded ids;
* images: ``encode_images`` (the image pipeline) vs the plain serial loop a learner would
  write (open each file with PIL, the model's preprocess, ``encode_image`` in batches of
  32) on the same 64 files, the demo-sized images over and over; and, in a fresh
  process, the peak memory of ``encode_images`` at the default batch size over one and
  over three batches (bounded: it must not grow with the number of images);
* load: first load from the ``.pth`` vs a later load from the converted cache, each in a
  fresh process and followed by a first forward pass (wall time of the load, and of the
  load with the forward pass; peak resident memory through both, above the process's
  baseline, as a multiple of the model's fp32 bytes), plus the
  re-created reference load (unpickle, build with random init, copy); the library
  imports (torch, open_clip, transformers' BERT code) belong to the baseline;
* quickstart end to end (load, nine images, nine prompts, probabilities) from the
  converted cache vs a re-creation of the reference pipeline (unpickle, copy into the
  model, 256-padding, fp32);
* folder embedding: cold vs warm cache (``benchmarks/bench_embed_folder.py``).
* MedMNIST arrays: ``embed_arrays`` on 64 decoded 224-pixel PathMNIST-like arrays vs the
  plain loop over them (``PIL.Image.fromarray``, the model's preprocess, ``encode_image`` in
  batches of 32): preprocessing and encoding only (``benchmarks/bench_medmnist.py``).
* scale-out: ``embed_dataset`` on a local Ray cluster with 1 and 2 actors vs ``embed_folder``
  on the same 96 files, whole runs and after the first shard (``benchmarks/bench_scale.py``).

Text encoder: BiomedBERT-base's architecture from its public config values, with a
stand-in WordPiece vocabulary made of the demo prompts' words (the real tokenizer cannot be
fetched here); token counts are therefore a little lower than BiomedBERT's own.

Usage::

    python benchmarks/run_benchmarks.py [--scratch DIR] [--reps 11] [--image-reps 21] [--json FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPES = REPO / "tests" / "data" / "mmkd_b16_state_dict_shapes.json"
#: Sizes (width, height) and PIL modes of the nine published demo images, in order.
DEMO_SIZES = [
    ("xray.png", (1024, 1024), "L"),
    ("fundus.jpeg", (3504, 2336), "RGB"),
    ("pathology.jpeg", (768, 768), "RGB"),
    ("endoscopy.jpg", (1280, 1024), "RGB"),
    ("ct.jpg", (205, 255), "L"),
    ("mri.jpg", (512, 512), "RGB"),
    ("ultrasound.png", (274, 353), "L"),
    ("dermatology.jpeg", (600, 450), "RGB"),
    ("oct.jpg", (1000, 512), "RGB"),
]
#: Batches of 32 demo-sized files in the image throughput figure.
IMAGE_BATCHES = 2
#: Memory the model may use while embedding images: a quarter of a 16 GB laptop.
LAPTOP_BUDGET_GB = 4
#: BiomedBERT-base (microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract), public config.
BERT_CONFIG = {
    "architectures": ["BertForMaskedLM"],
    "model_type": "bert",
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "pad_token_id": 0,
}


# -- scratch material -------------------------------------------------------------------


def write_random_checkpoint(path: Path) -> int:
    """Write random weights of the real shapes in the upstream layout; return fp32 bytes."""
    import torch

    shapes = json.loads(SHAPES.read_text())
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, shape in shapes.items():
        tensor = torch.randn(shape, generator=gen) * 0.02
        if key.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight")) or (
            key.endswith("LayerNorm.weight")
        ):
            tensor = torch.ones(shape)
        state["module." + key] = tensor
    state["module.logit_scale"] = torch.tensor(4.6052)  # log(100), as trained CLIPs end up
    nbytes = sum(t.numel() * 4 for t in state.values())
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        torch.save({"epoch": 0, "name": "random", "state_dict": state}, tmp)
        os.replace(tmp, path)
    return nbytes


def write_text_encoder(folder: Path) -> None:
    """BiomedBERT-base config and a stand-in vocabulary covering the demo prompts."""
    from mmkd_utils.demo import DEMO_PROMPTS

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(BERT_CONFIG, indent=2))
    words = sorted({w for p in DEMO_PROMPTS for w in re.findall(r"\w+|[^\w\s]", p.lower())})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    vocab += [f"[unused{i}]" for i in range(BERT_CONFIG["vocab_size"] - len(vocab))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True})
    )


def add_model_options(parser) -> None:
    """``--scratch``, ``--checkpoint`` and ``--text-encoder``, for :func:`model_files`."""
    parser.add_argument("--scratch", type=Path, default=None, help="for the random checkpoint")
    parser.add_argument("--checkpoint", type=Path, help="a .pth (default: full-size, random)")
    parser.add_argument("--text-encoder", type=Path, help="its text encoder folder")


def model_files(args, name: str) -> tuple[Path, Path, Path]:
    """(scratch folder, checkpoint, text encoder) for a sibling benchmark called ``name``.

    ``--checkpoint``/``--text-encoder`` if given, else full-size random weights written
    into ``--scratch`` (a new temporary folder by default); ``MMKD_HOME`` defaults to a
    folder there and the hub is offline.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix=f"bench_{name}_"))
    scratch.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MMKD_HOME", str(scratch / f"home_{name}"))
    checkpoint, text = args.checkpoint, args.text_encoder
    if checkpoint is None:
        checkpoint, text = scratch / "MMKD_B16_random.pth", scratch / "biomedbert-config"
        write_random_checkpoint(checkpoint)
        write_text_encoder(text)
    return scratch, checkpoint, text


def demo_sized_images(folder: Path) -> list[Path]:
    """The published demo images if present locally, else random images of their sizes."""
    import mmkd_utils.config as paths

    local = paths.env_path("MMKD_DEMO_IMAGES") or REPO.parent / "shared/reference/demo_images"
    if all((local / name).is_file() for name, _, _ in DEMO_SIZES):
        return [local / name for name, _, _ in DEMO_SIZES]
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    out = []
    for name, (w, h), mode in DEMO_SIZES:
        path = folder / name
        if not path.exists():
            shape = (h, w) if mode == "L" else (h, w, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
        out.append(path)
    return out


# -- child processes (fresh interpreter for each load measurement) ---------------------------


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(mode: str, checkpoint: str, text: str, images: list[str]) -> dict:
    """Run one measurement in this (fresh) process and return its numbers."""
    # Library imports (torch, open_clip, transformers' BERT code) are the same for every
    # mode and are no loading work: they count as the process baseline.
    import open_clip  # noqa: F401
    import torch
    import transformers.models.bert.modeling_bert  # noqa: F401

    from mmkd_utils import load_model
    from mmkd_utils.demo import DEMO_PROMPTS

    if mode == "batch_memory":
        return _batch_memory(checkpoint, text, images)
    baseline = _rss_mb("VmRSS")
    start = time.perf_counter()
    if mode in ("load", "quickstart"):
        clip = load_model(checkpoint, text_encoder=text, device="cpu", precision="fp32")
        load_s = time.perf_counter() - start
        if mode == "load":
            clip.encode_texts(DEMO_PROMPTS[:1])
            clip.encode_images(images[:1])
        else:
            clip.zero_shot(images, DEMO_PROMPTS)
    else:  # the reference pipeline, re-created with PyPI open_clip
        model, preprocess, tokenizer = _reference_load(checkpoint, text)
        load_s = time.perf_counter() - start
        n = 1 if mode == "reference_load" else len(images)
        prompts = DEMO_PROMPTS[:n]
        from PIL import Image

        with torch.no_grad():
            pixels = torch.stack([preprocess(Image.open(p)) for p in images[:n]])
            txt = model.encode_text(tokenizer(prompts))
            img = model.encode_image(pixels)
            txt = txt / txt.norm(dim=-1, keepdim=True)
            img = img / img.norm(dim=-1, keepdim=True)
            (model.logit_scale.exp() * img @ txt.T).softmax(dim=-1)
    wall = time.perf_counter() - start
    return {
        "wall_s": wall,
        "load_only_s": load_s,
        "peak_mb_above_baseline": _rss_mb("VmHWM") - baseline,
    }


def _batch_memory(checkpoint: str, text: str, images: list[str]) -> dict:
    """Peak memory of ``encode_images`` at the default batch size: 1 batch, then 3.

    The model is loaded (from the converted copy) and has embedded one image first; the
    peak resident memory above that point is measured with the kernel's high-water mark
    reset before each call (``/proc/self/clear_refs``), so the load's own peak does not
    count. One unmeasured batch runs first, so that the allocator's own growth to its
    steady state is not taken for growth with the number of images; memory that did grow
    with the number of images would make the second peak about three times the first.
    """
    from mmkd_utils import load_model

    clip = load_model(checkpoint, text_encoder=text, device="cpu", precision="fp32")
    clip.encode_images(images[:1])
    out: dict = {"batch_size": clip.image_batch_size}
    loaded = _rss_mb("VmRSS")

    def demo_images(n: int) -> list[str]:  # the demo images over and over, n in all
        return list(itertools.islice(itertools.cycle(images), n))

    clip.encode_images(demo_images(clip.image_batch_size))  # not measured: allocator settles
    for batches in (1, 3):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current VmRSS
        clip.encode_images(demo_images(batches * clip.image_batch_size))
        out[f"peak_mb_above_loaded_{batches}"] = _rss_mb("VmHWM") - loaded
        out[f"process_peak_mb_{batches}"] = _rss_mb("VmHWM")
    return out


def _reference_load(checkpoint: str, text: str):
    """Unpickle the whole file, build the model with random init, copy the weights in."""
    import open_clip
    import torch
    from open_clip.tokenizer import HFTokenizer

    from mmkd_utils.model.checkpoint import model_config_from_state_dict, to_open_clip_keys

    sd = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    cfg = model_config_from_state_dict(sd, text)
    model = open_clip.CustomTextCLIP(**cfg).eval()
    model.load_state_dict(to_open_clip_keys(sd), strict=True)
    preprocess = open_clip.image_transform(224, is_train=False)
    return model, preprocess, HFTokenizer(text, context_length=256)


def run_child(mode: str, checkpoint: Path, text: Path, images: list[Path], home: Path) -> dict:
    env = dict(os.environ, MMKD_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--checkpoint",
        str(checkpoint),
        "--text",
        str(text),
        "--images",
        *map(str, images),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- in-process measurements ---------------------------------------------------------------


def paired_times(fn_a, fn_b, reps: int) -> tuple[list[float], list[float]]:
    """Times of two functions measured in back-to-back pairs, after one warm-up.

    The pairs run a-b, b-a, a-b, ...: alternating keeps slow drifts of the machine (other
    load, frequency changes) from falling on one side of a ratio, and swapping the order
    keeps either function from always running second.
    """
    fn_a(), fn_b()  # warm-up
    times_a, times_b = [], []
    for rep in range(reps):
        pair = ((fn_a, times_a), (fn_b, times_b))
        for fn, times in pair if rep % 2 == 0 else pair[::-1]:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return times_a, times_b


def paired_ratio(numerators: list[float], denominators: list[float]) -> float:
    """Median of the ratios of each pair measured back to back.

    A slow phase of the machine then raises both times of a pair alike, where a ratio of
    the two medians could take its numerator from a slow phase and its denominator from a
    fast one.

    Example: ``paired_ratio([2.0, 4.0, 2.2], [1.0, 2.1, 1.0])`` is 2.0.
    """
    return statistics.median(a / b for a, b in zip(numerators, denominators, strict=True))


def spread(times: list[float]) -> float:
    """Interquartile range over median: how much the same work varied between repetitions.

    Example: ``spread([1.0, 1.0, 1.1, 1.2, 1.2])`` is about 0.18.
    """
    q1, _, q3 = statistics.quantiles(times, n=4)
    return (q3 - q1) / statistics.median(times)


#: Above this spread of the bare forward pass, the run says that the machine was too busy.
NOISY_MACHINE = 0.05


def bench_text_and_images(clip, images: list[Path], reps: int, image_reps: int) -> dict:
    import torch
    import torch.nn.functional as F
    from PIL import Image

    from mmkd_utils.demo import DEMO_PROMPTS

    padded = clip.tokenizer(DEMO_PROMPTS)

    def full():
        with torch.inference_mode():
            return F.normalize(clip.model.encode_text(padded), dim=-1)

    fast = clip.encode_texts(DEMO_PROMPTS)
    max_diff = float((fast - full()).abs().max())
    fast_times, full_times = paired_times(lambda: clip.encode_texts(DEMO_PROMPTS), full, reps)

    # The image pipeline against the plain serial loop a learner would write, on the same
    # files: open each with PIL, the model's preprocess, encode_image in batches of 32.
    files = [images[i % len(images)] for i in range(IMAGE_BATCHES * 32)]

    def serial_loop():
        out = []
        for start in range(0, len(files), 32):
            pixels = torch.stack(
                [clip.preprocess(Image.open(f)) for f in files[start : start + 32]]
            )
            with torch.inference_mode():
                out.append(F.normalize(clip.model.encode_image(pixels), dim=-1))
        return torch.cat(out)

    pipeline_times, loop_times = paired_times(
        lambda: clip.encode_images(files, batch_size=32), serial_loop, image_reps
    )
    return {
        "text_tokens_longest": int(clip.tokenize(DEMO_PROMPTS).shape[1]),
        "text_s": statistics.median(fast_times),
        "text_256_s": statistics.median(full_times),
        "text_speedup": paired_ratio(full_times, fast_times),
        "text_max_abs_diff": max_diff,
        "images_n": len(files),
        "images_s": statistics.median(pipeline_times),
        "images_loop_s": statistics.median(loop_times),
        "images_throughput_ratio": paired_ratio(loop_times, pipeline_times),
        "machine_noise": spread(loop_times),
        "images_per_s": len(files) / statistics.median(pipeline_times),
        "images_times_s": pipeline_times,
        "images_loop_times_s": loop_times,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", type=Path, default=None)
    parser.add_argument("--reps", type=int, default=11)
    parser.add_argument(
        "--image-reps",
        type=int,
        default=5,
        help="pairs for the image figure (each pair embeds the files twice)",
    )
    parser.add_argument("--load-reps", type=int, default=3)
    parser.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "latest.json"
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--text", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--images", nargs="*", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.checkpoint, args.text, args.images)))
        return 0

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="mmkd_bench_"))
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    checkpoint, text = scratch / "MMKD_B16_random.pth", scratch / "biomedbert-config"
    model_bytes = write_random_checkpoint(checkpoint)
    write_text_encoder(text)
    images = demo_sized_images(scratch / "demo_sized")
    model_mb = model_bytes / 2**20

    results: dict = {"model_fp32_mb": model_mb}
    loads: dict[str, list[dict]] = {"first": [], "cached": [], "reference": []}
    for rep in range(args.load_reps):
        home = scratch / f"home_{rep}"
        shutil.rmtree(home, ignore_errors=True)
        loads["first"].append(run_child("load", checkpoint, text, images, home))
        loads["cached"].append(run_child("load", checkpoint, text, images, home))
        loads["reference"].append(run_child("reference_load", checkpoint, text, images, home))
    for name, runs in loads.items():
        results[f"load_{name}_s"] = statistics.median(r["load_only_s"] for r in runs)
        results[f"load_{name}_with_forward_s"] = statistics.median(r["wall_s"] for r in runs)
        results[f"load_{name}_peak_x"] = (
            statistics.median(r["peak_mb_above_baseline"] for r in runs) / model_mb
        )
    results["load_cached_over_first"] = results["load_cached_s"] / results["load_first_s"]

    home = scratch / "home_0"  # holds a converted copy by now
    quick = [run_child("quickstart", checkpoint, text, images, home) for _ in range(args.load_reps)]
    ref = [
        run_child("reference_quickstart", checkpoint, text, images, home)
        for _ in range(args.load_reps)
    ]
    results["quickstart_s"] = statistics.median(r["wall_s"] for r in quick)
    results["quickstart_reference_s"] = statistics.median(r["wall_s"] for r in ref)
    results["quickstart_ratio"] = results["quickstart_s"] / results["quickstart_reference_s"]
    memory = run_child("batch_memory", checkpoint, text, images, home)
    results["image_batch_size"] = memory["batch_size"]
    for batches in (1, 3):
        results[f"images_batch_peak_mb_{batches}"] = memory[f"peak_mb_above_loaded_{batches}"]
    results["images_process_peak_mb"] = max(memory[f"process_peak_mb_{b}"] for b in (1, 3))

    os.environ["MMKD_HOME"] = str(home)
    from mmkd_utils import load_model

    clip = load_model(checkpoint, text_encoder=text, device="cpu", precision="fp32")
    results.update(bench_text_and_images(clip, images, args.reps, args.image_reps))

    results.update(_sibling_benchmark("bench_embed_folder.py", "folder", scratch / "home_folder"))
    medmnist_args = ["--checkpoint", str(checkpoint), "--text-encoder", str(text)]
    medmnist_args += ["--images", "64", "--reps", str(args.image_reps)]
    results.update(_sibling_benchmark("bench_medmnist.py", "medmnist", home, *medmnist_args))
    scale_args = ["--checkpoint", str(checkpoint), "--text-encoder", str(text)]
    results.update(_sibling_benchmark("bench_scale.py", "scale", home, *scale_args))
    results["total_s"] = time.perf_counter() - started
    results["machine"] = machine()

    targets = check_targets(results)
    print(table(results, targets))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"results": results, "targets": targets}, indent=2))
    print(f"\nJSON: {args.json}")
    return 0 if all(ok for _, _, ok in targets) else 1


def _sibling_benchmark(script: str, prefix: str, home: Path, *args: str) -> dict:
    """Run ``benchmarks/<script> --json`` in a fresh process; its JSON line, keys prefixed."""
    bench = REPO / "benchmarks" / script
    if not bench.is_file():
        return {}
    env = dict(os.environ, MMKD_HOME=str(home), HF_HUB_OFFLINE="1")
    out = subprocess.run(
        [sys.executable, str(bench), "--json", *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    try:
        data = json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {f"{prefix}_error": out.stderr[-500:]}
    return {f"{prefix}_{k}": v for k, v in data.items()}


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    for line in (
        Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    ):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return (
        f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def check_targets(r: dict) -> list[tuple[str, str, bool]]:
    out = [
        (
            "text ≥ 10× faster than 256-padding",
            f"{r['text_speedup']:.1f}×",
            r["text_speedup"] >= 10,
        ),
        (
            "text embeddings equal to ≤ 1e-5",
            f"{r['text_max_abs_diff']:.1e}",
            r["text_max_abs_diff"] <= 1e-5,
        ),
        (
            "images ≥ 1.0× the serial PIL loop's throughput",
            f"{r['images_throughput_ratio']:.2f}×",
            r["images_throughput_ratio"] >= 1.0,
        ),
        (
            "image memory bounded: peak over 3 batches ≤ 1.5× that of 1",
            f"{r['images_batch_peak_mb_3'] / r['images_batch_peak_mb_1']:.2f}×",
            r["images_batch_peak_mb_3"] <= 1.5 * r["images_batch_peak_mb_1"],
        ),
        (
            f"process peak at the default batch ≤ {LAPTOP_BUDGET_GB} GB (16 GB laptop)",
            f"{r['images_process_peak_mb'] / 1024:.2f} GB",
            r["images_process_peak_mb"] <= LAPTOP_BUDGET_GB * 1024,
        ),
        (
            "cached load ≤ 0.3× first load",
            f"{r['load_cached_over_first']:.2f}×",
            r["load_cached_over_first"] <= 0.3,
        ),
        (
            "first load peak ≤ 1.3× model bytes",
            f"{r['load_first_peak_x']:.2f}×",
            r["load_first_peak_x"] <= 1.3,
        ),
        (
            "cached load peak ≤ 1.2× model bytes",
            f"{r['load_cached_peak_x']:.2f}×",
            r["load_cached_peak_x"] <= 1.2,
        ),
        (
            "quickstart (cached) ≤ 0.5× reference pipeline",
            f"{r['quickstart_ratio']:.2f}×",
            r["quickstart_ratio"] <= 0.5,
        ),
    ]
    if "folder_ratio" in r:
        out.append(
            (
                "warm folder embedding ≥ 20× faster than cold",
                f"{r['folder_ratio']:.0f}×",
                r["folder_ratio"] >= 20,
            )
        )
    if "medmnist_ratio" in r:
        out.append(
            (
                "MedMNIST arrays (224 px) ≥ 1.0× the plain loop's throughput",
                f"{r['medmnist_ratio']:.2f}×",
                r["medmnist_ratio"] >= 1.0,
            )
        )
    return out


def table(r: dict, targets: list[tuple[str, str, bool]]) -> str:
    rows = [
        (
            "text: 9 demo prompts, padded to longest",
            f"{r['text_s'] * 1e3:.0f} ms",
            f"256-padded: {r['text_256_s'] * 1e3:.0f} ms",
        ),
        (
            f"images: {r['images_n']} demo-sized files (pipeline)",
            f"{r['images_s']:.2f} s",
            f"serial PIL loop: {r['images_loop_s']:.2f} s",
        ),
        (
            f"images: batch of {r['image_batch_size']}, 1 → 3 batches",
            f"{r['images_batch_peak_mb_1']:.0f} → {r['images_batch_peak_mb_3']:.0f} MB",
            "peak above the loaded model; process peak "
            f"{r['images_process_peak_mb'] / 1024:.2f} GB",
        ),
        (
            "load: first, from .pth",
            f"{r['load_first_s']:.2f} s",
            f"with first forward {r['load_first_with_forward_s']:.2f} s, "
            f"peak {r['load_first_peak_x']:.2f}× model",
        ),
        (
            "load: later, from converted cache",
            f"{r['load_cached_s']:.2f} s",
            f"with first forward {r['load_cached_with_forward_s']:.2f} s, "
            f"peak {r['load_cached_peak_x']:.2f}× model",
        ),
        (
            "load: reference (unpickle, init, copy)",
            f"{r['load_reference_s']:.2f} s",
            f"with first forward {r['load_reference_with_forward_s']:.2f} s, "
            f"peak {r['load_reference_peak_x']:.2f}× model",
        ),
        (
            "quickstart end to end, cached",
            f"{r['quickstart_s']:.1f} s",
            f"reference pipeline: {r['quickstart_reference_s']:.1f} s",
        ),
    ]
    if "folder_cold_s" in r:
        rows.append(
            (
                f"embed_folder: {r.get('folder_images', '?')} images, cold → warm",
                f"{r['folder_cold_s']:.2f} s → {r['folder_warm_s']:.3f} s",
                f"{r['folder_ratio']:.0f}×",
            )
        )
    if "medmnist_per_s" in r:
        rows.append(
            (
                f"MedMNIST: {r['medmnist_images']} arrays, 224 px (embed_arrays)",
                f"{r['medmnist_per_s']:.2f} img/s",
                f"plain loop: {r['medmnist_loop_per_s']:.2f} img/s",
            )
        )
    if "scale_ray_1_per_s" in r:
        rows.append(
            (
                f"Ray Data: {r['scale_images']} images, 1 | 2 actors",
                f"{r['scale_ray_1_per_s']:.2f} | {r['scale_ray_2_per_s']:.2f} img/s",
                f"after the first shard {r['scale_ray_1_steady_per_s']:.2f} | "
                f"{r['scale_ray_2_steady_per_s']:.2f}; embed_folder "
                f"{r['scale_embed_folder_per_s']:.2f} img/s",
            )
        )
    width = max(len(a) for a, _, _ in rows)
    lines = [f"Machine: {r['machine']}", f"Model: {r['model_fp32_mb']:.0f} MB fp32", ""]
    lines += [f"{a:<{width}}  {b:>14}  {c}" for a, b, c in rows]
    lines += [f"{k}: {v}" for k, v in r.items() if k.endswith("_error")]
    lines += ["", "Targets:"]
    lines += [f"  [{'PASS' if ok else 'FAIL'}] {name}: {value}" for name, value, ok in targets]
    noise = r["machine_noise"]
    lines.append(
        f"\nMachine noise: the serial loop varied by {noise:.0%} (interquartile range over median)."
    )
    if noise > NOISY_MACHINE:
        lines.append(
            f"  Above {NOISY_MACHINE:.0%}: the machine was busy, and ratios within a few "
            "per cent of their target (images, quickstart) are not reliable in this run. "
            "Run again when nothing else runs on the machine."
        )
    lines.append(f"\nTotal time: {r['total_s'] / 60:.1f} min")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
