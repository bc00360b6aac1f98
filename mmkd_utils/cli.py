"""The ``mmkd-clip`` command; an MMKDError prints ``error: <message>`` (no traceback), exit 1."""

import argparse
import sys
from pathlib import Path

from mmkd_utils.demo import demo_images
from mmkd_utils.doctor import doctor
from mmkd_utils.download import download_checkpoint
from mmkd_utils.errors import MMKDError


def build_parser() -> argparse.ArgumentParser:
    """The ``mmkd-clip`` argument parser, one sub-command per task.

    Example:
        >>> build_parser().parse_args(["doctor", "--offline"]).offline
        True
    """
    parser = argparse.ArgumentParser(prog="mmkd-clip", description="MMKD-CLIP tutorial helpers.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    get = commands.add_parser("download", help="download the released weights into the cache")
    get.add_argument("--to", type=Path, metavar="PATH", help="where to save the weights")
    get.add_argument("--url", help="download from this URL instead of the Google Drive link")
    get.add_argument("--force", action="store_true", help="download again even if present")
    get.add_argument("--demo-images", action="store_true", help="also fetch the 9 demo images")
    check = commands.add_parser("doctor", help="check packages, GPU, cache, weights, network")
    check.add_argument("--offline", action="store_true", help="ask no host")
    check.add_argument("--verify", action="store_true", help="also read the weights (784 MB)")
    check.add_argument("--timeout", type=float, default=3.0, help="seconds per host (default 3)")
    return parser


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
    try:
        if args.command == "doctor":
            if not args.timeout > 0:
                parser.error(f"--timeout must be a positive number of seconds, not {args.timeout}")
            report = doctor(
                network=not args.offline, timeout=args.timeout, verify_weights=args.verify
            )
            print(report)
            return 0 if report.ok else 1
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
