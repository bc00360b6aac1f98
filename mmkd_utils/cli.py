"""The ``mmkd-clip`` command; an MMKDError prints ``error: <message>`` (no traceback), exit 1."""

import argparse
import os
import sys
from pathlib import Path
from unittest import mock

from huggingface_hub import constants as hub
from huggingface_hub import hf_hub_download

import mmkd_utils.config as config
from mmkd_utils.demo import DEMO_SHA256, demo_image_dir, demo_images
from mmkd_utils.doctor import doctor
from mmkd_utils.download import download_checkpoint, sha256_file
from mmkd_utils.errors import DownloadError, MMKDError
from mmkd_utils.model.registry import BIOMEDCLIP_ID, MODELS, load_model
from mmkd_utils.tasks.scale import build_index, embed_dataset, search_index

_DIRS = (config.TEXT_ENCODER_DIR, config.BIOMEDCLIP_DIR)
_BERT_FILES = ("config.json", "vocab.txt", "tokenizer_config.json")  # config: tokenizer class
#: The kit's hub files (repo, folder, file); open_clip reads BiomedBERT's tokenizer in BiomedCLIP's.
_HUB_FILES = [(config.DEFAULT_TEXT_ENCODER, d, f) for d in _DIRS for f in _BERT_FILES] + [
    (BIOMEDCLIP_ID, config.BIOMEDCLIP_DIR, "open_clip_config.json"),
    (BIOMEDCLIP_ID, config.BIOMEDCLIP_DIR, "open_clip_pytorch_model.bin"),
]


