"""The ``mmkd-clip`` command line.

Each subcommand is a function ``(args) -> int`` registered in :func:`build_parser`;
errors of the package (:class:`~mmkd_utils.errors.MMKDError`) are printed as
``error: <message>`` on stderr with exit code 1, without a traceback.

Example:
    $ mmkd-clip download --demo-images
    checkpoint: ~/.cache/mmkd-clip/MMKD_B16.pth
    demo images: ~/.cache/mmkd-clip/demo_images (9 files)
    $ mmkd-clip doctor --offline
    OK      python: 3.11.7 (/usr/bin/python3)
    ...
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mmkd_utils.errors import MMKDError


def _cmd_download(args: argparse.Namespace) -> int:
    """Download the checkpoint (and with ``--demo-images`` the demo images); print paths.

    Example:
        >>> _cmd_download(build_parser().parse_args(["download"]))  # doctest: +SKIP
        checkpoint: ~/.cache/mmkd-clip/MMKD_B16.pth
        0
    """
    from mmkd_utils.download import download_checkpoint

    path = download_checkpoint(args.to, url=args.url, force=args.force)
    print(f"checkpoint: {path}")
    if args.demo_images:
        from mmkd_utils.demo import demo_images

        images = demo_images()
        folders = sorted({str(p.parent) for p in images})
        print(f"demo images: {', '.join(folders)} ({len(images)} files)")
    return 0


def _cmd_doctor(args: argparse.Namespace) -> int:
    """Print the doctor's report; exit code 0 without ERROR lines, 1 with.

    Example:
        >>> _cmd_doctor(build_parser().parse_args(["doctor", "--offline"]))  # doctest: +SKIP
        OK      python: 3.11.7 (/usr/bin/python3)
        ...
        24 checks: 20 OK, 4 WARNING, 0 ERROR.
        0
    """
    from mmkd_utils.doctor import doctor

    report = doctor(network=not args.offline, timeout=args.timeout, verify_weights=args.verify)
    print(report)
    print()
    print(report.summary())
    return 0 if report.ok else 1


def _seconds(text: str) -> float:
    """argparse type: a positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"the timeout must be positive, not {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """Build the ``mmkd-clip`` argument parser with one sub-parser per subcommand.

    Example:
        >>> build_parser().parse_args(["download", "--force"]).force
        True
    """
    parser = argparse.ArgumentParser(
        prog="mmkd-clip",
        description="Helpers for the MMKD-CLIP tutorials.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    download = commands.add_parser(
        "download",
        help="download the released weights (and the demo images)",
        description="Download the released MMKD_B16.pth into the cache (MMKD_HOME) "
        "and print where it is.",
    )
    download.add_argument(
        "--to",
        type=Path,
        default=None,
        metavar="PATH",
        help="where to save the checkpoint (default: <MMKD_HOME>/MMKD_B16.pth)",
    )
    download.add_argument(
        "--url", default=None, help="download from this URL instead of the Google Drive link"
    )
    download.add_argument(
        "--force", action="store_true", help="download again even if the file exists"
    )
    download.add_argument(
        "--demo-images", action="store_true", help="also download the nine demo images"
    )
    download.set_defaults(func=_cmd_download)

    doctor = commands.add_parser(
        "doctor",
        help="check Python, torch, the GPU, packages, cache, weights and network",
        description="Check what MMKD-CLIP needs and print one line per check (OK, WARNING "
        "or ERROR, with the fix for each problem). Exit code 1 if any line is an ERROR.",
    )
    doctor.add_argument(
        "--offline", action="store_true", help="contact no host (skip the network checks)"
    )
    doctor.add_argument(
        "--verify",
        action="store_true",
        help="also read the checkpoint (784 MB) and the converted copy's header",
    )
    doctor.add_argument(
        "--timeout",
        type=_seconds,
        default=3.0,
        metavar="S",
        help="seconds to wait for each host (default: 3)",
    )
    doctor.set_defaults(func=_cmd_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``mmkd-clip`` command line and return its exit code.

    Example:
        >>> main(["download", "--to", "weights/MMKD_B16.pth"])  # doctest: +SKIP
        checkpoint: weights/MMKD_B16.pth
        0
    """
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except MMKDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("error: interrupted (a download resumes on the next run)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