def build_parser() -> argparse.ArgumentParser:
    """The ``mmkd-clip`` argument parser, one sub-command per task.

    Example:
        >>> build_parser().parse_args(["doctor", "--offline"]).network
        False
    """
    parser = argparse.ArgumentParser(prog="mmkd-clip", description="MMKD-CLIP tutorial helpers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    get = commands.add_parser("download", help="download the released weights into the cache")
    get.add_argument("--to", type=Path, metavar="PATH", help="where to save the weights")
    get.add_argument("--url", help="download from this URL instead of the Google Drive link")
    get.add_argument("--force", action="store_true", help="download again even if present")
    get.add_argument("--demo-images", action="store_true", help="also fetch the 9 demo images")
    get.add_argument("--home", type=Path, metavar="DIR", help="the cache folder (MMKD_HOME)")
    get.add_argument("--all", action="store_true", help="a classroom kit: all the notebooks use")
    get.add_argument("--check", action="store_true", help="verify a kit's files by SHA-256")
    check = commands.add_parser("doctor", help="check packages, GPU, cache, weights, network")
    check.add_argument("--offline", action="store_false", dest="network", help="ask no host")
    check.add_argument("--verify", action="store_true", help="also read the weights (784 MB)")
    check.add_argument("--timeout", type=float, default=3.0, help="seconds per host (default 3)")
    _add_scale_commands(commands)
    return parser


def _add_scale_commands(commands: argparse._SubParsersAction) -> None:
    """``embed`` and ``search``: a large collection on Ray, into shards and a faiss index."""
    embed = commands.add_parser("embed", help="embed images on Ray into Parquet shards (scale)")
    embed.add_argument("source", help="a folder, or a .parquet/.csv file with a path column")
    embed.add_argument("--out", type=Path, required=True, metavar="DIR", help="the shards' folder")
    embed.add_argument("--ray-address", help="a running cluster (default: RAY_ADDRESS or local)")
    embed.add_argument("--num-gpus", type=float, default=0, help="GPUs per actor (default 0)")
    embed.add_argument("--concurrency", type=int, help="actors (default: 1 to one per CPU/GPU)")
    embed.add_argument("--batch-size", type=int, default=64, help="images per batch and shard")
    embed.add_argument("--no-resume", action="store_true", help="delete the shards first")
    find = commands.add_parser("search", help="search the index of `mmkd-clip embed` (scale)")
    find.add_argument("dir", type=Path, help="the folder of `mmkd-clip embed --out`")
    find.add_argument("query", help="a prompt (or, with --image, an image file)")
    find.add_argument("-k", type=int, default=10, help="results (default 10)")
    find.add_argument("--image", action="store_true", help="the query is an image file")
    for sub in (embed, find):
        sub.add_argument("--model", default="mmkd-clip", help="a registered model name")
        sub.add_argument("--checkpoint", help="its weights (default: MMKD_CHECKPOINT or released)")


def _run_scale(args: argparse.Namespace) -> int:
    """Run ``embed`` (then index the shards) or ``search``; print what was done or found."""
    models = {"model": args.model, "checkpoint": args.checkpoint}
    if args.command == "search":
        query = Path(args.query) if args.image else args.query
        print(search_index(args.dir, query, args.k, **models).to_string(index=False))
        return 0
    address = {"RAY_ADDRESS": args.ray_address} if args.ray_address else {}
    with mock.patch.dict(os.environ, address):
        done = embed_dataset(
            args.source,
            args.out,
            batch_size=args.batch_size,
            concurrency=args.concurrency,
            num_gpus=args.num_gpus,
            resume=not args.no_resume,
            **models,
        )
    print(f"{done.embedded} embedded ({done.failed} unreadable), {done.done_before} there before")
    print("index: {kind}, {vectors} vectors".format(**build_index(args.out)))
    return 0


def _download_kit() -> int:
    """Everything the notebooks use into the cache, converted copies made, then the manifest."""
    home = config.cache_dir()
    print(f"checkpoint: {download_checkpoint()}")  # first: Drive's quota is the likely failure
    for repo, sub, name in _HUB_FILES:
        try:
            hf_hub_download(repo, name, local_dir=home / sub, endpoint=hub.ENDPOINT)
        except Exception as err:
            raise DownloadError(
                f"Could not download {name} of {repo} into {home / sub} ({err}): check the "
                "network (HF_ENDPOINT, HF_HUB_OFFLINE), then run again."
            ) from None
    print(f"demo images: {len(demo_images())} files in {demo_image_dir()}")
    for name in MODELS:  # downloads UniMed-CLIP; converts what needs converting
        print(f"{name}: loads from {load_model(name, device='cpu').source}")
    # Last, the manifest, as sha256sum writes it (hidden, lock, partial, set-aside files out).
    skip = (".lock", ".part", ".corrupt", config.MANIFEST_NAME)
    files = sorted(p.relative_to(home).as_posix() for p in home.rglob("*") if p.is_file())
    kit = [f for f in files if not f.endswith(skip) and "/." not in f"/{f}"]
    text = "".join(f"{sha256_file(home / f)}  {f}\n" for f in kit)
    part = home / f"{config.MANIFEST_NAME}.part"  # complete or absent, never half-written
    part.write_text(text, encoding="utf-8")
    os.replace(part, home / config.MANIFEST_NAME)
    print(f"kit: {home}, listed in {config.MANIFEST_NAME}; check it with --check")
    return 0


def _check_kit(home: Path) -> int:
    """Each file of the manifest (the demo images: of the publication) missing or changed."""
    manifest = home / config.MANIFEST_NAME
    lines = manifest.read_text("utf-8").splitlines() if manifest.is_file() else []
    listed = {name: sha for sha, _, name in (line.partition("  ") for line in lines)}
    published = {f"{demo_image_dir().name}/{n}": sha for n, sha in DEMO_SHA256.items()}
    problems = [] if manifest.is_file() else [f"{config.MANIFEST_NAME}: missing"]
    for name, sha in {**listed, **published}.items():
        got = sha256_file(home / name) if (home / name).is_file() else None
        why = "missing" if got is None else f"corrupt (SHA-256 {got[:12]}..., not {sha[:12]}...)"
        problems += [f"{name}: {why}"] if got != sha else []
    if problems:
        fix = f"Delete those files, run `mmkd-clip download --all --home {home}`, check again."
        print(f"error: kit {home} is incomplete:", *problems, fix, sep="\n  ", file=sys.stderr)
        return 1
    print(f"kit: {home}: every file matches {config.MANIFEST_NAME} and the published SHA-256")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run ``mmkd-clip`` with the arguments ``argv``; return the exit code.

    Example:
        >>> _ = (tmp / "MMKD_B16.pth").write_bytes(b"weights")
        >>> main(["download", "--to", str(tmp / "MMKD_B16.pth")])  # doctest: +ELLIPSIS
        checkpoint: .../MMKD_B16.pth
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "doctor" and not args.timeout > 0:
        parser.error(f"--timeout must be a positive number of seconds, not {args.timeout}")
    kit = args.command == "download" and (args.all or args.check)
    if kit and (args.to or args.url or args.force or args.demo_images or args.all == args.check):
        parser.error("use --all or --check alone (with --home), not --to, --url, --force, ...")
    # --home is MMKD_HOME; a kit holds the defaults: the other MMKD_* variables do not count.
    env = dict.fromkeys(set(config.ENV_VARS) - {"MMKD_HOME"}, "") if kit else {}
    env |= {"MMKD_HOME": str(args.home)} if getattr(args, "home", None) else {}
    try:
        if args.command in ("embed", "search"):
            return _run_scale(args)
        if args.command == "doctor":
            report = doctor(network=args.network, timeout=args.timeout, verify_weights=args.verify)
            print(report)
            return 0 if report.ok else 1
        with mock.patch.dict(os.environ, env):
            if args.check or args.all:
                return _check_kit(config.cache_dir()) if args.check else _download_kit()
            print(f"checkpoint: {download_checkpoint(args.to, url=args.url, force=args.force)}")
            if args.demo_images:
                images = demo_images()
                print(f"demo images: {images[0].parent} ({len(images)} files)")
            return 0
    except MMKDError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted (a download resumes on the next run)", file=sys.stderr)
        return 130
